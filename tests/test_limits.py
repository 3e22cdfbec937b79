"""Bounded resources: bodies capped before buffering on every route, silent connections closed,
and a server out of file descriptors that still serves."""
from __future__ import annotations

import shutil
import socket
import urllib.parse

import pytest


def raw_request(server, head: str, timeout: float = 20) -> bytes:
    """Send ``head`` (no body follows) and return what the server answers before closing."""
    parts = urllib.parse.urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as conn:
        conn.sendall(head.encode())
        return conn.recv(65536)


@pytest.mark.parametrize("path", ["/login", "/api/v1/jobs", "/no/such/page"])
def test_huge_body_is_refused_before_it_is_sent(server, path):
    answer = raw_request(server, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 200000000\r\n"
                                 "Content-Type: application/x-www-form-urlencoded\r\n\r\n")
    assert answer.split(b"\r\n", 1)[0] in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 413 Request Entity Too Large")


def test_a_silent_connection_is_closed(make_server):
    server = make_server(idle_timeout=2)
    parts = urllib.parse.urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as conn:
        assert conn.recv(1) == b""                # closed by the server, not by our timeout


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_out_of_descriptors_the_server_still_serves(make_server):
    server = make_server()
    server.prefix = ["prlimit", "--nofile=1024:1024", "--"]
    server.restart()
    parts = urllib.parse.urlsplit(server.url)
    silent = []
    try:
        for _ in range(1000):
            silent.append(socket.create_connection((parts.hostname, parts.port), timeout=20))
        assert server.call("GET", "/status", timeout=30).status == 200
        assert server.call("GET", "/jobs", timeout=30).status == 200
    finally:
        for conn in silent:
            conn.close()
    log = server.log_path.read_text()
    assert "open-files limit 1024" in log
    assert "Traceback" not in log and log.count("out of file descriptors") <= 3
