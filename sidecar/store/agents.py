"""Agent rows: the validated agent JSON plus the columns the scheduler queries."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from sidecar.clock import now_iso, parse_iso
from sidecar.domain import Agent, agent_from_json
from sidecar.store.db import Database
from sidecar.store.held import NO_PROJECT, scan_key


def _row_to_record(row: sqlite3.Row) -> dict[str, Any]:
    agent = json.loads(row["config"])
    agent.update(
        enabled=bool(row["enabled"]),
        state=row["state"],
        last_run_at=row["last_run_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
    return agent


class AgentStore:
    """CRUD over ``agents``; ``get_agent`` returns the typed :class:`Agent`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def upsert(self, agent: Agent) -> bool:
        """Insert or replace; returns True when the agent is new."""
        ts = now_iso()
        config = json.dumps(agent.to_json(), ensure_ascii=False, sort_keys=True)
        async with self.db.transaction() as conn:
            async with conn.execute("SELECT 1 FROM agents WHERE id = ?", (agent.id,)) as cur:
                existed = await cur.fetchone() is not None
            await conn.execute(
                """INSERT INTO agents (id, kind, name, enabled, schedule_cron, config,
                                       created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, name = excluded.name,
                       enabled = excluded.enabled, schedule_cron = excluded.schedule_cron,
                       config = excluded.config, updated_at = excluded.updated_at""",
                (agent.id, agent.kind, agent.name, int(agent.enabled), agent.schedule_cron,
                 config, ts, ts),
            )
        return not existed

    async def delete(self, agent_id: str) -> bool:
        async with self.db.transaction() as conn:
            async with conn.execute("DELETE FROM agents WHERE id = ?", (agent_id,)) as cur:
                deleted = cur.rowcount > 0
            await conn.execute("DELETE FROM file_state WHERE agent_id = ?", (agent_id,))
            await conn.execute("DELETE FROM cursors WHERE agent_id = ?", (agent_id,))
            # only its own runs would release these; records waiting for an insert already
            # sent stay (that insert's answer releases them, like its queued records)
            await conn.execute("DELETE FROM held WHERE agent_id = ? AND parent_call_id LIKE ?",
                               (agent_id, NO_PROJECT + "%"))
            await conn.execute("DELETE FROM settings WHERE key = ?", (scan_key(agent_id),))
        return deleted

    async def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Agents as wire/CLI dicts (config + state columns), oldest first."""
        if kind:
            rows = await self.db.fetchall(
                "SELECT * FROM agents WHERE kind = ? ORDER BY created_at, id", (kind,))
        else:
            rows = await self.db.fetchall("SELECT * FROM agents ORDER BY created_at, id")
        return [_row_to_record(r) for r in rows]

    async def record(self, agent_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM agents WHERE id = ?", (agent_id,))
        return None if row is None else _row_to_record(row)

    async def get_agent(self, agent_id: str) -> Agent | None:
        row = await self.db.fetchone("SELECT config, enabled FROM agents WHERE id = ?",
                                     (agent_id,))
        if row is None:
            return None
        return agent_from_json({**json.loads(row["config"]), "enabled": bool(row["enabled"])})

    async def set_state(self, agent_id: str, state: str) -> None:
        await self.db.execute("UPDATE agents SET state = ?, updated_at = ? WHERE id = ?",
                              (state, now_iso(), agent_id))

    async def set_last_run(self, agent_id: str, when: str | None = None) -> None:
        await self.db.execute("UPDATE agents SET last_run_at = ? WHERE id = ?",
                              (when or now_iso(), agent_id))

    async def last_run_at(self, agent_id: str) -> Any:
        """When the agent's last run ended (the runner's tests read it)."""
        return parse_iso(await self.db.scalar(
            "SELECT last_run_at FROM agents WHERE id = ?", (agent_id,)))


