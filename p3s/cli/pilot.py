"""`p3s-pilot`: Run a pilot on a worker node; list and kill pilots."""
from p3s.cli.common import not_yet


def main() -> None:
    not_yet("p3s-pilot", "Run a pilot on a worker node; list and kill pilots")
