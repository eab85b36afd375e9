"""Process lifecycle: one instance per data dir, the auth token, and dying with the parent."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import secrets
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sidecar.errors import SidecarError
from sidecar.paths import Paths

log = logging.getLogger(__name__)

TOKEN_ENV = "SIDECAR_TOKEN"


class AlreadyRunning(SidecarError):
    code = "already_running"


class InstanceLock:
    """An OS-level exclusive lock on ``<data_dir>/sidecar.lock``; released when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self) -> InstanceLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        fh = open(fd, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process life
        try:
            self._lock(fh)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise AlreadyRunning(
                f"another sidecar (pid {holder}) is already using the data directory "
                f"{self.path.parent}; stop it or pass a different --data-dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    @staticmethod
    def _lock(fh: IO[str]) -> None:
        if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
            import msvcrt

            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.seek(0)
                fh.truncate()
            finally:
                fh.close()


def resolve_token(token_file: Path, env: dict[str, str] | None = None) -> tuple[str, Path | None]:
    """Electron passes the token in ``SIDECAR_TOKEN``; else generate one into a 0600 file."""
    env = dict(os.environ) if env is None else env
    token = env.get(TOKEN_ENV, "").strip()
    if token:
        if len(token) < 16:
            raise SidecarError(f"{TOKEN_ENV} must be at least 16 characters", code="weak_token")
        return token, None
    token = secrets.token_urlsafe(32)
    token_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = token_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o600)  # a left-over tmp file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token)
    os.replace(tmp, token_file)
    return token, token_file


def watch_parent(
    pid: int, on_death: Callable[[], None], interval: float = 0.25
) -> threading.Thread:
    """Poll the parent from a thread; psutil compares create times, so a reused pid is not alive."""
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        raise SidecarError(f"parent process {pid} does not exist", code="no_parent") from None
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            try:
                alive = parent.is_running() and parent.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                alive = False
            if not alive:
                log.warning("parent process %d is gone; shutting down", pid)
                on_death()
                return

    t = threading.Thread(target=run, name="parent-watch", daemon=True)
    t.start()
    return t


def watch_stdin(on_eof: Callable[[], None]) -> threading.Thread:
    """Electron holds our stdin pipe open; EOF means it is gone (works on every OS)."""

    # The raw descriptor, not sys.stdin.buffer: a daemon thread blocked inside a buffered
    # read holds the buffer's lock, and the interpreter aborts at exit when it finds it held
    # (SIGABRT, "_enter_buffered_busy") after a SIGTERM while Electron keeps the pipe open.
    try:
        fd = sys.stdin.fileno() if sys.stdin is not None else -1
    except (OSError, ValueError):
        fd = -1

    def run() -> None:
        if fd < 0:
            return
        try:
            while os.read(fd, 65536):
                pass
        except OSError:
            pass
        log.warning("stdin closed; shutting down")
        on_eof()

    t = threading.Thread(target=run, name="stdin-watch", daemon=True)
    t.start()
    return t


def threadsafe_setter(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> Callable[[], None]:
    """A callback any thread may call to set ``event`` on ``loop``."""

    def fire() -> None:
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # loop already closed
            pass

    return fire


# -- start-up failures ---------------------------------------------------------------------

#: Every ``error`` a fatal line can carry: (error, exit code, when). docs/protocol.md.
FATAL_ERRORS: tuple[tuple[str, int, str], ...] = (
    ("invalid_config", 5, "a flag or environment variable is invalid (the message names it)"),
    ("weak_token", 5, "`SIDECAR_TOKEN` is shorter than 16 characters"),
    ("already_running", 3, "another sidecar holds the data directory (its pid is named)"),
    ("no_parent", 1, "the `--parent-pid` process is already gone"),
    ("data_dir_unwritable", 7, "the data directory cannot be created or written"),
    ("log_dir_unwritable", 7, "the log directory or log file cannot be created or written"),
    ("disk_full", 7, "no space left on the disk holding the data or log directory"),
    ("database_locked", 6, "another program holds a lock on the database (named when it can "
                           "be found); the file is fine: retry once that program is closed"),
    ("database_read_only", 4, "the database file is read-only (mode, immutable flag, "
                              "read-only disk)"),
    ("database_not_a_file", 4, "a folder (or other non-file) is where the database should be"),
    ("database_corrupt", 4, "the database is damaged or not an SQLite file: move it aside"),
    ("database_too_new", 4, "the database was written by a newer sidecar"),
    ("store_error", 4, "another SQLite error (the message quotes it); the file is left as is"),
    ("port_in_use", 1, "`--port` is taken (use `--port 0`)"),
    ("startup_failed", 1, "another operating-system error (the message quotes it)"),
    ("internal_error", 1, "a bug; the traceback is in the log file, not on stderr"),
)


@dataclass(frozen=True, slots=True)
class Fatal:
    """Why the daemon cannot start: its exit code, a stable error code and one human line."""

    exit_code: int
    error: str
    message: str

    def line(self) -> str:
        """The JSON line Electron reads on stdout in place of the ready line."""
        return json.dumps({"event": "fatal", "code": self.exit_code, "error": self.error,
                           "message": self.message}, separators=(",", ":"), ensure_ascii=False)


def classify(exc: BaseException, paths: Paths | None) -> Fatal:
    """Turn whatever stopped the start-up into a :class:`Fatal` (one place decides codes)."""
    import sqlite3

    from sidecar.exits import EXIT_ERROR, exit_code
    from sidecar.store.db import store_error

    if isinstance(exc, sqlite3.Error) and paths is not None:
        exc = store_error(paths.database, exc)
    if isinstance(exc, SidecarError):
        return Fatal(exit_code(exc), exc.code, exc.message)
    if isinstance(exc, OSError):
        return _os_error(exc, paths)
    return Fatal(EXIT_ERROR, "internal_error",
                 f"start-up failed: {type(exc).__name__}: {exc} (details in the log)")


def _os_error(exc: OSError, paths: Paths | None) -> Fatal:
    from sidecar.diskfull import is_disk_full
    from sidecar.exits import CANNOT_WRITE_ERRNOS, EXIT_ERROR, exit_code

    where = Path(str(exc.filename)) if exc.filename else None
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        return Fatal(EXIT_ERROR, "port_in_use",
                     f"cannot listen on 127.0.0.1: {reason}; pass --port 0 for a free port")
    if is_disk_full(exc) and paths is not None and where is None:
        err = SidecarError(f"no space left on the disk holding the data directory "
                           f"{paths.data_dir} (or the log directory {paths.log_dir}); free "
                           "some space", code="disk_full")
        return Fatal(exit_code(err), err.code, err.message)
    if where is not None and paths is not None and exc.errno in CANNOT_WRITE_ERRNOS:
        for folder, code, name in ((paths.log_dir, "log_dir_unwritable", "log directory"),
                                   (paths.data_dir, "data_dir_unwritable", "data directory")):
            if where == folder or folder in where.parents:
                if is_disk_full(exc):
                    err = SidecarError(f"the disk holding the {name} {folder} is full ("
                                       f"{reason}); free some space", code="disk_full")
                else:
                    err = SidecarError(
                        f"cannot write the {name} {folder} ({reason}: {where}); make it "
                        f"writable by this user or pass another --{name.split()[0]}-dir",
                        code=code)
                return Fatal(exit_code(err), err.code, err.message)
    return Fatal(EXIT_ERROR, "startup_failed",
                 f"start-up failed: {reason}" + (f": {where}" if where else ""))


def exit_soon(code: int, after: float) -> threading.Timer:
    """End the process with ``code`` after ``after`` seconds unless it has ended by then.

    A library thread that is not a daemon (aiosqlite's connection thread, an executor's
    worker stuck in a system call) would otherwise keep a failed or stopped sidecar alive
    for ever, with Electron waiting on it.
    """

    def now() -> None:
        log.warning("still alive %.1fs after the end; exiting with code %d", after, code)
        for h in logging.getLogger().handlers:
            try:
                h.flush()
            except Exception:  # a broken handler must not stop the exit
                pass
        for stream in (sys.stderr, sys.__stderr__):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)

    t = threading.Timer(after, now)
    t.daemon = True
    t.name = "exit-backstop"
    t.start()
    return t
