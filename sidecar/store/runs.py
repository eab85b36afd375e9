"""The run log, with the seed's statuses and its success/partial/error rule."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from sidecar.clock import now_iso
from sidecar.diskfull import DISK_FULL, is_disk_full
from sidecar.errors import StoreError
from sidecar.ratelimit import Backoff, RateLimitedLog
from sidecar.redaction import redact
from sidecar.store.db import Database

log = logging.getLogger(__name__)

#: Retries of a run's closing write the disk had no room for: 0.5 s doubling up to 10 s.
LATE_CLOSE_BACKOFF = (0.5, 10.0)


def final_status(errors: list[str], items_created: int, *, cancelled: bool = False) -> str:
    """The seed's rule: errors and nothing created → error; errors and some → partial.

    A run stopped by a full disk did not finish its work: it is an error whatever it made.
    """
    if cancelled:
        return "cancelled"
    if any(e.startswith(DISK_FULL) for e in errors):
        return "error"
    if errors and items_created == 0:
        return "error"
    if errors:
        return "partial"
    return "success"


async def credit_run(conn: Any, run_id: str, created: int, errors: list[str]) -> None:
    """Add inserts acked (``created``) and failed (``errors``) to a run, in the caller's
    transaction (the outbox's settle): a run's accounting lives here, the settle's atomicity
    with the caller. A closed run's status is worked out again by the seed's rule."""
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


#: A closed run is delivered once nothing of it is pending in the outbox or held.
_SETTLED = ("status != 'running' AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.run_id = "
            "runs.id AND state = 'pending') AND NOT EXISTS (SELECT 1 FROM held WHERE "
            "held.run_id = runs.id)")


async def mark_settled_runs(db: Database) -> int:
    """At start-up: every closed, settled run never marked is delivered as of its close."""
    return await db.execute(f"UPDATE runs SET delivered_at = coalesce(completed_at, ?) "
                            f"WHERE delivered_at IS NULL AND {_SETTLED}", (now_iso(),))


async def mark_run_delivered(db: Database, run_id: str) -> dict[str, Any] | None:
    """``run_id``'s record if it was closed and settled and is marked delivered now, else
    None."""
    if not await db.execute(f"UPDATE runs SET delivered_at = ? WHERE id = ? AND "
                            f"delivered_at IS NULL AND {_SETTLED}", (now_iso(), run_id)):
        return None
    row = await db.fetchone("SELECT * FROM runs WHERE id = ?", (run_id,))
    return None if row is None else _row(row)


def _row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["errors"] = json.loads(d["errors"])
    return d


_CLOSING_SQL = ("SELECT *, (SELECT count(*) FROM outbox WHERE run_id = ? AND "
                "state = 'acked') AS acked FROM runs WHERE id = ?")


def _closed(row: sqlite3.Row, documents: int, errors: list[str],
            cancelled: bool) -> dict[str, Any]:
    """A run row as closing makes it; a server may quote a key or token back in its error
    text, and the run log is in SQLite and in run_finished frames, so errors are redacted."""
    record = _row(row)
    record.pop("acked", None)
    all_errors = [redact(e) for e in errors] + record["errors"]
    record.update(status=final_status(all_errors, row["acked"], cancelled=cancelled),
                  items_processed=documents, items_created=row["acked"],
                  errors=all_errors, completed_at=now_iso())
    return record


class RunStore:
    """Create, finish and query runs; interrupted runs are closed on start-up."""

    def __init__(self, db: Database) -> None:
        self.db = db
        #: run id → (complete() arguments, what to do once written): closes not yet written
        self._late: dict[str, tuple[dict[str, Any], Callable[[], Awaitable[None]] | None]] = {}
        self._late_task: asyncio.Task[None] | None = None

    async def start(self, agent_id: str, agent_kind: str, trigger: str) -> dict[str, Any]:
        run_id = "r_" + secrets.token_hex(8)
        started = now_iso()
        await self.db.execute(
            "INSERT INTO runs (id, agent_id, agent_kind, trigger, status, started_at) "
            "VALUES (?, ?, ?, ?, 'running', ?)",
            (run_id, agent_id, agent_kind, trigger, started),
        )
        return await self.get(run_id)  # type: ignore[return-value]

    async def complete(self, run_id: str, *, documents: int, errors: list[str],
                       cancelled: bool = False) -> dict[str, Any]:
        """Close a run: ``documents`` read (the seed's ``items_processed`` column), records
        created (``items_created``: acked outbox rows); insert errors recorded while the run
        went on are kept; the status follows the seed's rule (or is cancelled)."""
        async with self.db.transaction() as conn:
            async with conn.execute(_CLOSING_SQL, (run_id, run_id)) as cur:
                row = await cur.fetchone()
            if row is None:
                raise ValueError(f"no run {run_id!r}")
            closed = _closed(row, documents, errors, cancelled)
            await conn.execute(
                "UPDATE runs SET status = ?, items_processed = ?, items_created = ?, "
                "errors = ?, completed_at = ? WHERE id = ?",
                (closed["status"], documents, closed["items_created"],
                 json.dumps(closed["errors"], ensure_ascii=False), closed["completed_at"],
                 run_id))
        return await self.get(run_id)  # type: ignore[return-value]

    async def closing_record(self, run_id: str, *, documents: int, errors: list[str],
                             cancelled: bool = False) -> dict[str, Any]:
        """The record :meth:`complete` would write, read only: what run_finished carries when
        the write itself cannot happen (a full disk)."""
        row = await self.db.fetchone(_CLOSING_SQL, (run_id, run_id))
        if row is None:
            raise ValueError(f"no run {run_id!r}")
        return _closed(row, documents, errors, cancelled)

    def complete_later(self, run_id: str, *, documents: int, errors: list[str],
                       cancelled: bool = False,
                       then: Callable[[], Awaitable[None]] | None = None) -> None:
        """Write the close when the disk has room again (retried with backoff); until then
        the row says running, and a restart closes it as interrupted."""
        self._late[run_id] = (dict(documents=documents, errors=errors,
                                   cancelled=cancelled), then)
        if self._late_task is None or self._late_task.done():
            self._late_task = asyncio.create_task(self._write_late(), name="runs-late-close")

    @property
    def unwritten(self) -> list[str]:
        """Runs closed on the wire whose close is not in SQLite yet."""
        return list(self._late)

    async def _write_late(self) -> None:
        late = self._late
        backoff = Backoff(*LATE_CLOSE_BACKOFF)
        quiet = RateLimitedLog(log, interval=60.0)
        while late:
            await asyncio.sleep(backoff.next_delay())
            for run_id, (kw, then) in list(late.items()):
                try:
                    await self.complete(run_id, **kw)
                except Exception as exc:
                    if is_disk_full(exc) or getattr(exc, "code", "") == "database_locked":
                        quiet.warning("late-close", "run close(s) still waiting for the disk: "
                                      "%s (%s)", ", ".join(late), exc)
                        break
                    if isinstance(exc, StoreError):  # closed: a restart closes the row
                        return
                    log.exception("run %s: its close cannot be written; dropped", run_id)
                    late.pop(run_id, None)
                    continue
                late.pop(run_id, None)
                log.info("run %s: close written now that the disk has room", run_id)
                if then is not None:
                    try:
                        await then()
                    except Exception:
                        log.exception("run %s: follow-up of the late close failed", run_id)

    async def get(self, run_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM runs WHERE id = ?", (run_id,))
        return None if row is None else _row(row)

    async def list(
        self, *, agent_id: str | None = None, limit: int = 50, before: str | None = None
    ) -> list[dict[str, Any]]:
        limit = max(1, min(int(limit), 500))
        where, params = [], []
        if agent_id:
            where.append("agent_id = ?")
            params.append(agent_id)
        if before:
            where.append("started_at < ?")
            params.append(before)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        return [_row(r) for r in await self.db.fetchall(sql, [*params, limit])]

    async def has_completed(self, agent_id: str) -> bool:
        """Whether any run of the agent ended success or partial (its first run is over)."""
        return await self.db.scalar(
            "SELECT EXISTS(SELECT 1 FROM runs WHERE agent_id = ? "
            "AND status IN ('success', 'partial'))", (agent_id,)) == 1

    async def close_interrupted(self) -> int:
        """Runs left 'running' by a crash end as error, so the log never lies."""
        return await self.db.execute(
            "UPDATE runs SET status = 'error', completed_at = ?, "
            "errors = json_insert(errors, '$[#]', 'interrupted: the sidecar stopped mid-run') "
            "WHERE status = 'running'",
            (now_iso(),),
        )
