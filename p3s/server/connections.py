"""The server's connections, bounded: body size, header and idle timeouts, and file descriptors.

- Bodies: Tornado refuses any body over ``SMALL_BODY`` before buffering it; the API handlers,
  which stream and check their own limit, raise it to ``max_body_size`` for their requests.
- Timeouts: a connection that sends no request headers within ``idle_timeout`` seconds (a new
  silent one, or a kept-alive one between requests) is closed, as is a body not received within
  ``body_timeout``.
- Descriptors: at start the open-files soft limit is raised to the hard limit. When accept fails
  for lack of descriptors, the longest-idle connections (those waiting for request headers) are
  closed to make room; if there are none, accepting pauses and resumes with a backoff, with one
  log line per interval instead of a traceback per attempt.
"""
from __future__ import annotations

import errno
import logging
import resource
import socket
from typing import Any, Callable

import tornado.httpserver
import tornado.httputil
from tornado.ioloop import IOLoop

log = logging.getLogger("p3s.server")

SMALL_BODY = 64 * 1024          # bytes: the cap of any route that does not raise it (forms, /login)
RESERVED_FDS = 64               # descriptors kept for the database, logs and the like
EVICT = 16                      # idle connections closed per accept that found no descriptor
LOG_INTERVAL = 10.0             # seconds between two reports of descriptor exhaustion
OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def raise_fd_limit() -> int:
    """Raise the open-files soft limit to the hard limit; return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %s to %s: %s", soft, hard, exc)
    return soft


class _Watched(tornado.httputil.HTTPMessageDelegate):
    """Passes a request through, telling the server when its headers arrived."""

    def __init__(self, inner: tornado.httputil.HTTPMessageDelegate, on_headers: Callable[[], None]) -> None:
        self.inner, self.on_headers = inner, on_headers

    def headers_received(self, start_line: Any, headers: Any) -> Any:
        self.on_headers()
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.inner.finish()

    def on_connection_close(self) -> None:
        self.inner.on_connection_close()


class BoundedHTTPServer(tornado.httpserver.HTTPServer):
    """An HTTPServer that knows which connections are idle and survives running out of descriptors."""

    def initialize(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(*args, **kwargs)
        self._idle: dict[Any, float] = {}          # stream -> since when it waits for request headers
        self._paused: set[int] = set()
        self._ready: dict[int, Callable] = {}
        self._backoff = 0.1
        self._last_log = 0.0
        self._failures = 0
        self.evicted = 0

    # --- which connections are idle -----------------------------------------------------------
    def start_request(self, server_conn: object, request_conn: Any) -> Any:
        stream = request_conn.stream
        self._idle[stream] = IOLoop.current().time()
        return _Watched(super().start_request(server_conn, request_conn), lambda: self._idle.pop(stream, None))

    def _evict_idle(self, count: int) -> int:
        """Close the ``count`` connections idle the longest; returns how many were closed."""
        for stream in [s for s in self._idle if s.closed()]:
            del self._idle[stream]
        oldest = sorted(self._idle.items(), key=lambda item: item[1])[:count]
        for stream, _since in oldest:
            self._idle.pop(stream, None)
            stream.close()
        self.evicted += len(oldest)
        return len(oldest)

    # --- accepting ----------------------------------------------------------------------------
    def add_sockets(self, sockets: Any) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._watch_socket(sock)

    def _watch_socket(self, sock: socket.socket) -> Callable[[], None]:
        loop = IOLoop.current()
        fd = sock.fileno()

        def ready(_fd: Any, _events: int) -> None:
            for _ in range(128):               # at most this many per wake-up, then others run
                try:
                    connection, address = sock.accept()
                except BlockingIOError:
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    if exc.errno not in OUT_OF_FDS:
                        raise
                    self._out_of_fds(sock, exc)
                    return
                self._backoff = 0.1
                self._handle_connection(connection, address)

        def remove() -> None:
            if fd not in self._paused:
                loop.remove_handler(fd)
            self._paused.discard(fd)

        loop.add_handler(fd, ready, IOLoop.READ)
        self._ready[fd] = ready
        return remove

    def _out_of_fds(self, sock: socket.socket, exc: OSError) -> None:
        loop = IOLoop.current()
        self._failures += 1
        if self._evict_idle(EVICT):
            return                                  # room made: the next wake-up accepts
        fd = sock.fileno()
        loop.remove_handler(fd)
        self._paused.add(fd)
        now = loop.time()
        if now - self._last_log >= LOG_INTERVAL:
            log.error("out of file descriptors (%s): not accepting for %.1f s (%d failures so far; raise the "
                      "open-files limit, or run fewer clients)", exc.strerror, self._backoff, self._failures)
            self._last_log = now

        def resume() -> None:
            if fd in self._paused and not self._stopped:
                self._paused.discard(fd)
                loop.add_handler(fd, self._ready[fd], IOLoop.READ)

        loop.call_later(self._backoff, resume)
        self._backoff = min(self._backoff * 2, 2.0)
