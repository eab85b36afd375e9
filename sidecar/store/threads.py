"""Which tasks the sidecar queued from which email thread (see :mod:`sidecar.threads`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sidecar.clock import now_iso
from sidecar.store.db import Database


class ThreadStore:
    """Remember a message's tasks under its thread keys; find them from a reply."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    async def remember(conn: Any, keys: Sequence[str], tasks: Sequence[tuple[str, str]],
                       source: str) -> None:
        """In ``conn``'s transaction: ``tasks`` (call id, title) came from ``source``."""
        now = now_iso()
        await conn.executemany(
            "INSERT OR IGNORE INTO thread_tasks (thread_key, call_id, title, source, "
            "created_at) VALUES (?, ?, ?, ?, ?)",
            [(k, cid, title[:300], source, now) for k in keys for cid, title in tasks])

    async def tasks_for(self, keys: Sequence[tuple[str, str]], source: str
                        ) -> tuple[list[tuple[str, str]], str | None]:
        """The tasks of the first key (surest first) that has any, not from ``source``
        itself, oldest first; and how that key was found."""
        for key, how in keys:
            rows = await self.db.fetchall(
                "SELECT call_id, title FROM thread_tasks WHERE thread_key = ? AND source != ? "
                "ORDER BY created_at, rowid", (key, source))
            if rows:
                return [(r["call_id"], r["title"]) for r in rows], how
        return [], None
