"""Short flags a command no longer has: the old spelling exits 2 and names the new one.

Every p3s command gives a short flag one meaning (the README's "Short flags" table). Where a letter
lost a meaning in some command, its old use there is refused with a message naming what to write
instead, rather than taken for something else or reported as merely unknown. Part of the pilot
package (its own parser retires flags too): standard library only.
"""
from __future__ import annotations

import argparse
from typing import Any


class Retired(argparse.Action):
    """A flag kept only to say what to write instead; hidden from ``--help``, never stored."""

    def __init__(self, option_strings: list[str], dest: str, instead: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs="?", default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS)
        self.instead = instead

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error(f"{option_string} {self.instead}")


def retire(parser: argparse.ArgumentParser, flag: str, instead: str) -> None:
    """Make ``flag`` exit 2 with "FLAG ``instead``", e.g. ``retire(p, "-w", "is no longer … write --workdir")``."""
    parser.add_argument(flag, action=Retired, instead=instead)
