"""The store facade: one database, one repository per table family."""

from __future__ import annotations

from pathlib import Path

from sidecar.store.agents import AgentStore
from sidecar.store.cursors import CursorStore
from sidecar.store.db import Database
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

    async def open(self) -> Store:
        await self.db.open()
        return self

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> Store:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ["Database", "Store"]
