"""The SQLite store: one writer connection, WAL, migrations, clear errors not tracebacks."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from sidecar.errors import StoreError
from sidecar.store.migrations import LATEST, MIGRATIONS

log = logging.getLogger(__name__)


class Database:
    """Serializes every statement through one aiosqlite connection (SQLite has one writer anyway).

    ``transaction()`` holds an asyncio lock so statements of concurrent coroutines never
    interleave inside another's transaction.
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = await aiosqlite.connect(self.path, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            await self._check_readable()
            await self._conn.execute("PRAGMA journal_mode=WAL")
            await self._conn.execute("PRAGMA synchronous=FULL")
            await self._conn.execute("PRAGMA foreign_keys=ON")
            await self._conn.execute("PRAGMA busy_timeout=5000")
            await self._migrate()
        except StoreError:
            await self.close()
            raise
        except sqlite3.DatabaseError as exc:
            await self.close()
            raise StoreError(
                f"cannot open the database {self.path}: {exc}. The file is damaged or not a "
                "sidecar database; move it aside to start fresh (your agents will need to be "
                "added again)."
            ) from None
        return self

    async def _check_readable(self) -> None:
        try:
            async with self.conn.execute("PRAGMA quick_check") as cur:
                row = await cur.fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"the database {self.path} is not a valid SQLite file ({exc}); move it aside "
                "to start fresh"
            ) from None
        if row is not None and row[0] != "ok":
            raise StoreError(f"the database {self.path} is corrupt ({row[0]}); move it aside "
                             "to start fresh")

    async def _migrate(self) -> None:
        version = await self.scalar("PRAGMA user_version")
        if version > LATEST:
            raise StoreError(
                f"the database {self.path} has schema version {version}, newer than this "
                f"sidecar understands ({LATEST}); upgrade the app or use another --data-dir"
            )
        for target in range(version + 1, LATEST + 1):
            script = MIGRATIONS[target - 1]
            log.info("migrating store %s to schema v%d", self.path, target)
            await self.conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;"
            )

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            await conn.close()

    async def scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        async with self._lock, self.conn.execute(sql, tuple(params)) as cur:
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock, self.conn.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        async with self._lock, self.conn.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one write in its own transaction; returns the changed row count."""
        async with self.transaction() as conn, conn.execute(sql, tuple(params)) as cur:
            return cur.rowcount

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolls back if the block raises."""
        async with self._lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            else:
                await self.conn.execute("COMMIT")

    async def integrity_check(self) -> str:
        return str(await self.scalar("PRAGMA integrity_check"))
