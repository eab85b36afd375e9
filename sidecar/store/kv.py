"""Small JSON values the daemon keeps between launches (OAuth client ids, never secrets)."""

from __future__ import annotations

import json
from typing import Any

from sidecar.clock import now_iso
from sidecar.store.db import Database

#: The app's project list as its last ``projects_sync`` sent it (runs link records to them).
PROJECTS_KEY = "app_projects"


class KeyValueStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, key: str) -> Any:
        raw = await self.db.scalar("SELECT value FROM settings WHERE key = ?", (key,))
        return json.loads(raw) if raw is not None else None

    async def set(self, key: str, value: Any) -> None:
        await self.db.execute(
            "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at", (key, json.dumps(value), now_iso()))
