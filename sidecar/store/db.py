"""The SQLite store: one writer connection, WAL, migrations, clear errors not tracebacks."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from sidecar import failpoints
from sidecar.errors import StoreError
from sidecar.paths import private_dir, private_file
from sidecar.store.migrations import LATEST, MIGRATIONS

log = logging.getLogger(__name__)

T = TypeVar("T")

#: While opening, a lock held by another program is reported after this long instead of
#: being waited out (start-up must end, ready or fatal, within about two seconds).
OPEN_BUSY_MS = 500
#: Afterwards: how long a statement waits for another program's write lock.
BUSY_MS = 5000
#: The database and the files SQLite keeps beside it.
SUFFIXES = ("", "-wal", "-shm", "-journal")

# SQLite primary result codes (sqlite3.h)
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26


class Database:
    """Serializes every statement through one aiosqlite connection (SQLite has one writer anyway).

    ``transaction()`` holds an asyncio lock so statements of concurrent coroutines never
    interleave inside another's transaction, and is cancel-safe: see its docstring.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreError("store is not open")
        return self._conn

    async def open(self) -> Database:
        self._prepare_files()
        try:
            self._conn = await aiosqlite.connect(self.path, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            await self._conn.execute(f"PRAGMA busy_timeout={OPEN_BUSY_MS}")
            await self._check_readable()
            await self._conn.execute("PRAGMA journal_mode=WAL")
            await self._conn.execute("PRAGMA synchronous=FULL")
            await self._conn.execute("PRAGMA foreign_keys=ON")
            await self._migrate()
            await self._conn.execute("BEGIN IMMEDIATE")  # can we write at all, right now?
            await self._conn.execute("ROLLBACK")
            await self._conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        except BaseException as exc:
            await self.close(optimize=False)  # a locked file would make it wait again
            if isinstance(exc, sqlite3.Error):
                raise store_error(self.path, exc) from None
            raise
        for suffix in SUFFIXES:  # SQLite gives WAL and SHM the database's mode; make sure
            private_file(Path(f"{self.path}{suffix}"))
        return self

    def _prepare_files(self) -> None:
        """Create the database private (0600) before SQLite does; refuse a folder in its place."""
        if self.path.is_dir():
            raise StoreError(
                f"the database path {self.path} is a folder, not a file: move that folder "
                "somewhere else (or start with another --data-dir)", code="database_not_a_file")
        try:
            private_dir(self.path.parent)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            for suffix in SUFFIXES:
                private_file(Path(f"{self.path}{suffix}"))
        except OSError as exc:
            raise StoreError(
                f"cannot create the database in {self.path.parent}: {exc.strerror or exc}; "
                "the data directory must be writable by this user",
                code="data_dir_unwritable") from None

    async def _check_readable(self) -> None:
        async with self.conn.execute("PRAGMA quick_check") as cur:
            row = await cur.fetchone()
        if row is not None and row[0] != "ok":
            raise StoreError(f"the database {self.path} is corrupt ({row[0]}); move it aside "
                             "to start fresh", code="database_corrupt")

    async def _migrate(self) -> None:
        version = await self.scalar("PRAGMA user_version")
        if version > LATEST:
            raise StoreError(
                f"the database {self.path} has schema version {version}, newer than this "
                f"sidecar understands ({LATEST}); upgrade the app or use another --data-dir",
                code="database_too_new")
        for target in range(version + 1, LATEST + 1):
            script = MIGRATIONS[target - 1]
            log.info("migrating store %s to schema v%d", self.path, target)
            await self.conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;"
            )

    async def close(self, *, optimize: bool = True) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                if optimize:
                    with suppress(sqlite3.Error, ValueError):
                        await conn.execute("PRAGMA optimize")
            finally:
                # aiosqlite's thread is not a daemon: left running, it keeps the process alive
                await _to_the_end(conn.close())

    async def scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        with self._locked_is_said():
            async with self._lock, self.conn.execute(sql, tuple(params)) as cur:
                row = await cur.fetchone()
        return None if row is None else row[0]

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._locked_is_said():
            async with self._lock, self.conn.execute(sql, tuple(params)) as cur:
                return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        with self._locked_is_said():
            async with self._lock, self.conn.execute(sql, tuple(params)) as cur:
                return await cur.fetchone()

    @contextmanager
    def _locked_is_said(self) -> Iterator[None]:
        """Another program kept its lock past the busy timeout: a clear, classified error
        (``database_locked``, naming it) instead of an internal one."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in (_BUSY, _LOCKED):
                raise store_error(self.path, exc) from exc
            raise

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one write in its own transaction; returns the changed row count."""
        async with self.transaction() as conn, conn.execute(sql, tuple(params)) as cur:
            return cur.rowcount

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolls back if the block raises or is cancelled.

        A cancelled ``await`` does not stop a statement already queued on aiosqlite's thread,
        so BEGIN, COMMIT and ROLLBACK each run to their end before a cancel is honoured (the
        caller gets ``CancelledError`` after them, the lock still held until then); whatever
        happens, the connection leaves here out of its transaction. A cancel during COMMIT
        means the block may have been committed, as after a crash at that moment.
        """
        async with self._lock:
            conn, owner = self.conn, _task_name()
            try:
                with self._locked_is_said():  # cancelled: begun, then undone (below)
                    await _to_the_end(self._begin(conn, owner))
                if failpoints.delay("store.body"):
                    await _statement(conn, "store.body", "SELECT 1", owner)
                yield conn
            except BaseException:
                await _to_the_end(self._rollback(conn, owner))
                raise
            await _to_the_end(self._commit(conn, owner))

    async def _begin(self, conn: aiosqlite.Connection, owner: str) -> None:
        if conn.in_transaction:  # never expected: a transaction nobody owns would block all
            log.error("the store connection was left inside a transaction; rolling it back")
            await conn.execute("ROLLBACK")
        await _statement(conn, "store.begin", "BEGIN IMMEDIATE", owner)

    async def _commit(self, conn: aiosqlite.Connection, owner: str) -> None:
        try:
            await _statement(conn, "store.commit", "COMMIT", owner)
        except BaseException:
            await self._rollback(conn, owner)  # a failed COMMIT (busy, full, I/O) stays open
            raise

    async def _rollback(self, conn: aiosqlite.Connection, owner: str) -> None:
        if not conn.in_transaction:  # BEGIN failed, or SQLite rolled back by itself
            return
        try:
            await _statement(conn, "store.rollback", "ROLLBACK", owner)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                raise
            # SQLite had already rolled back (it does after some errors, e.g. a full disk)
            log.debug("rollback after an automatic one: %s", exc)

    async def integrity_check(self) -> str:
        return str(await self.scalar("PRAGMA integrity_check"))


async def _to_the_end(aw: Awaitable[T]) -> T:
    """Await ``aw`` to its end even if the caller is cancelled meanwhile; then honour the cancel."""
    task = asyncio.ensure_future(aw)
    cancel: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancel = exc
    if cancel is not None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("store step failed after a cancel: %s", task.exception())
        raise cancel
    return task.result()


def _task_name() -> str:
    task = asyncio.current_task()
    return task.get_name() if task is not None else "-"


async def _statement(conn: aiosqlite.Connection, point: str, sql: str, owner: str) -> None:
    """One statement; with delay point ``point`` armed, held on the worker thread first."""
    hold = failpoints.delay(point)
    if not hold:
        await conn.execute(sql)
        return
    raw = conn._conn  # used only on aiosqlite's thread, inside the queued call below

    def held() -> None:
        log.warning("failpoint %s: holding %s for %.2fs (task %s)", point, sql, hold, owner)
        time.sleep(hold)
        raw.execute(sql)

    await conn._execute(held)


def store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """One clear sentence per storage fault; only a damaged file is ever called damaged."""
    primary = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if primary in (_BUSY, _LOCKED):
        holders = lock_holders(path)
        by = f" ({', '.join(holders)})" if holders else ""
        return StoreError(
            f"the database {path} is locked by another program{by}; the file is fine. Close "
            "that program or let it finish, then start the sidecar again",
            code="database_locked")
    if primary == _READONLY:
        return StoreError(
            f"the database {path} is read-only (its permissions, an immutable flag or a "
            "read-only disk); the sidecar must write it: make it writable by this user",
            code="database_read_only")
    if primary in (_NOTADB, _CORRUPT):
        return StoreError(
            f"the database {path} is not a valid SQLite file or is damaged ({exc}); move it "
            "aside to start fresh (your agents will need to be added again)",
            code="database_corrupt")
    if primary == _FULL:
        return StoreError(f"the disk holding the database {path} is full; free some space",
                          code="disk_full")
    if primary == _CANTOPEN:
        if path.is_dir():
            return StoreError(f"the database path {path} is a folder, not a file: move that "
                              "folder somewhere else", code="database_not_a_file")
        if not os.access(path.parent, os.W_OK):
            return StoreError(f"cannot write in the data directory {path.parent} (SQLite "
                              "keeps its -wal and -shm files beside the database); make it "
                              "writable by this user", code="data_dir_unwritable")
    what = "disk or file system error" if primary == _IOERR else "error"
    return StoreError(f"cannot use the database {path}: {exc} ({what}); the file was left as "
                      "it is", code="store_error")


def lock_holders(path: Path) -> list[str]:
    """Best effort: "pid N, name" of other processes locking the database's files (Linux)."""
    if os.name != "posix":
        return []
    inodes: set[tuple[str, int]] = set()
    for suffix in SUFFIXES:
        with suppress(OSError):
            st = os.stat(f"{path}{suffix}")
            inodes.add((f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}", st.st_ino))
    pids: dict[int, bool] = {}  # pid → holds a write lock
    try:
        text = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        f = line.split()
        if len(f) < 6 or f[1] == "->" or not f[4].lstrip("-").isdigit():
            continue  # "->": a request still waiting, not a holder
        dev, _, ino = f[5].rpartition(":")
        pid = int(f[4])
        if ino.isdigit() and (dev, int(ino)) in inodes and pid > 0 and pid != os.getpid():
            pids[pid] = pids.get(pid, False) or f[3] == "WRITE"
    ordered = sorted(pids, key=lambda p: (not pids[p], p))
    return [_describe(pid) for pid in ordered[:3]]


def _describe(pid: int) -> str:
    try:
        import psutil

        return f"pid {pid}, {psutil.Process(pid).name()}"
    except Exception:
        return f"pid {pid}"
