"""One kept-alive HTTP/1.1 connection, as lean as the pilot's per-job budget needs.

``http.client`` parses every reply's headers through ``email.parser``, which costs more CPU than
the rest of a pilot's request together; here the status line and headers are split by hand (the
few the client needs: Content-Length, Transfer-Encoding, Connection). Bodies come with a length
or chunked; a reply without either is read to the end of the connection. http and https (the
server's certificate verified by the given context).

Standard library only: this runs on bare worker nodes.
"""
from __future__ import annotations

import socket
import ssl
from typing import Any

MAX_LINE = 65536         # a status or header line longer than this is refused
MAX_HEADERS = 100


class ProtocolError(Exception):
    """The peer did not speak HTTP/1.x as expected."""


class Closed(ConnectionError):
    """The connection was closed before a reply began (e.g. an idle kept-alive one the server dropped)."""


class Connection:
    """``Connection(host, port, timeout, context).request(method, target, body, headers)``."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.timeout, self.context = host, port, timeout, context
        self.sock: socket.socket | None = None
        self._reader: Any = None
        default = 443 if context is not None else 80
        self._host_header = host if port == default else f"{host}:{port}"
        if ":" in host and not host.startswith("["):
            self._host_header = f"[{host}]" if port == default else f"[{host}]:{port}"

    def _open(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._reader = sock.makefile("rb")

    def settimeout(self, timeout: float) -> None:
        self.timeout = timeout
        if self.sock is not None:
            self.sock.settimeout(timeout)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        """Send one request and read its reply: (status, body). Raises OSError, Closed or ProtocolError."""
        if self.sock is None:
            self._open()
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}", "Accept-Encoding: identity"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.sock.sendall(head + body if body else head)
        return self._reply(method)

    def _line(self) -> bytes:
        line = self._reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise ProtocolError("reply line too long")
        return line

    def _reply(self, method: str) -> tuple[int, bytes]:
        while True:
            status_line = self._line()
            if not status_line:
                raise Closed("the server closed the connection")
            parts = status_line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
            status = int(parts[1])
            length: int | None = None
            chunked = close = False
            for _ in range(MAX_HEADERS + 1):
                line = self._line()
                if line in (b"\r\n", b"\n"):
                    break
                if not line:
                    raise ProtocolError("the reply's headers ended early")
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    if not value.strip().isdigit():
                        raise ProtocolError(f"bad Content-Length: {value.strip()[:40]!r}")
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    close = b"close" in value.lower()
            else:
                raise ProtocolError("too many reply headers")
            if 100 <= status < 200:
                continue                     # an interim reply: the real one follows
            break
        if method == "HEAD" or status in (204, 304):
            data = b""
        elif chunked:
            data = self._chunks()
        elif length is not None:
            data = self._reader.read(length)
            if len(data) < length:
                raise ProtocolError("the reply ended before its Content-Length")
        else:
            data, close = self._reader.read(), True
        if close:
            self.close()
        return status, data

    def _chunks(self) -> bytes:
        parts = []
        while True:
            size_line = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_line[:40]!r}") from None
            if size == 0:
                while self._line() not in (b"\r\n", b"\n", b""):   # trailers
                    pass
                return b"".join(parts)
            chunk = self._reader.read(size)
            if len(chunk) < size:
                raise ProtocolError("the reply ended inside a chunk")
            parts.append(chunk)
            self._line()
