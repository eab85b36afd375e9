"""Records that wait for another insert's id: the tasks and timelines of a suggested new
project wait for the project's ``tool_result`` (``result.id``), a comment for its task's.

A held record is queued in the outbox in the transaction that settles its parent, with the
parent's id in its ``field``, and leaves the ``held`` table in that same transaction: a
crash on either side of the COMMIT neither loses it nor queues it twice (its idempotency key
is unique in both tables). A parent that failed for good, or was acked without an id,
releases its records without the link (a timeline, which needs a project, is then held for
good and the run log says so, as for any timeline without a project; a comment, which needs
its task, is dropped and the run log says so). A retryable error keeps them waiting.

A timeline with no project at all waits under :data:`NO_PROJECT` (no run waits for it), its
document's places kept once beside it (:func:`keep_places`), until a run of its agent finds
its project (:func:`sidecar.linking.release_unlinked`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sidecar.clock import now_iso
from sidecar.store.db import Database

#: What a held record carries in its ``field`` until the parent's id is known; never sent.
PENDING_ID = "\u0000pending"
#: The parent of a timeline held for want of a project (its document's identity follows;
#: :func:`sidecar.linking.release_unlinked` queues it once its project is known).
NO_PROJECT = "no-project:"
#: The key of the one row (``table_name`` '') that keeps, for all of a document's timelines
#: held for want of a project, where that document may name one (its ``parent_call_id``
#: follows).
PLACES = "places:"


def scan_key(agent_id: str) -> str:
    """The settings key noting what an agent's unlinked timelines were last matched under."""
    return f"held_scan:{agent_id}"


async def keep_places(conn: Any, parent: str, agent_id: str, places: Any) -> None:
    """In ``conn``'s transaction: a document's places, once for all its held timelines."""
    await conn.execute(
        "INSERT OR REPLACE INTO held (idempotency_key, parent_call_id, field, agent_id, "
        "run_id, table_name, data, meta, created_at) VALUES (?, ?, 'projectId', ?, NULL, '', "
        "'{}', ?, ?)", (PLACES + parent, parent, agent_id,
                        json.dumps({"match": places}, ensure_ascii=False), now_iso()))

Enqueue = Callable[[Sequence[Any], Any], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Child:
    """A record (a ``NewEntry``) that waits for the insert ``parent_call_id``: its ``field``
    gets that insert's ``result.id``."""

    item: Any
    parent_call_id: str
    field: str


def id_of(result: Any) -> str | int | None:
    """The id an app's ``tool_result.result`` gives (``{"id": …}``, a string or an integer)."""
    value = result.get("id") if isinstance(result, dict) else None
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return value if not isinstance(value, str) or value.strip() else None


def _linked(item: Any, field: str, value: str | int) -> Any:
    data = {**item.data, field: value}
    source = dict(item.meta.get("source") or {})
    key = "project" if field == "projectId" else "task"
    if isinstance(source.get(key), dict):
        source[key] = {**source[key], "id": value}
    return replace(item, data=data, meta={**item.meta, "source": source})


def _unlinked(item: Any, field: str, why: str) -> Any | None:
    """The record without the link, or None when it cannot exist without it."""
    if field != "projectId" or item.table == "timelines":
        return None
    data = {k: v for k, v in item.data.items() if k != field}
    source = {k: v for k, v in (item.meta.get("source") or {}).items() if k != "project"}
    source["unlinked"] = why
    return replace(item, data=data, meta={**item.meta, "source": source})


def _name(item: Any, field: str) -> str:
    source = item.meta.get("source") or {}
    ref = source.get("project" if field == "projectId" else "task") or {}
    return str(ref.get("term") or ref.get("title") or "?")


def failure_lines(dropped: dict[tuple[str, str], list[Any]], why: dict[tuple[str, str], str]
                  ) -> list[str]:
    """Run-log lines for records released without their link, or not at all."""
    out = []
    for (field, name), items in dropped.items():
        reason = why[(field, name)]
        if field == "projectId":
            timelines = [str(i.data.get("title", "")) for i in items if i.table == "timelines"]
            sent = len(items) - len(timelines)
            line = f"Project suggestion {name!r}: {reason}"
            if sent:
                line += f"; {sent} record(s) sent without projectId"
            out.append(line)
            if timelines:
                shown = "; ".join(t[:60] for t in timelines[:5]) + (
                    "; …" if len(timelines) > 5 else "")
                out.append(f"{len(timelines)} timeline(s) held: no project (the project "
                           f"suggestion {name!r} has no id): {shown}")
        else:
            out.append(f"{len(items)} comment(s) not suggested: the task {name!r} has no "
                       f"id ({reason})")
    return out


async def _release(conn: Any, children: Iterable[Child], outcome: dict[str, tuple[Any, str]],
                   enqueue: Enqueue) -> dict[str | None, list[str]]:
    """Queue each child with its parent's id, or without the link; run id → log lines."""
    queued: list[Any] = []
    dropped: dict[str | None, dict[tuple[str, str], list[Any]]] = {}
    why: dict[tuple[str, str], str] = {}
    for child in children:
        value, reason = outcome[child.parent_call_id]
        if value is not None:
            queued.append(_linked(child.item, child.field, value))
            continue
        name = _name(child.item, child.field)
        why[(child.field, name)] = reason
        dropped.setdefault(child.item.run_id, {}).setdefault((child.field, name), []).append(
            child.item)
        alone = _unlinked(child.item, child.field, f"project suggestion {name!r}: {reason}")
        if alone is not None:
            queued.append(alone)
    await enqueue(queued, conn)
    return {run: failure_lines(groups, why) for run, groups in dropped.items()}


def _outcome(state: str, result_id: str | None, error: str | None) -> tuple[Any, str]:
    if state == "acked":
        value = json.loads(result_id) if result_id else None
        return value, "the app's tool_result for it carried no result.id"
    return None, f"its insert failed: {error}" if error else "its insert failed"


async def release_settled(conn: Any, parents: Sequence[tuple[str, str, str | None, str | None]],
                          enqueue: Enqueue, make: Callable[..., Any]
                          ) -> dict[str | None, list[str]]:
    """In a settle's transaction: ``parents`` (call id, new state, result id JSON, error) that
    settled for good release what waits for them (rebuilt as ``make``, the outbox's
    ``NewEntry``). Returns run id → run-log lines."""
    if not parents:
        return {}
    outcome = {call: _outcome(state, rid, err) for call, state, rid, err in parents}
    children: list[Child] = []
    ids = list(outcome)
    for start in range(0, len(ids), 500):
        part = ids[start:start + 500]
        marks = ",".join("?" * len(part))
        async with conn.execute(f"SELECT * FROM held WHERE parent_call_id IN ({marks}) "
                                f"ORDER BY seq", part) as cur:
            children += [_child(r, make) for r in await cur.fetchall()]
        if children:
            await conn.execute(f"DELETE FROM held WHERE parent_call_id IN ({marks})", part)
    return await _release(conn, children, outcome, enqueue) if children else {}


def _child(row: Any, make: Callable[..., Any]) -> Child:
    item = make(idempotency_key=row["idempotency_key"], agent_id=row["agent_id"],
                   run_id=row["run_id"], table=row["table_name"], data=json.loads(row["data"]),
                   meta=json.loads(row["meta"]))
    return Child(item, row["parent_call_id"], row["field"])


class HeldStore:
    """Hold records until their parent insert is settled; see the module docstring."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def hold(self, children: Sequence[Child], conn: Any, enqueue: Enqueue
                   ) -> list[str]:
        """In ``conn``'s transaction: hold each child whose parent is still pending; one
        whose parent was settled before is queued at once (linked, or not). A child whose
        key is already queued or held is left alone. Returns run-log lines."""
        if not children:
            return []
        keys = [c.item.idempotency_key for c in children]
        known = set()
        for table in ("outbox", "held"):
            async with conn.execute(
                    f"SELECT idempotency_key FROM {table} WHERE idempotency_key IN "
                    f"({','.join('?' * len(keys))})", keys) as cur:
                known |= {r[0] for r in await cur.fetchall()}
        fresh = [c for c in children if c.item.idempotency_key not in known]
        parents = sorted({c.parent_call_id for c in fresh})
        states: dict[str, tuple[Any, str] | None] = {}
        for call in parents:
            async with conn.execute("SELECT state, result_id, last_error FROM outbox "
                                    "WHERE call_id = ?", (call,)) as cur:
                row = await cur.fetchone()
            pending = row is None or row["state"] == "pending"
            states[call] = None if pending else _outcome(row["state"], row["result_id"],
                                                         row["last_error"])
        now = now_iso()
        waiting = [c for c in fresh if states[c.parent_call_id] is None]
        await conn.executemany(
            "INSERT OR IGNORE INTO held (idempotency_key, parent_call_id, field, agent_id, "
            "run_id, table_name, data, meta, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(c.item.idempotency_key, c.parent_call_id, c.field, c.item.agent_id,
              c.item.run_id, c.item.table, json.dumps(c.item.data, ensure_ascii=False),
              json.dumps(c.item.meta, ensure_ascii=False), now) for c in waiting])
        settled = [c for c in fresh if states[c.parent_call_id] is not None]
        if not settled:
            return []
        outcome = {k: v for k, v in states.items() if v is not None}
        lines = await _release(conn, settled, outcome, enqueue)
        return [line for run_lines in lines.values() for line in run_lines]

    async def forget(self, parent: str) -> None:
        """Drop what waits for ``parent`` (a document read again holds what it gives now)."""
        if await self.db.scalar("SELECT 1 FROM held WHERE parent_call_id = ? LIMIT 1",
                                (parent,)):
            await self.db.execute("DELETE FROM held WHERE parent_call_id = ?", (parent,))

    async def unlinked(self, agent_id: str) -> list[dict[str, Any]]:
        """The agent's timelines held for want of a project, with their documents' places."""
        rows = await self.db.fetchall(
            "SELECT * FROM held WHERE agent_id = ? AND parent_call_id LIKE ? ORDER BY seq",
            (agent_id, NO_PROJECT + "%"))
        return [dict(r) for r in rows]

    @staticmethod
    async def linked(conn: Any, items: Sequence[Any], agent_id: str, enqueue: Enqueue
                     ) -> None:
        """In ``conn``'s transaction: held ``items`` (now with their project) leave ``held``
        for the outbox; a document none of whose timelines waits any more loses its places."""
        await conn.executemany("DELETE FROM held WHERE idempotency_key = ?",
                               [(i.idempotency_key,) for i in items])
        await enqueue(items, conn)
        await conn.execute(
            "DELETE FROM held WHERE table_name = '' AND agent_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM held AS h WHERE h.parent_call_id = held.parent_call_id "
            "AND h.table_name != '')", (agent_id,))

    async def count(self, run_id: str | None = None) -> int:
        """Records held (of a run); a removed agent's timelines waiting for a project, which
        only its own runs would send, are not counted."""
        if run_id is None:
            return int(await self.db.scalar(
                "SELECT count(*) FROM held WHERE table_name != '' AND (parent_call_id NOT "
                "LIKE ? OR agent_id IN (SELECT id FROM agents))", (NO_PROJECT + "%",)) or 0)
        return int(await self.db.scalar("SELECT count(*) FROM held WHERE run_id = ?",
                                        (run_id,)) or 0)

    async def by_run(self, run_ids: Sequence[str]) -> dict[str, int]:
        """Records each run holds (they count as extracted and pending)."""
        out: dict[str, int] = {}
        for start in range(0, len(run_ids), 500):
            part = list(run_ids[start:start + 500])
            rows = await self.db.fetchall(
                f"SELECT run_id, count(*) AS n FROM held WHERE run_id IN "
                f"({','.join('?' * len(part))}) GROUP BY run_id", part)
            out.update({r["run_id"]: r["n"] for r in rows})
        return out
