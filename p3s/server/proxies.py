"""The client's address: the connection's peer, or what a configured reverse proxy says it is.

``X-Real-Ip`` and ``X-Forwarded-For`` are believed only from the addresses in
``trusted_proxies``; from anyone else they are ignored (anyone can send them).
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(entries: Iterable[str]) -> list[Network]:
    """Parse ``trusted_proxies``; ValueError names a bad entry."""
    parsed = []
    for entry in entries:
        try:
            parsed.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise ValueError(f"trusted_proxies: {entry!r} is not an address or network") from None
    return parsed


def _trusted(address: str, trusted: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_address(peer: str, headers: dict | object, trusted: list[Network]) -> str:
    """The address to believe for a request from ``peer`` with these headers."""
    if not trusted or not _trusted(peer, trusted):
        return peer
    real = headers.get("X-Real-Ip")
    if real and _valid(real.strip()):
        return real.strip()
    forwarded = headers.get("X-Forwarded-For")
    if forwarded:
        # The rightmost address not of a trusted proxy is the one the nearest proxy saw.
        for candidate in reversed([c.strip() for c in forwarded.split(",")]):
            if not _valid(candidate):
                break
            if not _trusted(candidate, trusted):
                return candidate
    return peer


def _valid(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
        return True
    except ValueError:
        return False
