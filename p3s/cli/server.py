"""`p3s-server`: run the p3s server (API and, later, the web monitor)."""
from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import sys

from p3s import __version__
from p3s.cli.common import fail, setup_logging
from p3s.config import ConfigError, add_config_arguments, config_from_args
from p3s.store import StoreError

SERVER_SETTINGS = ("host", "port", "data_dir", "db", "no_auth", "i_understand_no_auth_is_open", "certfile", "keyfile",
                   "log_level", "log_file")
log = logging.getLogger("p3s.server")


def build_parser() -> argparse.ArgumentParser:
    """The ``p3s-server`` parser."""
    parser = argparse.ArgumentParser(
        prog="p3s-server", description="Serve the p3s API: jobs, pilots, data, sites, events.")
    add_config_arguments(parser, SERVER_SETTINGS)
    parser.add_argument("--version", action="version", version=f"p3s {__version__}")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


async def serve(config) -> None:
    from p3s.server.app import P3SServer
    from p3s.server.exposure import ExposureError

    try:
        server = P3SServer(config)
    except ExposureError as exc:
        fail(str(exc))
    try:
        server.open()
    except StoreError as exc:
        fail(str(exc))
    try:
        port = server.listen()
    except OSError as exc:
        await server.stop()
        fail(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
             + (" (another server, or another program, has that port; pick another with --port)"
                if exc.errno == errno.EADDRINUSE else ""))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    url = f"{server.scheme}://{config.host}:{port}"
    if server.open_warning:
        log.warning("%s", server.open_warning)
    auth_note = "no authentication" if server.authenticator.disabled else (
        f"admin token in {server.authenticator.generated_file}" if server.authenticator.generated_file
        else f"{len(server.authenticator.tokens)} configured token(s)")
    log.info("p3s %s on %s; %s", __version__, server.db.description, auth_note)
    print(f"p3s-server listening on {url}", flush=True)
    await stop.wait()
    log.info("stopping")
    await server.stop()
    log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        config = config_from_args(args, SERVER_SETTINGS)
    except ConfigError as exc:
        fail(str(exc))
    os.umask(0o077)          # the database, archives and logs the server writes are its user's alone
    setup_logging(config)
    asyncio.run(serve(config))
    sys.exit(0)


if __name__ == "__main__":
    main()
