"""Per-agent sync cursors for cloud sources (a JSON value each): where the next run resumes."""

from __future__ import annotations

import json
from typing import Any

from sidecar.clock import now_iso
from sidecar.store.db import Database


class CursorStore:
    """Never holds secrets: only positions (history ids, delta links, timestamps, seen ids)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, agent_id: str) -> dict[str, Any] | None:
        raw = await self.db.scalar("SELECT cursor FROM cursors WHERE agent_id = ?", (agent_id,))
        return json.loads(raw) if raw else None

    async def set(self, agent_id: str, cursor: dict[str, Any], conn: Any = None) -> None:
        """Write ``cursor``; pass the open outbox transaction's ``conn`` to commit together."""
        sql = ("INSERT INTO cursors (agent_id, cursor, updated_at) VALUES (?, ?, ?) "
               "ON CONFLICT (agent_id) DO UPDATE SET cursor = excluded.cursor, "
               "updated_at = excluded.updated_at")
        params = (agent_id, json.dumps(cursor, sort_keys=True), now_iso())
        if conn is not None:
            await conn.execute(sql, params)
        else:
            await self.db.execute(sql, params)

    async def delete(self, agent_id: str) -> None:
        await self.db.execute("DELETE FROM cursors WHERE agent_id = ?", (agent_id,))
