"""What every command shares: logging set-up and turning configuration errors into exit code 2."""
from __future__ import annotations

import logging
import sys
from typing import NoReturn

from p3s.config import Config


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"{sys.argv[0].rsplit('/', 1)[-1]}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def setup_logging(config: Config) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.log_file:
        handlers.append(logging.FileHandler(config.log_file))
    logging.basicConfig(level=config.log_level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def not_yet(command: str, what: str) -> None:
    """Entry point of a command whose issue has not landed yet: ``--help`` says so."""
    import argparse

    parser = argparse.ArgumentParser(prog=command, description=f"{what} (not yet available in this version).")
    parser.parse_args()
    fail(f"{command} is not yet available in this version: {what}", 3)
