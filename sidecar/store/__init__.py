"""The store facade: one database, one repository per table family."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sidecar.store.agents import AgentStore
from sidecar.store.cursors import CursorStore
from sidecar.store.db import Database
from sidecar.store.files import FileStateStore, Progress, RunSkipLog
from sidecar.store.held import HeldStore
from sidecar.store.kv import KeyValueStore
from sidecar.store.outbox import OutboxStore
from sidecar.store.runs import RunStore


class Store:
    """Opens the database once and hands out repositories that share its writer."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path)
        self.agents = AgentStore(self.db)
        self.runs = RunStore(self.db)
        self.outbox = OutboxStore(self.db)
        self.cursors = CursorStore(self.db)
        self.kv = KeyValueStore(self.db)
        self.files = FileStateStore(self.db)
        self.skips = RunSkipLog(self.db)
        self.held = HeldStore(self.db)

    async def record_progress(self, progress: Progress, conn: Any = None) -> None:
        """An item's state and its agent's cursor, together: inside the caller's open
        transaction (the one queuing the item's records) when given, else in one of its own."""
        if conn is None:
            async with self.db.transaction() as own:
                await self._write_progress(progress, own)
        else:
            await self._write_progress(progress, conn)

    async def _write_progress(self, progress: Progress, conn: Any) -> None:
        await self.files.record(
            progress.agent_id, progress.key, size=progress.size, mtime_ns=progress.mtime_ns,
            content_hash=progress.content_hash, extraction_key=progress.extraction_key,
            status=progress.status,
            last_result=None if progress.result is None else dict(progress.result),
            run_id=progress.run_id, conn=conn)
        if progress.cursor is not None:
            await self.cursors.set(progress.agent_id, dict(progress.cursor), conn=conn)

    async def open(self) -> Store:
        await self.db.open()
        return self

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> Store:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ["Database", "Progress", "Store"]
