"""`p3s-job`: Create, list, adjust and delete jobs."""
from p3s.cli.common import not_yet


def main() -> None:
    not_yet("p3s-job", "Create, list, adjust and delete jobs")
