"""The injector: watch directories for new data files and start a workflow for each one.

A file becomes a candidate when it is complete: closed after writing or moved into the directory
(inotify), or, where inotify cannot tell (polling, network file systems, files already open when
the injector started), when its size and modification time have not changed for ``settle``
seconds. Each complete file then goes through one decision:

    duplicate   a data record of that name exists already        nothing registered
    small       smaller than min_size                             registered as skipped
    sampled     not taken by --every / --fraction                 registered as skipped
    backlog     too many defined jobs (read from /summary)        registered as skipped
    shed        the server says its jobs could not meet their ETA  registered as skipped
                (or would push a higher-priority type past its own)
    rate        more than max_per_window files in the window      registered as skipped
    accepted    registered as defined, then a workflow is instantiated with the file as its input

and every decision is logged and recorded as a server event (``injector.accepted``,
``injector.skipped``, ``injector.error``). Skipped files are registered so that they are not
reconsidered.

The server may go away at any moment. Work is a FIFO of per-file steps (check, register,
instantiate, link, report); a step that meets an unreachable server stays at the head of the queue
and is retried with exponential backoff while the watching goes on, so files arriving during an
outage are processed after it. A file is done only when its data record and its workflow both
exist. A request whose reply was lost is not repeated blindly: a registration carries an attempt
id in its metadata and is looked up by name before it is sent again; before a workflow is sent
again the file's data records are looked up for one that a workflow owns (instantiation records the
input file under its name), so an outage never yields a second workflow. A data record that this
injector registered but for which no workflow exists (it was stopped in between) is resumed, not
skipped as a duplicate.

Standard library only, plus ``inotify_simple`` when it is installed (polling otherwise).
"""
from __future__ import annotations

import collections
import dataclasses
import fnmatch
import hashlib
import logging
import os
import select
import signal
import socket
import stat
import time
import uuid as _uuid
from typing import Any, Callable, Iterable

from p3s.pilot.client import P3SError

log = logging.getLogger("p3s.injector")

SOURCE = "injector"
REASONS = ("duplicate", "small", "sampled", "backlog", "shed", "rate", "error")
FALLBACK_POLL = 1.0          # seconds between scans when inotify is not available
ROTATE_AFTER = 3             # consecutive 5xx answers for one file before it goes to the back of the queue
MAX_OUTBOX = 10000           # events kept while the server is unreachable
WORK_SLICE = 0.5             # seconds of queue work before the watcher is read again


class Fatal(Exception):
    """A configuration error the injector cannot work around (unknown template, refused token)."""


class Transient(Exception):
    """The server is unreachable or answered 5xx: retry later."""

    def __init__(self, error: P3SError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclasses.dataclass
class Options:
    dirs: list[str]
    template: str
    patterns: list[str] = dataclasses.field(default_factory=lambda: ["*"])
    input_tag: str | None = None
    filenames: str = "derived"
    outdir: str = ""
    datatype: str = ""
    settle: float = 2.0
    min_size: int = 1
    poll: float | None = None            # seconds between scans; None: inotify where available
    once: bool = False
    ignore_existing: bool = False
    every: int | None = None
    fraction: float | None = None
    max_per_window: int | None = None
    window: float = 60.0
    backlog_limit: int | None = None
    backlog_type: str | None = None
    workflow_state: str = "defined"
    link: bool = True
    max_backoff: float = 30.0
    max_outage: float = 0.0              # 0: wait for the server forever


# --- sampling ---------------------------------------------------------------------------------
def hash_fraction(name: str) -> float:
    """A number in [0, 1) fixed by the file name: --fraction F takes the files below F."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2 ** 64


class Sampler:
    """``--every N`` (the 1st, N+1th, … candidate), ``--fraction F`` (by name hash, so the same file
    is always taken or not), and ``--max-per-window N --window S`` (a sliding window)."""

    def __init__(self, every: int | None = None, fraction: float | None = None,
                 max_per_window: int | None = None, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.fraction = every, fraction
        self.max_per_window, self.window = max_per_window, window
        self.clock = clock
        self.count = 0
        self.recent: collections.deque[float] = collections.deque()

    def sample(self, name: str) -> str | None:
        """Why the next candidate is not taken (a comment), or None when it is."""
        index = self.count
        self.count += 1
        if self.every and self.every > 1 and index % self.every:
            return f"sampled out: --every {self.every} takes 1 file in {self.every} (this was #{index + 1})"
        if self.fraction is not None:
            value = hash_fraction(name)
            if value >= self.fraction:
                return f"sampled out: --fraction {self.fraction:g} (name hash {value:.4f})"
        return None

    def admit(self) -> bool:
        """Take one slot of the window, or False when the window is full."""
        if not self.max_per_window:
            return True
        now = self.clock()
        while self.recent and self.recent[0] <= now - self.window:
            self.recent.popleft()
        if len(self.recent) >= self.max_per_window:
            return False
        self.recent.append(now)
        return True


# --- watching ---------------------------------------------------------------------------------
@dataclasses.dataclass
class _Pending:
    signature: tuple[int, int] | None
    changed_at: float
    writing: bool = False        # inotify saw it written: complete only when closed
    closed_at: float | None = None


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Shell-like: a leading dot must be matched explicitly (temporary files of rsync and friends)."""
    return any(fnmatch.fnmatchcase(name, p) and (not name.startswith(".") or p.startswith("."))
               for p in patterns)


def _signature(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a regular file, None when it is gone or not a regular file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns


class FileTracker:
    """Files seen but not yet complete, and files handed over (so each is handed over once)."""

    def __init__(self, patterns: list[str], settle: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.patterns, self.settle, self.clock = patterns, settle, clock
        self.pending: dict[str, _Pending] = {}
        self.handed: set[str] = set()

    def wanted(self, path: str) -> bool:
        return matches(os.path.basename(path), self.patterns)

    def found(self, path: str, complete: bool = False) -> None:
        """A file seen by a directory scan; complete at once for --once."""
        if path in self.handed or path in self.pending or not self.wanted(path):
            return
        signature = _signature(path)
        if signature is None:
            return
        now = self.clock()
        self.pending[path] = _Pending(signature, now, closed_at=now if complete else None)

    def written(self, path: str) -> None:
        """Created or modified (inotify): wait for it to be closed."""
        if path in self.handed or not self.wanted(path):
            return
        entry = self.pending.get(path)
        if entry is None:
            entry = self.pending[path] = _Pending(_signature(path), self.clock())
        entry.writing, entry.closed_at = True, None

    def closed(self, path: str) -> None:
        """Closed after writing, or moved into the directory (inotify): complete."""
        if path in self.handed or not self.wanted(path):
            return
        entry = self.pending.setdefault(path, _Pending(None, self.clock()))
        entry.closed_at = self.clock()

    def gone(self, path: str) -> None:
        self.pending.pop(path, None)
        self.handed.discard(path)

    def forget_writers(self) -> None:
        """After lost inotify events: fall back to the settle rule for every pending file."""
        for entry in self.pending.values():
            entry.writing = False

    def prune(self, present: set[str], directory: str) -> None:
        """Drop handed-over files of ``directory`` that are no longer there (polling)."""
        self.handed = {p for p in self.handed if os.path.dirname(p) != directory or p in present}

    def due(self) -> list[str]:
        """Complete files, in the order they became complete; they are handed over."""
        now = self.clock()
        ready: list[tuple[float, str]] = []
        for path, entry in list(self.pending.items()):
            if entry.closed_at is not None:
                if _signature(path) is None:
                    del self.pending[path]
                else:
                    ready.append((entry.closed_at, path))
                continue
            if entry.writing:
                continue
            signature = _signature(path)
            if signature is None:
                del self.pending[path]
            elif signature != entry.signature:
                entry.signature, entry.changed_at = signature, now
            elif now - entry.changed_at >= self.settle:
                ready.append((entry.changed_at + self.settle, path))
        ready.sort()
        for _, path in ready:
            del self.pending[path]
            self.handed.add(path)
        return [path for _, path in ready]

    def next_check(self) -> float | None:
        """When a settling file should next be looked at."""
        times = [e.changed_at + self.settle for e in self.pending.values() if not e.writing and e.closed_at is None]
        return min(times) if times else None


def scan(directory: str, tracker: FileTracker, complete: bool = False) -> set[str] | None:
    """Offer every matching file of ``directory`` to the tracker, oldest first; returns all paths
    (None when the directory cannot be read)."""
    found = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    if entry.is_file():
                        found.append((entry.stat().st_mtime_ns, entry.path))
                except OSError:
                    continue
    except OSError as exc:
        log.warning("cannot scan %s: %s", directory, exc)
        return None
    for _, path in sorted(found):
        tracker.found(path, complete)
    return {path for _, path in found}


class PollWatcher:
    """Scans the directories every ``interval`` seconds."""

    kind = "polling"

    def __init__(self, dirs: list[str], interval: float) -> None:
        self.dirs, self.interval = dirs, interval
        self.next_scan = 0.0

    def fileno(self) -> int | None:
        return None

    def start(self, tracker: FileTracker, existing: bool) -> None:
        for directory in self.dirs:
            if existing:
                scan(directory, tracker)
            else:
                tracker.handed |= scan(directory, FileTracker(tracker.patterns, 0)) or set()
        self.next_scan = time.monotonic() + self.interval

    def read(self, tracker: FileTracker) -> None:
        pass

    def tick(self, tracker: FileTracker, now: float) -> None:
        if now < self.next_scan:
            return
        for directory in self.dirs:
            present = scan(directory, tracker)
            if present is not None:
                tracker.prune(present, directory)
        self.next_scan = now + self.interval

    def next_tick(self) -> float:
        return self.next_scan

    def close(self) -> None:
        pass


class InotifyWatcher:
    """IN_CLOSE_WRITE and IN_MOVED_TO complete a file; IN_CREATE and IN_MODIFY mark it being written."""

    kind = "inotify"
    RETRY_WATCH = 5.0

    def __init__(self, dirs: list[str]) -> None:
        from inotify_simple import INotify, flags   # ImportError or OSError: the caller falls back to polling

        self.flags = flags
        self.mask = (flags.CLOSE_WRITE | flags.MOVED_TO | flags.CREATE | flags.MODIFY | flags.DELETE
                     | flags.MOVED_FROM | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR)
        self.inotify = INotify()
        self.dirs = dirs
        self.watches: dict[int, str] = {}
        self.lost: dict[str, float] = {}
        for directory in dirs:
            self.watches[self.inotify.add_watch(directory, self.mask)] = directory

    def fileno(self) -> int:
        return self.inotify.fileno()

    def start(self, tracker: FileTracker, existing: bool) -> None:
        for directory in self.dirs:          # after the watches: nothing falls in between
            if existing:
                scan(directory, tracker)
            else:
                tracker.handed |= scan(directory, FileTracker(tracker.patterns, 0)) or set()

    def read(self, tracker: FileTracker) -> None:
        flags = self.flags
        for event in self.inotify.read(timeout=0):
            if event.mask & flags.Q_OVERFLOW:
                log.warning("inotify queue overflow: rescanning")
                tracker.forget_writers()
                for directory in self.watches.values():
                    scan(directory, tracker)
                continue
            directory = self.watches.get(event.wd)
            if directory is None:
                continue
            if event.mask & (flags.DELETE_SELF | flags.MOVE_SELF | flags.IGNORED):
                log.warning("watched directory %s went away; watching again when it is back", directory)
                self.watches.pop(event.wd, None)
                self.lost[directory] = time.monotonic() + self.RETRY_WATCH
                continue
            if event.mask & flags.ISDIR or not event.name:
                continue
            path = os.path.join(directory, event.name)
            if event.mask & (flags.CLOSE_WRITE | flags.MOVED_TO):
                tracker.closed(path)
            elif event.mask & (flags.CREATE | flags.MODIFY):
                tracker.written(path)
            elif event.mask & (flags.DELETE | flags.MOVED_FROM):
                tracker.gone(path)

    def tick(self, tracker: FileTracker, now: float) -> None:
        for directory, when in list(self.lost.items()):
            if now < when:
                continue
            try:
                self.watches[self.inotify.add_watch(directory, self.mask)] = directory
            except OSError:
                self.lost[directory] = now + self.RETRY_WATCH
                continue
            del self.lost[directory]
            log.info("watching %s again", directory)
            scan(directory, tracker)

    def next_tick(self) -> float | None:
        return min(self.lost.values()) if self.lost else None

    def close(self) -> None:
        self.inotify.close()


def make_watcher(dirs: list[str], poll: float | None) -> PollWatcher | InotifyWatcher:
    if poll is not None:
        return PollWatcher(dirs, poll)
    try:
        return InotifyWatcher(dirs)
    except ImportError:
        log.warning("inotify_simple is not installed: polling every %g s", FALLBACK_POLL)
    except OSError as exc:
        log.warning("inotify is not available (%s): polling every %g s", exc, FALLBACK_POLL)
    return PollWatcher(dirs, FALLBACK_POLL)


# --- the per-file work --------------------------------------------------------------------------
@dataclasses.dataclass
class Work:
    path: str
    stage: str = "check"             # check, register, workflow, link, report, done
    size: int = 0
    reason: str | None = None        # None: accepted
    comment: str = ""
    sample: str | None | bool = False    # the sampler's verdict, kept across retries (False: not asked)
    attempt: str = dataclasses.field(default_factory=lambda: str(_uuid.uuid4()))
    register_tried: bool = False
    workflow_tried: bool = False
    resumed: bool = False
    data: dict | None = None
    workflow: str | None = None
    server_errors: int = 0
    arrived: float = dataclasses.field(default_factory=time.time)    # when it was first seen complete

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def dirpath(self) -> str:
        return os.path.dirname(self.path)


def input_tag_of(spec: dict) -> str | None:
    """The data tag (or edge id) of the template's first input: an edge out of a root NOOP vertex,
    else out of any root vertex."""
    edges = spec.get("data") or spec.get("edges") or []
    vertices = spec.get("jobs") or spec.get("vertices") or {}
    if isinstance(vertices, list):
        vertices = {v.get("name"): v for v in vertices if isinstance(v, dict)}
    targets = {e.get("target") for e in edges}
    roots = [e for e in edges if e.get("source") not in targets]
    noop_roots = [e for e in roots if (vertices.get(e.get("source")) or {}).get("noop")]
    for edge in noop_roots or roots:
        if edge.get("datatag") or edge.get("id"):
            return edge.get("datatag") or edge.get("id")
    return None


def template_keys(spec: dict) -> set[str]:
    edges = spec.get("data") or spec.get("edges") or []
    return {key for e in edges for key in (e.get("id"), e.get("datatag")) if key}


class Injector:
    def __init__(self, options: Options, client: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.client = client
        self.clock = clock
        self.tracker = FileTracker(options.patterns, options.settle, clock)
        self.sampler = Sampler(options.every, options.fraction, options.max_per_window, options.window, clock)
        self.queue: collections.deque[Work] = collections.deque()
        self.outbox: collections.deque[dict] = collections.deque()
        self.stopping = False
        self.prepared = False
        self.input_tag = options.input_tag
        self.host = socket.gethostname()
        self.retry_at = 0.0
        self.backoff = 0.0
        self.outage_since: float | None = None
        self.link = options.link
        self.ask_admission = True
        self.counts: collections.Counter[str] = collections.Counter()
        self.watcher: PollWatcher | InotifyWatcher | None = None
        self._event_errors = 0
        self._wake_r = self._wake_w = -1

    # --- the loop -----------------------------------------------------------------------------
    def run(self) -> int:
        """Watch and inject until stopped (0), or, with --once, until the files present are done.
        Returns 2 on a configuration error and 1 when the server stayed away past max_outage."""
        for directory in self.options.dirs:
            if not os.path.isdir(directory):
                log.error("%s is not a directory", directory)
                return 2
        self._install_signals()
        try:
            if self.options.once:
                for directory in self.options.dirs:
                    scan(directory, self.tracker, complete=True)
            else:
                self.watcher = make_watcher(self.options.dirs, self.options.poll)
                self.watcher.start(self.tracker, existing=not self.options.ignore_existing)
                log.info("watching %s for %s (%s, settle %g s)", ", ".join(self.options.dirs),
                         " ".join(self.options.patterns), self.watcher.kind, self.options.settle)
            return self._loop()
        except Fatal as exc:
            log.error("%s", exc)
            return 2
        finally:
            if self.watcher is not None:
                self.watcher.close()
            self._restore_signals()

    def _loop(self) -> int:
        while not self.stopping:
            now = self.clock()
            if self.watcher is not None:
                self.watcher.tick(self.tracker, now)
            for path in self.tracker.due():
                self.queue.append(Work(path))
            busy = self._work()
            if self.outage_since is not None and self.options.max_outage and \
                    self.clock() - self.outage_since > self.options.max_outage:
                log.error("the server has been unreachable for more than %g s: giving up", self.options.max_outage)
                return 1
            if self.options.once and not self.queue and not self.tracker.pending and not self.outbox \
                    and self.prepared:
                break
            self._wait(0 if busy else self._timeout())
        if self.prepared:
            self._farewell()
        log.info("stopped: %s", self.summary_text())
        return 0

    def _timeout(self) -> float:
        now = self.clock()
        deadlines = [now + 5.0]
        if self.queue or self.outbox or not self.prepared:
            deadlines.append(self.retry_at)
        check = self.tracker.next_check()
        if check is not None:
            deadlines.append(check)
        if self.watcher is not None and self.watcher.next_tick() is not None:
            deadlines.append(self.watcher.next_tick())
        return max(0.0, min(deadlines) - now)

    def _wait(self, timeout: float) -> None:
        fds = [self._wake_r] if self._wake_r >= 0 else []
        watched = self.watcher.fileno() if self.watcher is not None else None
        if watched is not None:
            fds.append(watched)
        if fds:
            try:
                readable, _, _ = select.select(fds, [], [], timeout)
            except InterruptedError:
                readable = []
        else:
            time.sleep(timeout)
            readable = []
        if self._wake_r in readable:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except (BlockingIOError, OSError):
                pass
        if watched is not None and watched in readable:
            self.watcher.read(self.tracker)

    # --- signals ------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        self._old_handlers = {}
        try:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._old_wakeup = signal.set_wakeup_fd(self._wake_w)
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        except ValueError:           # not the main thread: stop() is the only way out
            self._close_pipe()

    def _restore_signals(self) -> None:
        if self._old_handlers:
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(self._old_wakeup)
            self._old_handlers = {}
        self._close_pipe()

    def _close_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _on_signal(self, signum: int, frame: Any) -> None:
        if not self.stopping:
            log.info("%s: stopping", signal.Signals(signum).name)
        self.stopping = True

    def stop(self) -> None:
        self.stopping = True

    # --- server calls -------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        """One call; unreachable or 5xx raise Transient, a refused token raises Fatal."""
        try:
            return self.client.call(method, path, body, query)
        except P3SError as exc:
            if exc.status == 0 or exc.status >= 500:
                raise Transient(exc) from None
            if exc.status in (401, 403):
                raise Fatal(f"{method} {path}: {exc}") from None
            raise

    def _lookup(self, name: str) -> list[dict]:
        return self._call("GET", "/data", query={"name": name, "limit": 1000})["items"]

    def _work(self) -> bool:
        """Move the queue, then the event outbox, on; False once there is nothing (more) to do now."""
        now = self.clock()
        if now < self.retry_at:
            return False
        deadline = now + WORK_SLICE
        current: Work | None = None
        try:
            if not self.prepared:
                self._prepare()
            while self.queue and not self.stopping:
                current = self.queue[0]
                try:
                    self._advance(current)
                except P3SError as exc:          # refused (4xx): this file is given up
                    self._give_up(current, str(exc))
                except (Transient, Fatal):
                    raise
                except Exception as exc:         # a bug must not stop the service: log it, go on
                    log.exception("%s: unexpected error", current.path)
                    self._give_up(current, f"unexpected error: {exc!r}")
                self.queue.popleft()
                current = None
                while self.outbox and not self.stopping:
                    self._post_event(self.outbox[0])
                    self.outbox.popleft()
                if self.clock() > deadline:
                    self._recovered()
                    return True
            while self.outbox and not self.stopping:
                self._post_event(self.outbox[0])
                self.outbox.popleft()
            self._recovered()
            return False
        except Transient as exc:
            self._outage(exc.error, current)
            return False

    def _outage(self, error: P3SError, current: Work | None) -> None:
        now = self.clock()
        if current is not None and error.status >= 500:
            current.server_errors += 1           # one file the server keeps failing must not block the others
            if current.server_errors % ROTATE_AFTER == 0 and len(self.queue) > 1:
                log.warning("%s: %d server errors in a row: retrying it after the others", current.name,
                            current.server_errors)
                self.queue.rotate(-1)
        if self.outage_since is None:
            self.outage_since = now
            log.warning("server problem: %s; retrying with backoff (%d file(s) waiting)", error, len(self.queue))
        self.backoff = min(self.options.max_backoff, max(0.25, self.backoff * 2))
        self.retry_at = now + self.backoff
        log.debug("retrying in %.2f s", self.backoff)

    def _recovered(self) -> None:
        if self.outage_since is not None:
            seconds = self.clock() - self.outage_since
            log.info("server reachable again after %.1f s", seconds)
            self._event("injector.outage", f"server unreachable or failing for {seconds:.1f} s", "warning",
                        seconds=round(seconds, 1))
        self.outage_since = None
        self.backoff = 0.0
        self.retry_at = 0.0

    def _prepare(self) -> None:
        """Read the template (and the data type) once the server answers."""
        name = self.options.template
        try:
            template = self._call("GET", f"/templates/{name}")
        except P3SError as exc:
            raise Fatal(f"template {name!r}: {exc}") from None
        spec = template.get("spec") or {}
        if self.input_tag is None:
            self.input_tag = input_tag_of(spec)
            if self.input_tag is None:
                raise Fatal(f"template {name!r} has no input edge: give --input-tag")
        elif spec and self.input_tag not in template_keys(spec):
            raise Fatal(f"template {name!r} has no edge or data tag {self.input_tag!r} "
                        f"(it has: {', '.join(sorted(template_keys(spec)))})")
        if self.options.datatype:
            try:
                self._call("GET", f"/datatypes/{self.options.datatype}")
            except P3SError as exc:
                raise Fatal(f"data type {self.options.datatype!r}: {exc}") from None
        self.prepared = True
        log.info("template %s: input files bound to %s", name, self.input_tag)
        self._event("injector.started", f"watching {', '.join(self.options.dirs)} for template {name}",
                    dirs=self.options.dirs, patterns=self.options.patterns, template=name,
                    input_tag=self.input_tag, once=self.options.once)

    def _farewell(self) -> None:
        """Best effort: the events still waiting, and a stopped event (one try each, short timeout)."""
        if not self.options.once:
            self._event("injector.stopped", f"stopped: {self.summary_text()}", counts=dict(self.counts))
        timeout, retries = self.client.timeout, self.client.retries
        self.client.timeout, self.client.retries = min(timeout, 3.0), 0
        try:
            while self.outbox:
                self._post_event(self.outbox[0])
                self.outbox.popleft()
        except (Transient, Fatal):
            log.warning("%d event(s) could not be recorded", len(self.outbox))
        finally:
            self.client.timeout, self.client.retries = timeout, retries

    # --- the steps of one file ----------------------------------------------------------------
    def _advance(self, work: Work) -> None:
        if work.stage == "check":
            self._check(work)
        if work.stage == "register":
            self._register(work)
        if work.stage == "workflow":
            self._instantiate(work)
        if work.stage == "link":
            self._link(work)
        if work.stage == "report":
            self._report(work)
        work.server_errors = 0

    def _check(self, work: Work) -> None:
        signature = _signature(work.path)
        if signature is None:
            log.info("%s: gone before it was registered", work.path)
            work.stage = "done"
            return
        work.size = signature[0]
        records = self._lookup(work.name)
        if records:
            mine = self._resumable(records)
            if mine is not None:
                work.data, work.resumed, work.stage = mine, True, "workflow"
                work.attempt = mine["metadata"]["injector"].get("id", work.attempt)
                log.info("%s: registered earlier as %s without a workflow: resuming", work.name, mine["uuid"])
                return
            first = records[0]
            work.reason = "duplicate"
            work.comment = (f"already registered: {first.get('uuid')} in {first.get('dirpath') or '-'} "
                            f"({first.get('state')})" + (f", {len(records)} records" if len(records) > 1 else ""))
            work.stage = "report"
            return
        opts = self.options
        if work.size < opts.min_size:
            work.reason, work.comment = "small", f"small: {work.size} bytes < --min-size {opts.min_size}"
        else:
            if work.sample is False:
                work.sample = self.sampler.sample(work.name)
            if work.sample:
                work.reason, work.comment = "sampled", str(work.sample)
            elif opts.backlog_limit is not None and (backlog := self._backlog()) > opts.backlog_limit:
                what = f"defined {opts.backlog_type} jobs" if opts.backlog_type else "defined jobs"
                work.reason = "backlog"
                work.comment = f"backlog: {backlog} {what} > --backlog-limit {opts.backlog_limit}"
            elif (shed := self._admission(work)) is not None:
                work.reason, work.comment = "shed", shed
            elif not self.sampler.admit():
                work.reason = "rate"
                work.comment = f"rate: at most {opts.max_per_window} file(s) per {opts.window:g} s"
        work.stage = "register"

    def _resumable(self, records: list[dict]) -> dict | None:
        """The record this injector registered for an accepted file whose workflow was never made."""
        if any(r.get("workflow") for r in records):
            return None
        for record in records:
            meta = record.get("metadata") or {}
            info = meta.get("injector") if isinstance(meta, dict) else None
            if (isinstance(info, dict) and record.get("state") == "defined" and not meta.get("workflow")
                    and info.get("template") == self.options.template):
                return record if len(records) == 1 else None
        return None

    def _backlog(self) -> int:
        summary = self._call("GET", "/summary")
        if self.options.backlog_type:
            return int((summary.get("jobs_by_type") or {}).get(self.options.backlog_type, {}).get("defined", 0))
        return int((summary.get("jobs") or {}).get("defined", 0))

    def _admission(self, work: Work) -> str | None:
        """Ask the server whether the template's jobs for this file would be shed (p3s.freshness)."""
        if not self.ask_admission:
            return None
        try:
            answer = self._call("GET", "/freshness/admission",
                                query={"template": self.options.template, "arrived": f"{work.arrived:.3f}"})
        except P3SError as exc:
            if exc.status == 404:            # a server without freshness policies: never shed
                self.ask_admission = False
                return None
            raise
        return None if answer.get("admit", True) else str(answer.get("reason") or "shed")

    def _register(self, work: Work) -> None:
        if work.register_tried:                  # the earlier request may have gone through
            records = self._lookup(work.name)
            for record in records:
                info = (record.get("metadata") or {}).get("injector") or {}
                if isinstance(info, dict) and info.get("id") == work.attempt:
                    log.info("%s: the registration went through before the outage (%s)", work.name, record["uuid"])
                    work.data = record
                    work.stage = "workflow" if work.reason is None else "report"
                    return
            if records:                          # someone else registered it meanwhile
                work.reason = "duplicate"
                work.comment = f"registered meanwhile: {records[0].get('uuid')}"
                work.stage = "report"
                return
        metadata = {"injector": {"id": work.attempt, "host": self.host, "path": work.path,
                                 "template": self.options.template}}
        if work.reason is not None:
            metadata["injector"]["reason"] = work.reason
        body = {"name": work.name, "dirpath": work.dirpath, "datatype": self.options.datatype,
                "state": "defined" if work.reason is None else "skipped",
                "comment": "injector: accepted" if work.reason is None else f"injector: {work.comment}",
                "metadata": metadata, "size": work.size, "arrived": round(work.arrived, 3)}
        work.register_tried = True
        try:
            work.data = self._call("POST", "/data", body)["items"][0]
        except P3SError as exc:                  # refused (e.g. a name the server does not take)
            work.reason, work.comment = "error", f"registration refused: {exc}"
            log.error("%s: %s", work.path, work.comment)
            work.stage = "report"
            return
        work.stage = "workflow" if work.reason is None else "report"

    def _instantiate(self, work: Work) -> None:
        if work.workflow_tried or work.resumed:  # a workflow may exist already: look before sending
            owned = [r for r in self._lookup(work.name) if r.get("workflow")]
            if owned:
                work.workflow = owned[0]["workflow"]
                log.info("%s: workflow %s exists already (made before the outage)", work.name, work.workflow)
                self._ensure_started(work.workflow)
                work.stage = "link"
                return
        stem = os.path.splitext(work.name)[0]
        body = {"template": self.options.template, "name": f"{self.options.template}:{work.name}"[:256],
                "inputs": {self.input_tag: work.path}, "state": self.options.workflow_state,
                "filenames": self.options.filenames, "description": f"injected by {SOURCE}@{self.host}: {stem}",
                "arrived": round(work.arrived, 3)}
        if self.options.outdir:
            body["dirpath"] = self.options.outdir
        work.workflow_tried = True
        try:
            work.workflow = self._call("POST", "/workflows", body)["uuid"]
        except P3SError as exc:
            self._failed(work, exc)
            return
        work.stage = "link"

    def _ensure_started(self, uuid: str) -> None:
        if self.options.workflow_state != "defined":
            return
        try:
            if self._call("GET", f"/workflows/{uuid}").get("state") == "template":
                self._call("POST", f"/workflows/{uuid}/start")
                log.info("workflow %s had not been started: started it", uuid)
        except P3SError as exc:
            log.warning("workflow %s: %s", uuid, exc)

    def _give_up(self, work: Work, why: str) -> None:
        log.error("%s: given up at step %s: %s", work.path, work.stage, why)
        work.reason, work.comment = "error", f"{work.stage} failed: {why}"
        self._report(work)

    def _failed(self, work: Work, exc: P3SError) -> None:
        """The server refused the workflow (4xx): the file is given up, its record marked skipped."""
        work.reason, work.comment = "error", f"workflow refused: {exc}"
        log.error("%s: %s", work.path, work.comment)
        if work.data is not None and self.link:
            meta = {**(work.data.get("metadata") or {})}
            try:
                self._call("PATCH", f"/data/{work.data['uuid']}",
                           {"state": "skipped", "comment": f"injector: {work.comment}"[:4000], "metadata": meta})
            except (P3SError, Fatal) as patch_error:
                log.warning("cannot mark %s skipped: %s", work.data["uuid"], patch_error)
        work.stage = "report"

    def _link(self, work: Work) -> None:
        if self.link and work.data is not None:
            meta = {**(work.data.get("metadata") or {}), "workflow": work.workflow}
            try:
                self._call("PATCH", f"/data/{work.data['uuid']}", {"metadata": meta})
            except Fatal as exc:
                log.warning("cannot record workflows in data records (%s); not trying again", exc)
                self.link = False
            except P3SError as exc:
                log.warning("cannot record workflow %s in data record %s: %s", work.workflow, work.data["uuid"], exc)
        work.stage = "report"

    def _report(self, work: Work) -> None:
        work.stage = "done"
        data_uuid = work.data.get("uuid") if work.data else None
        if work.reason is None:
            self.counts["accepted"] += 1
            log.info("accepted %s (%d bytes): data %s, workflow %s%s", work.path, work.size, data_uuid,
                     work.workflow, " (resumed)" if work.resumed else "")
            self._event("injector.accepted", f"{work.name}: workflow {work.workflow}", "info", work,
                        workflow=work.workflow, resumed=work.resumed)
        elif work.reason == "error":
            self.counts["error"] += 1
            self._event("injector.error", f"{work.name}: {work.comment}", "error", work, reason="error")
        else:
            self.counts[work.reason] += 1
            log.info("skipped %s: %s", work.path, work.comment)
            self._event("injector.skipped", f"{work.name}: {work.comment}",
                        "warning" if work.reason in ("backlog", "shed") else "info", work, reason=work.reason,
                        template=self.options.template)

    # --- events -------------------------------------------------------------------------------
    def _event(self, kind: str, message: str, severity: str = "info", work: Work | None = None, **data: Any) -> None:
        if work is not None:
            data = {"file": work.name, "path": work.path, "size": work.size,
                    "data": work.data.get("uuid") if work.data else None, "comment": work.comment, **data}
        data.setdefault("host", self.host)
        if len(self.outbox) >= MAX_OUTBOX:
            self.outbox.popleft()
        self.outbox.append({"kind": kind, "message": message[:4000], "severity": severity, "source": SOURCE,
                            "data": data})

    def _post_event(self, event: dict) -> None:
        try:
            self._call("POST", "/events", event)
        except P3SError as exc:
            log.warning("event %s not recorded: %s", event["kind"], exc)
        except Transient as exc:                 # a server error (not an outage) three times: drop it
            if exc.error.status == 0:
                raise
            self._event_errors += 1
            if self._event_errors < 3:
                raise
            log.warning("event %s not recorded: %s", event["kind"], exc)
        self._event_errors = 0

    # --- reporting ----------------------------------------------------------------------------
    def summary(self) -> dict:
        skipped = {r: self.counts[r] for r in REASONS if r != "error" and self.counts[r]}
        return {"accepted": self.counts["accepted"], "skipped": skipped, "errors": self.counts["error"],
                "waiting": len(self.queue)}

    def summary_text(self) -> str:
        s = self.summary()
        skipped = ", ".join(f"{r} {n}" for r, n in s["skipped"].items())
        return (f"{s['accepted']} accepted, {sum(s['skipped'].values())} skipped"
                + (f" ({skipped})" if skipped else "") + f", {s['errors']} errors"
                + (f", {s['waiting']} not done" if s["waiting"] else ""))
