"""`p3s-fleet`: Start, count and stop pilots on many nodes."""
from p3s.cli.common import not_yet


def main() -> None:
    not_yet("p3s-fleet", "Start, count and stop pilots on many nodes")
