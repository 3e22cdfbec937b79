"""`p3s-workflow`: Manage DAG templates and workflows."""
from p3s.cli.common import not_yet


def main() -> None:
    not_yet("p3s-workflow", "Manage DAG templates and workflows")
