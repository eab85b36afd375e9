"""Per-agent, per-file state: what was seen, what it hashed to, what it was extracted with."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sidecar.clock import now_iso
from sidecar.store.db import Database

#: A file that needs nothing until its size/mtime or the extraction key change.
SETTLED = ("extracted", "skipped", "refused")


@dataclass(frozen=True, slots=True)
class FileState:
    path: str
    size: int | None
    mtime_ns: int | None
    content_hash: str | None
    extraction_key: str | None
    status: str
    #: JSON text; decoded only when asked for (a 20k-file rescan never needs it).
    last_result_json: str | None

    @property
    def last_result(self) -> dict[str, Any] | None:
        return json.loads(self.last_result_json) if self.last_result_json else None

    def settled_for(self, size: int, mtime_ns: int, extraction_key: str) -> bool:
        """Unchanged since it was last handled with this key: no read, no model call."""
        if self.status not in SETTLED or self.size != size or self.mtime_ns != mtime_ns:
            return False
        return self.status != "extracted" or self.extraction_key == extraction_key


_SELECT = ("SELECT path, size, mtime_ns, content_hash, extraction_key, status, last_result "
           "FROM file_state")


def _state(r: Any) -> FileState:
    return FileState(r[0], r[1], r[2], r[3], r[4], r[5], r[6])


class FileStateStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self, agent_id: str) -> dict[str, FileState]:
        rows = await self.db.fetchall(f"{_SELECT} WHERE agent_id = ?", (agent_id,))
        return {r["path"]: _state(r) for r in rows}

    async def get(self, agent_id: str, path: str) -> FileState | None:
        row = await self.db.fetchone(f"{_SELECT} WHERE agent_id = ? AND path = ?",
                                     (agent_id, path))
        return None if row is None else _state(row)

    async def record(self, agent_id: str, path: str, *, size: int | None, mtime_ns: int | None,
                     content_hash: str | None, extraction_key: str | None, status: str,
                     last_result: dict[str, Any] | None = None, run_id: str | None = None,
                     conn: Any = None) -> None:
        sql = ("INSERT INTO file_state (agent_id, path, size, mtime_ns, content_hash, "
               "extraction_key, status, last_result, last_run_id, updated_at) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent_id, path) DO UPDATE SET "
               "size = excluded.size, mtime_ns = excluded.mtime_ns, "
               "content_hash = excluded.content_hash, extraction_key = excluded.extraction_key, "
               "status = excluded.status, last_result = excluded.last_result, "
               "last_run_id = excluded.last_run_id, updated_at = excluded.updated_at")
        params = (agent_id, path, size, mtime_ns, content_hash, extraction_key, status,
                  json.dumps(last_result, ensure_ascii=False) if last_result is not None
                  else None, run_id, now_iso())
        if conn is not None:
            await conn.execute(sql, params)
        else:
            await self.db.execute(sql, params)

    async def mark_deleted(self, agent_id: str, paths: Iterable[str]) -> int:
        paths = list(paths)
        if not paths:
            return 0
        ts = now_iso()
        async with self.db.transaction() as conn:
            await conn.executemany(
                "UPDATE file_state SET status = 'deleted', updated_at = ? "
                "WHERE agent_id = ? AND path = ?", [(ts, agent_id, p) for p in paths])
        return len(paths)
