"""`p3s-dataset`: Register and look up data files and types."""
from p3s.cli.common import not_yet


def main() -> None:
    not_yet("p3s-dataset", "Register and look up data files and types")
