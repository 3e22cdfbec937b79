"""How exposed the server is: TLS from the configuration, and whether running without
authentication is allowed on the address it listens on."""
from __future__ import annotations

import ipaddress
import socket
import ssl

from p3s.config import Config


class ExposureError(Exception):
    """The configuration would expose the server in a way it refuses; the message says why."""


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address ('' and 0.0.0.0 are not)."""
    if host in ("", "0.0.0.0", "::"):
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_no_auth(config: Config) -> str | None:
    """None with authentication on; else the warning to log and show in the monitor's header.
    Refused (ExposureError) on an address other than loopback unless explicitly accepted."""
    if not config.no_auth:
        return None
    if is_loopback(config.host):
        return "Authentication is off: every local user of this machine can do anything here."
    if not config.i_understand_no_auth_is_open:
        raise ExposureError(
            f"--no-auth on {config.host!r} (not a loopback address) would let anyone who reaches port "
            f"{config.port} run any command on every worker node. Listen on 127.0.0.1, or configure tokens; "
            "to do it anyway add --i-understand-no-auth-is-open")
    return (f"AUTHENTICATION IS OFF on {config.host}: anyone who reaches this server can run any command "
            "on every worker node.")


def ssl_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context from certfile/keyfile, or None for plain http."""
    if not config.certfile and not config.keyfile:
        return None
    if not (config.certfile and config.keyfile):
        raise ExposureError("TLS needs both --certfile and --keyfile")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.certfile, config.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ExposureError(f"cannot load the TLS certificate {config.certfile} and key {config.keyfile}: "
                            f"{getattr(exc, 'strerror', None) or exc}") from None
    return context
