"""The durable outbox: every item is written here before it is sent, keyed so it lands once."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sidecar import failpoints
from sidecar.clock import now_iso
from sidecar.store.db import Database
from sidecar.store.runs import final_status


def call_id_for(idempotency_key: str) -> str:
    """Stable tool_call id: a re-send (after a timeout or a restart) carries the same id."""
    return "c_" + hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:24]


def idempotency_key(agent_id: str, *parts: object) -> str:
    """``agent:part:part…``; long parts are hashed so keys stay short and free of user text."""
    out = [agent_id]
    for part in parts:
        text = str(part)
        if len(text) > 24 or ":" in text:
            text = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        out.append(text)
    return ":".join(out)


@dataclass(frozen=True, slots=True)
class NewItem:
    """An extracted item about to be queued (``data`` without the review flags)."""

    idempotency_key: str
    agent_id: str
    run_id: str | None
    table: str
    data: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Entry:
    """A queued item as read back for sending."""

    seq: int
    call_id: str
    idempotency_key: str
    agent_id: str
    run_id: str | None
    table: str
    data: dict[str, Any]
    meta: dict[str, Any]


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(seq=row["seq"], call_id=row["call_id"], idempotency_key=row["idempotency_key"],
                 agent_id=row["agent_id"], run_id=row["run_id"], table=row["table_name"],
                 data=json.loads(row["data"]), meta=json.loads(row["meta"]))


@dataclass(frozen=True, slots=True)
class Settled:
    """The outcome Electron reported for one call."""

    call_id: str
    error: str | None = None


class OutboxStore:
    """Queue, read back in order, and settle entries in batches (one transaction per batch)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def enqueue(self, items: Sequence[NewItem], conn: Any = None) -> int:
        """Insert items (in ``conn``'s transaction, or a new one); a queued key is ignored.

        Returns how many were added.
        """
        if not items:
            return 0
        if conn is None:
            async with self.db.transaction() as own:
                return await self.enqueue(items, own)
        ts = now_iso()
        rows = [(i.idempotency_key, call_id_for(i.idempotency_key), i.agent_id, i.run_id,
                 i.table, json.dumps(i.data, ensure_ascii=False),
                 json.dumps(i.meta, ensure_ascii=False), ts) for i in items]
        before = conn.total_changes
        await conn.executemany(
            "INSERT OR IGNORE INTO outbox (idempotency_key, call_id, agent_id, run_id, "
            "table_name, data, meta, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        failpoints.hit("outbox.enqueue")
        return conn.total_changes - before

    async def pending_after(self, seq: int, limit: int = 500) -> list[Entry]:
        rows = await self.db.fetchall(
            "SELECT * FROM outbox WHERE state = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
            (seq, limit))
        return [_entry(r) for r in rows]

    async def for_run(self, run_id: str) -> list[Entry]:
        """Everything a run queued, in order (whatever its delivery state)."""
        rows = await self.db.fetchall("SELECT * FROM outbox WHERE run_id = ? ORDER BY seq",
                                      (run_id,))
        return [_entry(r) for r in rows]

    async def by_call_id(self, call_id: str) -> tuple[int, str] | None:
        row = await self.db.fetchone("SELECT seq, state FROM outbox WHERE call_id = ?",
                                     (call_id,))
        return None if row is None else (row["seq"], row["state"])

    async def count(self, state: str = "pending", run_id: str | None = None) -> int:
        if run_id is None:
            return int(await self.db.scalar(
                "SELECT count(*) FROM outbox WHERE state = ?", (state,)) or 0)
        return int(await self.db.scalar(
            "SELECT count(*) FROM outbox WHERE state = ? AND run_id = ?", (state, run_id)) or 0)

    async def settle(self, outcomes: Iterable[Settled]) -> list[str]:
        """Mark acks/failures and credit their runs, atomically; returns the call ids applied.

        A call already settled is skipped, so a duplicate ack never counts twice.
        """
        outcomes = list(outcomes)
        if not outcomes:
            return []
        ts = now_iso()
        by_id = {o.call_id: o for o in outcomes}  # a repeated ack in one batch counts once
        applied: list[str] = []
        runs: dict[str, tuple[int, list[str]]] = {}
        marks = ",".join("?" * len(by_id))
        # a few statements per batch, not per ack: each aiosqlite call is a thread hop
        async with self.db.transaction() as conn:
            # "+state": look the batch up by call_id; on the (state, seq) index SQLite would
            # walk every pending row per batch, O(backlog) under a 100k backlog.
            async with conn.execute(
                f"SELECT call_id, run_id, table_name, meta FROM outbox "
                f"WHERE +state = 'pending' AND call_id IN ({marks})", list(by_id)) as cur:
                rows = await cur.fetchall()
            updates = []
            for row in rows:
                o = by_id[row["call_id"]]
                updates.append(("failed" if o.error is not None else "acked", o.error, ts,
                                o.call_id))
                applied.append(o.call_id)
                if not row["run_id"]:
                    continue
                created, errors = runs.setdefault(row["run_id"], (0, []))
                if o.error is None:
                    runs[row["run_id"]] = (created + 1, errors)
                else:
                    where = json.loads(row["meta"]).get("source", {}).get("path", "?")
                    errors.append(f"Insert failed ({row['table_name']}, {where!r}): "
                                  f"{o.error}")
            await conn.executemany(
                "UPDATE outbox SET state = ?, last_error = ?, acked_at = ?, "
                "attempts = attempts + 1 WHERE call_id = ? AND state = 'pending'", updates)
            for run_id, (created, errors) in runs.items():
                await self._credit_run(conn, run_id, created, errors)
            failpoints.hit("outbox.settle")  # before COMMIT (it runs in aiosqlite's thread)
        failpoints.hit("outbox.settled")  # after COMMIT returned
        return applied

    @staticmethod
    async def _credit_run(conn: Any, run_id: str, created: int, errors: list[str]) -> None:
        async with conn.execute("SELECT status, items_created, errors FROM runs WHERE id = ?",
                                (run_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return
        all_errors = json.loads(row["errors"]) + errors
        total = row["items_created"] + created
        status = row["status"]
        if status not in ("running", "cancelled"):
            status = final_status(all_errors, total)
        await conn.execute(
            "UPDATE runs SET items_created = ?, errors = ?, status = ? WHERE id = ?",
            (total, json.dumps(all_errors, ensure_ascii=False), status, run_id))
