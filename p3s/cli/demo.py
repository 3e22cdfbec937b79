"""`p3s-demo`: Run the server, local pilots and a sample workflow."""
from p3s.cli.common import not_yet


def main() -> None:
    not_yet("p3s-demo", "Run the server, local pilots and a sample workflow")
