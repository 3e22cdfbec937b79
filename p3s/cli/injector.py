"""`p3s-injector`: Watch directories for new data and start workflows."""
from p3s.cli.common import not_yet


def main() -> None:
    not_yet("p3s-injector", "Watch directories for new data and start workflows")
