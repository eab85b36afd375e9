"""The SQLite store: migrations, the run log, and the seed's status rule."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sidecar.domain import validate_agent
from sidecar.errors import StoreError
from sidecar.store import Store
from sidecar.store.migrations import LATEST
from sidecar.store.outbox import NewEntry, Settled, call_id_for, idempotency_key
from sidecar.store.runs import final_status


async def test_fresh_store_is_migrated_to_latest_in_wal_mode(tmp_path: Path) -> None:
    async with Store(tmp_path / "s.db") as store:
        assert await store.db.scalar("PRAGMA user_version") == LATEST
        assert await store.db.scalar("PRAGMA journal_mode") == "wal"
        tables = {r[0] for r in await store.db.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"agents", "runs", "file_state", "outbox", "cursors", "settings"} <= tables
        assert await store.db.integrity_check() == "ok"
    # reopening does not re-run migrations
    async with Store(tmp_path / "s.db") as store:
        assert await store.db.scalar("PRAGMA user_version") == LATEST


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {LATEST + 1}")
    con.close()
    with pytest.raises(StoreError, match="newer"):
        await Store(path).open()


async def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(StoreError, match="not a valid SQLite"):
        await Store(path).open()


@pytest.mark.parametrize(
    ("errors", "created", "expected"),
    [([], 0, "success"), ([], 3, "success"), (["x"], 0, "error"), (["x"], 2, "partial")],
)
def test_final_status_follows_the_seed(errors: list[str], created: int, expected: str) -> None:
    assert final_status(errors, created) == expected
    assert final_status(errors, created, cancelled=True) == "cancelled"


async def test_run_log_lifecycle_and_interrupted_runs(tmp_path: Path) -> None:
    async with Store(tmp_path / "s.db") as store:
        run = await store.runs.start("a1", "local", "manual")
        assert run["status"] == "running" and run["errors"] == []
        # nothing acked and an error: the seed's "error" (partial needs a record created)
        done = await store.runs.complete(run["id"], documents=3,
                                         errors=["bad.pdf: encrypted"])
        assert done["status"] == "error" and done["completed_at"]
        assert done["errors"] == ["bad.pdf: encrypted"] and done["items_processed"] == 3
        stuck = await store.runs.start("a1", "local", "schedule")
        assert await store.runs.close_interrupted() == 1
        closed = await store.runs.get(stuck["id"])
        assert closed is not None and closed["status"] == "error"
        assert "interrupted" in closed["errors"][0]
        runs = await store.runs.list(agent_id="a1")
        assert [r["id"] for r in runs] == [stuck["id"], run["id"]]
        with pytest.raises(ValueError):
            await store.runs.complete("r_nosuchrun", documents=0, errors=[])


async def test_agent_upsert_merge_and_delete(tmp_path: Path) -> None:
    async with Store(tmp_path / "s.db") as store:
        agent = validate_agent({"kind": "local", "name": "n", "directories": [str(tmp_path)]})
        assert await store.agents.upsert(agent) is True
        assert await store.agents.upsert(agent) is False
        got = await store.agents.get_agent(agent.id)
        assert got == agent
        assert await store.agents.delete(agent.id) is True
        assert await store.agents.get_agent(agent.id) is None


async def test_a_deleted_agent_leaves_nothing_that_only_its_runs_would_read(
        tmp_path: Path) -> None:
    """Its timelines held for want of a project (released only by its own runs) and its
    note of when they were last looked at go with it; a record waiting for an insert already
    sent to the app stays (that insert's answer releases it, like the agent's queued ones)."""
    async with Store(tmp_path / "s.db") as store:
        gone = validate_agent({"kind": "local", "name": "gone", "directories": [str(tmp_path)]})
        kept = validate_agent({"kind": "local", "name": "kept", "directories": [str(tmp_path)]})
        for a in (gone, kept):
            await store.agents.upsert(a)
        async with store.db.transaction() as conn:
            for key, agent, parent, table in [  # a timeline, its document's places row …
                    ("k1", gone, "no-project:doc1", "timelines"),
                    ("places:no-project:doc1", gone, "no-project:doc1", ""),
                    ("k2", gone, "c_waiting_for_the_app", "tasks"),
                    ("k3", kept, "no-project:doc2", "timelines")]:
                await conn.execute(
                    "INSERT INTO held (idempotency_key, parent_call_id, field, agent_id, "
                    "table_name, data, created_at) VALUES (?, ?, 'projectId', ?, ?, '{}', "
                    "'now')", (key, parent, agent.id, table))
        await store.kv.set(f"held_scan:{gone.id}", "abc")
        await store.kv.set(f"held_scan:{kept.id}", "def")
        assert await store.agents.delete(gone.id) is True
        left = await store.db.fetchall("SELECT agent_id, parent_call_id FROM held ORDER BY seq")
        assert [tuple(r) for r in left] == [(gone.id, "c_waiting_for_the_app"),
                                           (kept.id, "no-project:doc2")]
        assert await store.kv.get(f"held_scan:{gone.id}") is None
        assert await store.kv.get(f"held_scan:{kept.id}") == "def"


async def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    async with Store(tmp_path / "s.db") as store:
        with pytest.raises(RuntimeError):
            async with store.db.transaction() as conn:
                await conn.execute("INSERT INTO cursors VALUES ('a', '{}', 'now')")
                raise RuntimeError("boom")
        assert await store.db.scalar("SELECT count(*) FROM cursors") == 0


# -- the outbox, in process ----------------------------------------------------------------------


def _item(agent: str, run_id: str | None, n: int, path: str = "/docs/a.md") -> NewEntry:
    return NewEntry(idempotency_key=idempotency_key(agent, path, "tasks", f"t{n}"),
                   agent_id=agent, run_id=run_id, table="tasks",
                   data={"title": f"Task {n} é"}, meta={"source": {"path": path}})


def test_keys_and_call_ids_are_stable_short_and_free_of_user_text() -> None:
    assert idempotency_key("a1", "short", 7) == "a1:short:7"
    long_path = "/home/me/Clients/Harbor Bakery/notes.md"
    key = idempotency_key("a1", long_path, "x:y")
    assert key.split(":")[0] == "a1" and len(key.split(":")) == 3
    assert "Harbor" not in key and all(len(part) == 16 for part in key.split(":")[1:])
    assert idempotency_key("a1", "y" * 24) == "a1:" + "y" * 24  # 24 characters stay as they are
    assert idempotency_key("a1", "y" * 25) != "a1:" + "y" * 25
    assert call_id_for(key) == call_id_for(key) != call_id_for(key + "x")
    assert call_id_for(key).startswith("c_") and len(call_id_for(key)) == 26


async def test_outbox_queues_once_reads_in_order_and_settles_each_call_once(tmp_path: Path
                                                                          ) -> None:
    async with Store(tmp_path / "s.db") as store:
        run = await store.runs.start("a1", "local", "manual")
        ob = store.outbox
        assert await ob.enqueue([]) == 0
        assert await ob.enqueue([_item("a1", run["id"], n) for n in range(5)]) == 5
        # the same keys again (a re-extraction after a crash) add nothing
        assert await ob.enqueue([_item("a1", run["id"], n) for n in range(3, 7)]) == 2
        pending = await ob.pending_after(0)
        assert [e.data["title"] for e in pending] == [f"Task {n} é" for n in range(7)]
        assert [e.seq for e in pending] == sorted(e.seq for e in pending)
        assert pending[0].call_id == call_id_for(pending[0].idempotency_key)
        assert pending[0].meta == {"source": {"path": "/docs/a.md"}} and pending[0].table == "tasks"
        assert [e.seq for e in await ob.pending_after(pending[2].seq, limit=2)] == [
            pending[3].seq, pending[4].seq]
        assert await ob.count("pending") == 7 and await ob.count("pending", run["id"]) == 7
        assert await ob.count("pending", "other-run") == 0
        assert await ob.by_call_id(pending[1].call_id) == (pending[1].seq, "pending")
        assert await ob.by_call_id("c_nope") is None

        first, second, third = pending[0].call_id, pending[1].call_id, pending[2].call_id
        applied = await ob.settle([Settled(first), Settled(first), Settled(second, "UNIQUE failed"),
                                   Settled("c_unknown")])
        assert sorted(applied) == sorted([first, second])
        assert await ob.settle([Settled(first)]) == []  # a duplicate ack never counts twice
        assert await ob.settle([]) == []
        assert await ob.by_call_id(first) == (pending[0].seq, "acked")
        assert await ob.by_call_id(second) == (pending[1].seq, "failed")
        assert await ob.count("acked") == 1 and await ob.count("failed") == 1
        assert await ob.count("pending") == 5
        assert [e.seq for e in await ob.pending_after(0)] == [e.seq for e in pending[2:]]
        assert [e.call_id for e in await ob.for_run(run["id"])] == [e.call_id for e in pending]
        got = await store.runs.get(run["id"])
        assert got is not None and got["items_created"] == 1 and got["status"] == "running"
        assert got["errors"] == ["Insert failed (tasks, '/docs/a.md'): UNIQUE failed"]

        # once the run is over, late acks still credit it and set its status by the seed's rule
        await store.runs.complete(run["id"], documents=1, errors=[])
        await ob.settle([Settled(third)])
        done = await store.runs.get(run["id"])
        assert done is not None and done["items_created"] == 2 and done["status"] == "partial"


async def test_settle_credits_each_run_by_its_own_outcome(tmp_path: Path) -> None:
    async with Store(tmp_path / "s.db") as store:
        ob = store.outbox
        failed_run = await store.runs.start("a1", "local", "manual")
        stopped = await store.runs.start("a2", "local", "manual")
        loose = NewEntry(idempotency_key="a3:loose", agent_id="a3", run_id=None, table="notes",
                        data={"title": "no run"}, meta={})
        await ob.enqueue([loose, _item("a1", failed_run["id"], 1), _item("a2", stopped["id"], 2)])
        await store.runs.complete(failed_run["id"], documents=1, errors=[])
        await store.runs.complete(stopped["id"], documents=1, errors=[], cancelled=True)
        calls = {e.agent_id: e.call_id for e in await ob.pending_after(0)}
        # a record of no run comes first in the batch: the runs after it are still credited
        applied = await ob.settle([Settled(calls["a3"], "no such table"),
                                   Settled(calls["a1"], "disk I/O error"), Settled(calls["a2"])])
        assert len(applied) == 3
        failed = await store.runs.get(failed_run["id"])
        assert failed is not None and (failed["status"], failed["items_created"]) == ("error", 0)
        assert failed["errors"] == ["Insert failed (tasks, '/docs/a.md'): disk I/O error"]
        cancelled = await store.runs.get(stopped["id"])
        assert cancelled is not None and cancelled["status"] == "cancelled"  # stays cancelled
        assert cancelled["items_created"] == 1
        rows = await store.db.fetchall("SELECT agent_id, state, last_error, acked_at, attempts "
                                       "FROM outbox ORDER BY seq")
        assert [(r["agent_id"], r["state"], r["last_error"], r["attempts"]) for r in rows] == [
            ("a3", "failed", "no such table", 1), ("a1", "failed", "disk I/O error", 1),
            ("a2", "acked", None, 1)]
        assert all(r["acked_at"] and r["acked_at"].endswith("Z") for r in rows)
