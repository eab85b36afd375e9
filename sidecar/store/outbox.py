"""The durable outbox: every item is written here before it is sent, keyed so it lands once."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sidecar import failpoints
from sidecar.clock import now_iso
from sidecar.domain import record_title
from sidecar.store.db import Database
from sidecar.store.held import HeldStore, release_settled
from sidecar.store.runs import credit_run, mark_run_delivered, mark_settled_runs

#: A call the app answered with a retryable error is sent again after 1 s, doubling up to 5 min.
RETRY_BACKOFF = (1.0, 300.0)


def retry_delay(failures: int, base: float = RETRY_BACKOFF[0],
                cap: float = RETRY_BACKOFF[1]) -> float:
    """Seconds before the next try after ``failures`` retryable errors (1 → base)."""
    return min(cap, base * 2.0 ** min(max(failures, 1) - 1, 64))


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


#: Scope of the stable keys (no agent id, no data-dir state): bump it only with a migration.
KEY_SCOPE = "k2"


def normalised_title(data: dict[str, Any]) -> str:
    """The record's title as the de-duplication rule sees it: Unicode NFKC, case-folded,
    whitespace collapsed, surrounding punctuation dropped ("Send the logo." = "send the logo")."""
    text = " ".join(unicodedata.normalize("NFKC", record_title(data)).casefold().split())
    return text.strip(" .,;:!?-–—…\"'`()[]*_")


def stable_key(source_identity: str, table: str, data: dict[str, Any]) -> str:
    """``k2:<source>:<table>:<title>``: the same suggestion from the same document keeps its
    key when the agent is re-created over the same folder or account, or the data dir reset."""
    title = hashlib.sha256(normalised_title(data).encode("utf-8")).hexdigest()[:16]
    return idempotency_key(KEY_SCOPE, source_identity, table, title)


def legacy_key(agent_id: str, source_key: str, table: str, data: dict[str, Any]) -> str:
    """The key format before ``k2`` (agent id and absolute path in it): still honoured, so an
    upgrade does not re-suggest what the app already has."""
    what = " ".join(record_title(data).lower().split())
    title = hashlib.sha256(what.encode("utf-8")).hexdigest()[:16]
    return idempotency_key(agent_id, source_key, table, title)


def _legacy_of(item: NewEntry) -> str | None:
    source = item.meta.get("source") if isinstance(item.meta, dict) else None
    key = source.get("key") if isinstance(source, dict) else None
    if not isinstance(key, str):
        return None
    old = legacy_key(item.agent_id, key, item.table, item.data)
    return None if old == item.idempotency_key else old


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An extracted record about to be queued as an outbox entry (``data`` without the review
    flags)."""

    idempotency_key: str
    agent_id: str
    run_id: str | None
    table: str
    data: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Entry:
    """A queued entry as read back for sending."""

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
    #: The app could not store it this time (its database was busy): send it again later.
    retryable: bool = False
    #: The id the app gave the record (``result.id``): what records held for it carry.
    result_id: str | int | None = None


class Applied(list[str]):
    """The call ids a settle applied, with what follows from them: when each retried call
    is due again (epoch seconds) and the runs whose records reached a final state."""

    def __init__(self) -> None:
        super().__init__()
        self.retry_at: dict[str, float] = {}
        self.runs: set[str] = set()


class OutboxStore:
    """Queue, read back in order, and settle entries in batches (one transaction per batch)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def enqueue(self, items: Sequence[NewEntry], conn: Any = None) -> int:
        """Insert items (in ``conn``'s transaction, or a new one); a queued key is ignored.

        Returns how many were added.
        """
        if not items:
            return 0
        if conn is None:
            async with self.db.transaction() as own:
                return await self.enqueue(items, own)
        items = await self._without_legacy(items, conn)
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

    @staticmethod
    async def _without_legacy(items: Sequence[NewEntry], conn: Any) -> list[NewEntry]:
        """Drop records queued before under the old key format (same agent, document, table
        and title): the app has them already; the stable key is for new records only."""
        legacy = {i.idempotency_key: old for i in items if (old := _legacy_of(i))}
        if not legacy:
            return list(items)
        olds = list(set(legacy.values()))
        known: set[str] = set()
        for start in range(0, len(olds), 500):
            part = olds[start:start + 500]
            async with conn.execute(
                    f"SELECT idempotency_key FROM outbox WHERE idempotency_key IN "
                    f"({','.join('?' * len(part))})", part) as cur:
                known |= {r[0] for r in await cur.fetchall()}
        return [i for i in items if legacy.get(i.idempotency_key) not in known]

    async def pending_after(self, seq: int, limit: int = 500) -> list[Entry]:
        rows = await self.db.fetchall(
            "SELECT * FROM outbox WHERE state = 'pending' AND seq > ? AND next_at IS NULL "
            "ORDER BY seq LIMIT ?", (seq, limit))
        return [_entry(r) for r in rows]

    async def due_retries(self, now: float, limit: int = 512) -> list[Entry]:
        """Calls answered with a retryable error whose wait is over, oldest first."""
        rows = await self.db.fetchall(
            "SELECT * FROM outbox WHERE next_at IS NOT NULL AND next_at <= ? "
            "AND state = 'pending' ORDER BY seq LIMIT ?", (now, limit))
        return [_entry(r) for r in rows]

    async def next_retry_at(self, after: float) -> float | None:
        """When the next retried call falls due (after ``after``), if any waits."""
        value = await self.db.scalar(
            "SELECT min(next_at) FROM outbox WHERE next_at IS NOT NULL AND next_at > ? "
            "AND state = 'pending'", (after,))
        return None if value is None else float(value)

    async def run_counts(self, run_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        """Per run: records extracted (queued), delivered (acked), failed and pending."""
        ids = list(dict.fromkeys(run_ids))
        out = {r: {"extracted": 0, "delivered": 0, "failed": 0, "pending": 0} for r in ids}
        names = {"acked": "delivered", "failed": "failed", "pending": "pending"}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            rows = await self.db.fetchall(
                f"SELECT run_id, state, count(*) AS n FROM outbox WHERE run_id IN "
                f"({','.join('?' * len(part))}) GROUP BY run_id, state", part)
            for row in rows:
                counts = out[row["run_id"]]
                counts[names[row["state"]]] += row["n"]
                counts["extracted"] += row["n"]
        for run_id, n in (await HeldStore(self.db).by_run(ids)).items():
            out[run_id]["pending"] += n  # waiting for another insert's id
            out[run_id]["extracted"] += n
        return out

    async def mark_settled_runs(self) -> int:
        """At start-up: closed runs with nothing pending that were never marked (a stop
        between a run's close and its mark, runs from before v3) are delivered as of their
        close; returns how many."""
        return await mark_settled_runs(self.db)

    async def mark_delivered(self, run_id: str) -> dict[str, Any] | None:
        """Once a closed run has nothing pending, mark it delivered and return its row (with
        counts); None if it is still running, has pending records or was marked before."""
        record = await mark_run_delivered(self.db, run_id)
        if record is None:
            return None
        return {**record, **(await self.run_counts([run_id]))[run_id]}

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

    async def count_waiting(self, now: float, run_id: str | None = None) -> int:
        """Pending calls waiting out a retry backoff (not due before ``now``)."""
        sql = "SELECT count(*) FROM outbox WHERE next_at > ? AND state = 'pending'"
        if run_id is None:
            return int(await self.db.scalar(sql, (now,)) or 0)
        return int(await self.db.scalar(sql + " AND run_id = ?", (now, run_id)) or 0)

    async def settle(self, outcomes: Iterable[Settled]) -> Applied:
        """Mark acks/failures and credit their runs, atomically; returns the call ids applied.

        A call already settled is skipped, so a duplicate ack never counts twice. A retryable
        error keeps the call pending with its next try time (``next_at``): it survives a
        restart and counts for its run only once it is acked or fails for good.
        """
        outcomes = list(outcomes)
        applied = Applied()
        if not outcomes:
            return applied
        ts, now = now_iso(), time.time()
        by_id = {o.call_id: o for o in outcomes}  # a repeated ack in one batch counts once
        runs: dict[str, tuple[int, list[str]]] = {}
        marks = ",".join("?" * len(by_id))
        # a few statements per batch, not per ack: each aiosqlite call is a thread hop
        async with self.db.transaction() as conn:
            # "+state": look the batch up by call_id; on the (state, seq) index SQLite would
            # walk every pending row per batch, O(backlog) under a 100k backlog.
            async with conn.execute(
                f"SELECT call_id, run_id, table_name, meta, attempts FROM outbox "
                f"WHERE +state = 'pending' AND call_id IN ({marks})", list(by_id)) as cur:
                rows = await cur.fetchall()
            updates, retries, final = [], [], []
            for row in rows:
                o = by_id[row["call_id"]]
                applied.append(o.call_id)
                if o.retryable and o.error is not None:
                    due = now + retry_delay(row["attempts"] + 1)
                    retries.append((o.error, due, o.call_id))
                    applied.retry_at[o.call_id] = due
                    continue
                state = "failed" if o.error is not None else "acked"
                rid = None if o.error is not None or o.result_id is None else json.dumps(
                    o.result_id)
                updates.append((state, o.error, ts, rid, o.call_id))
                final.append((o.call_id, state, rid, o.error))
                if not row["run_id"]:
                    continue
                applied.runs.add(row["run_id"])
                created, errors = runs.setdefault(row["run_id"], (0, []))
                if o.error is None:
                    runs[row["run_id"]] = (created + 1, errors)
                else:
                    where = json.loads(row["meta"]).get("source", {}).get("path", "?")
                    errors.append(f"Insert failed ({row['table_name']}, {where!r}): "
                                  f"{o.error}")
            await conn.executemany(
                "UPDATE outbox SET state = ?, last_error = ?, acked_at = ?, result_id = ?, "
                "attempts = attempts + 1 WHERE call_id = ? AND state = 'pending'", updates)
            await conn.executemany(
                "UPDATE outbox SET last_error = ?, next_at = ?, attempts = attempts + 1 "
                "WHERE call_id = ? AND state = 'pending'", retries)
            # what waited for these inserts' ids is queued in this same transaction
            for run_id, lines in (await release_settled(conn, final, self.enqueue,
                                                           NewEntry)).items():
                if run_id:
                    applied.runs.add(run_id)
                    runs.setdefault(run_id, (0, []))[1].extend(lines)
            for run_id, (created, errors) in runs.items():
                await credit_run(conn, run_id, created, errors)
            failpoints.hit("outbox.settle")  # before COMMIT (it runs in aiosqlite's thread)
        failpoints.hit("outbox.settled")  # after COMMIT returned
        return applied

