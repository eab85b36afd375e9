"""The run log, with the seed's statuses and its success/partial/error rule."""

from __future__ import annotations

import json
import secrets
import sqlite3
from typing import Any

from sidecar.clock import now_iso
from sidecar.logging_setup import redact
from sidecar.store.db import Database

RUN_STATUSES = ("running", "success", "partial", "error", "cancelled")


def final_status(errors: list[str], items_created: int, *, cancelled: bool = False) -> str:
    """The seed's rule: errors and nothing created → error; errors and some → partial."""
    if cancelled:
        return "cancelled"
    if errors and items_created == 0:
        return "error"
    if errors:
        return "partial"
    return "success"


def _row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["errors"] = json.loads(d["errors"])
    return d


class RunStore:
    """Create, finish and query runs; interrupted runs are closed on start-up."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def start(self, agent_id: str, agent_kind: str, trigger: str) -> dict[str, Any]:
        run_id = "r_" + secrets.token_hex(8)
        started = now_iso()
        await self.db.execute(
            "INSERT INTO runs (id, agent_id, agent_kind, trigger, status, started_at) "
            "VALUES (?, ?, ?, ?, 'running', ?)",
            (run_id, agent_id, agent_kind, trigger, started),
        )
        return await self.get(run_id)  # type: ignore[return-value]

    async def finish(
        self, run_id: str, *, status: str, items_processed: int, items_created: int,
        errors: list[str],
    ) -> dict[str, Any]:
        if status not in RUN_STATUSES or status == "running":
            raise ValueError(f"not a final run status: {status!r}")
        await self.db.execute(
            "UPDATE runs SET status = ?, items_processed = ?, items_created = ?, errors = ?, "
            "completed_at = ? WHERE id = ?",
            (status, items_processed, items_created,
             json.dumps([redact(e) for e in errors], ensure_ascii=False), now_iso(), run_id),
        )
        return await self.get(run_id)  # type: ignore[return-value]

    async def complete(self, run_id: str, *, items_processed: int, errors: list[str],
                       cancelled: bool = False) -> dict[str, Any]:
        """Close a run: items_created counts acked outbox items; insert errors recorded while
        the run went on are kept; the status follows the seed's rule (or is cancelled)."""
        async with self.db.transaction() as conn:
            async with conn.execute(
                "SELECT errors, (SELECT count(*) FROM outbox WHERE run_id = ? AND "
                "state = 'acked') AS acked FROM runs WHERE id = ?", (run_id, run_id)) as cur:
                row = await cur.fetchone()
            if row is None:
                raise ValueError(f"no run {run_id!r}")
            # a server may quote a key or token back in its error text: the run log is in
            # SQLite and in run_finished frames, so it gets the log files' redaction
            all_errors = [redact(e) for e in errors] + json.loads(row["errors"])
            status = final_status(all_errors, row["acked"], cancelled=cancelled)
            await conn.execute(
                "UPDATE runs SET status = ?, items_processed = ?, items_created = ?, "
                "errors = ?, completed_at = ? WHERE id = ?",
                (status, items_processed, row["acked"],
                 json.dumps(all_errors, ensure_ascii=False), now_iso(), run_id))
        return await self.get(run_id)  # type: ignore[return-value]

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

    async def close_interrupted(self) -> int:
        """Runs left 'running' by a crash end as error, so the log never lies."""
        return await self.db.execute(
            "UPDATE runs SET status = 'error', completed_at = ?, "
            "errors = json_insert(errors, '$[#]', 'interrupted: the sidecar stopped mid-run') "
            "WHERE status = 'running'",
            (now_iso(),),
        )
