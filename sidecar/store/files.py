"""Per-agent, per-file state: what was seen, what it hashed to, what it was extracted with.

A file skipped for a reason that can heal without the file changing (permission denied, a
lock, an I/O error) is stored as ``retry``, not settled: the next scan reads it again, then
later scans back off (:func:`retry_delay`); a watcher event on the file retries it at once.
The run log keeps every skip of every run (:class:`RunSkipLog`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.clock import now_iso
from sidecar.store.db import Database

#: A file that needs nothing until its size/mtime or the extraction key change.
SETTLED = ("extracted", "skipped", "refused")
#: A transient skip: read again at the next scan (with backoff) or on a watcher event.
RETRY = "retry"
#: Backoff between scan-driven retries of a transient skip: the first retry is the next
#: scan, then 1 min, 2 min, 4 min … up to 1 hour.
RETRY_FIRST_DELAY = 60.0
RETRY_MAX_DELAY = 3600.0


def retry_delay(attempts: int) -> float:
    """Seconds after the ``attempts``-th failed read before a scan tries the file again."""
    if attempts <= 1:
        return 0.0
    return min(RETRY_FIRST_DELAY * 2 ** (attempts - 2), RETRY_MAX_DELAY)


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

    @property
    def attempts(self) -> int:
        """Failed reads in a row of a ``retry`` file (0 for any other status)."""
        if self.status != RETRY:
            return 0
        return int((self.last_result or {}).get("attempts", 1))

    def backing_off(self, size: int, mtime_ns: int, now: float | None = None) -> bool:
        """A transient skip, unchanged, whose backoff has not run out: a scan leaves it."""
        if self.status != RETRY or self.size != size or self.mtime_ns != mtime_ns:
            return False
        retry_at = float((self.last_result or {}).get("retry_at", 0.0))
        return (time.time() if now is None else now) < retry_at


@dataclass(frozen=True, slots=True)
class Progress:
    """What handling one work item changes in its source's memory: the item's state row and,
    when it moved, the agent's cursor. Written by :meth:`sidecar.store.Store.record_progress`,
    in the same transaction as the item's records."""

    agent_id: str
    #: The item's key within the agent (a resolved path, a message id …).
    key: str
    status: str
    extraction_key: str | None
    content_hash: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    result: Mapping[str, Any] | None = None
    run_id: str | None = None
    cursor: Mapping[str, Any] | None = None


_SELECT = ("SELECT path, size, mtime_ns, content_hash, extraction_key, status, last_result "
           "FROM file_state")
_UPSERT = ("INSERT INTO file_state (agent_id, path, size, mtime_ns, content_hash, "
           "extraction_key, status, last_result, last_run_id, updated_at) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent_id, path) DO UPDATE SET "
           "size = excluded.size, mtime_ns = excluded.mtime_ns, "
           "content_hash = excluded.content_hash, extraction_key = excluded.extraction_key, "
           "status = excluded.status, last_result = excluded.last_result, "
           "last_run_id = excluded.last_run_id, updated_at = excluded.updated_at")


def _state(r: Any) -> FileState:
    return FileState(r[0], r[1], r[2], r[3], r[4], r[5], r[6])


class FileStateStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self, agent_id: str) -> dict[str, FileState]:
        rows = await self.db.fetchall(f"{_SELECT} WHERE agent_id = ?", (agent_id,))
        return {r["path"]: _state(r) for r in rows}

    async def record(self, agent_id: str, path: str, *, size: int | None, mtime_ns: int | None,
                     content_hash: str | None, extraction_key: str | None, status: str,
                     last_result: dict[str, Any] | None = None, run_id: str | None = None,
                     conn: Any = None) -> None:
        params = (agent_id, path, size, mtime_ns, content_hash, extraction_key, status,
                  json.dumps(last_result, ensure_ascii=False) if last_result is not None
                  else None, run_id, now_iso())
        if conn is not None:
            await conn.execute(_UPSERT, params)
        else:
            await self.db.execute(_UPSERT, params)

    async def record_many(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Several :meth:`record` calls (keyword dicts incl. ``agent_id`` and ``path``) in
        one transaction: 20,000 skipped files are 40 commits, not 20,000."""
        if not rows:
            return
        ts = now_iso()
        params = [(r["agent_id"], r["path"], r.get("size"), r.get("mtime_ns"),
                   r.get("content_hash"), r.get("extraction_key"), r["status"],
                   json.dumps(r["last_result"], ensure_ascii=False)
                   if r.get("last_result") is not None else None, r.get("run_id"), ts)
                  for r in rows]
        async with self.db.transaction() as conn:
            await conn.executemany(_UPSERT, params)

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


def retry_result(reason: str, message: str, previous: FileState | None,
                 now: float | None = None) -> dict[str, Any]:
    """``last_result`` of a transient skip: how often it failed and when a scan may retry."""
    attempts = (previous.attempts if previous is not None else 0) + 1
    at = (time.time() if now is None else now) + retry_delay(attempts)
    return {"reason": reason, "message": message, "attempts": attempts, "retry_at": at}


@dataclass(frozen=True, slots=True)
class SkipRow:
    """One skipped item of one run, for the run log."""

    item: str
    reason: str
    transient: bool
    message: str


class RunSkipLog:
    """Every item each run skipped, permanent or to be retried (the full list; frames show
    the first few and the totals)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, run_id: str, agent_id: str, rows: Sequence[SkipRow]) -> None:
        if not rows:
            return
        async with self.db.transaction() as conn:
            await conn.executemany(
                "INSERT OR REPLACE INTO run_skips (run_id, agent_id, item, reason, kind, message) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, agent_id, r.item, r.reason,
                  "transient" if r.transient else "permanent", r.message) for r in rows])

    async def counts(self, run_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        """run id → {"permanent": n, "transient": m} (runs without skips are left out)."""
        ids = list(dict.fromkeys(run_ids))
        out: dict[str, dict[str, int]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = await self.db.fetchall(
                "SELECT run_id, kind, count(*) AS n FROM run_skips WHERE run_id IN "
                f"({', '.join('?' * len(chunk))}) GROUP BY run_id, kind", chunk)
            for r in rows:
                out.setdefault(r["run_id"], {"permanent": 0, "transient": 0})[r["kind"]] = r["n"]
        return out

    async def list(self, run_id: str, *, limit: int = 1000, offset: int = 0
                   ) -> list[Mapping[str, Any]]:
        rows = await self.db.fetchall(
            "SELECT item, reason, kind, message FROM run_skips WHERE run_id = ? "
            "ORDER BY rowid LIMIT ? OFFSET ?", (run_id, limit, offset))
        return [dict(r) for r in rows]

    def tally(self, run_id: str, agent_id: str) -> SkipTally:
        return SkipTally(self, run_id, agent_id)


#: Skips listed one by one in a run's ``errors`` (and so in every frame that carries the
#: run); the rest are counted in one line, so both fit the 50 lines a frame carries
#: (``runview.ERRORS_IN_FRAME``). The run log (``run_skips``) keeps every one.
SKIPS_LISTED = 49
_BATCH = 500


class SkipTally:
    """One run's skips: written to the run log in batches, listed in ``errors`` up to
    :data:`SKIPS_LISTED`, counted apart (permanent / to retry)."""

    def __init__(self, log: RunSkipLog, run_id: str, agent_id: str) -> None:
        self.log, self.run_id, self.agent_id = log, run_id, agent_id
        self.permanent = 0
        self.transient = 0
        self._rows: list[SkipRow] = []

    async def add(self, item: str, reason: str, transient: bool, message: str) -> str | None:
        """Note a skip; returns its line for the run's errors, or None past the cap."""
        if transient:
            self.transient += 1
        else:
            self.permanent += 1
        self._rows.append(SkipRow(item, reason, transient, message))
        if len(self._rows) >= _BATCH:
            await self.flush()
        if self.permanent + self.transient > SKIPS_LISTED:
            return None
        return f"{message} (skipped: {reason})" + ("; will be retried" if transient else "")

    async def flush(self) -> None:
        rows, self._rows = self._rows, []
        await self.log.add(self.run_id, self.agent_id, rows)

    async def finish(self) -> list[str]:
        """Write what is left; the line counting what was not listed, if anything was not."""
        await self.flush()
        unlisted = self.permanent + self.transient - SKIPS_LISTED
        if unlisted <= 0:
            return []
        return [f"… and {unlisted:,} more skipped file(s) not listed here "
                f"({self.permanent:,} skipped in all until they change, {self.transient:,} "
                "to retry); the run log has every one"]
