"""An HTTP proxy for tests that forwards every request and drops chosen replies.

``DropProxy(upstream_url).drop(rule, times)``: for the next ``times`` exchanges where
``rule(method, path, request_body, response_body)`` is true, the request reaches the server (and
takes effect) but the client's connection is then closed without an answer, as when a network
drops a reply or a server dies right after its write.
"""
from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse
from typing import Callable

Rule = Callable[[str, str, bytes, bytes], bool]


class DropProxy:
    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.rules: list[list] = []
        self.dropped: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                conn.close()
                if proxy._should_drop(self.command, self.path, body, payload):
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except OSError:
                    self.close_connection = True     # the client gave up (e.g. its own timeout)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def drop(self, rule: Rule, times: int = 1) -> None:
        with self.lock:
            self.rules.append([rule, times])

    def _should_drop(self, method: str, path: str, body: bytes, payload: bytes) -> bool:
        with self.lock:
            for entry in self.rules:
                if entry[1] > 0 and entry[0](method, path, body, payload):
                    entry[1] -= 1
                    self.dropped.append((method, path))
                    return True
        return False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
