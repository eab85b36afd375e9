"""The SQLite store: migrations, the run log, and the seed's status rule."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sidecar.agents import validate_agent
from sidecar.errors import StoreError
from sidecar.store import Store
from sidecar.store.migrations import LATEST
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
        done = await store.runs.finish(run["id"], status="partial", items_processed=3,
                                       items_created=2, errors=["bad.pdf: encrypted"])
        assert done["status"] == "partial" and done["completed_at"]
        assert done["errors"] == ["bad.pdf: encrypted"]
        stuck = await store.runs.start("a1", "local", "schedule")
        assert await store.runs.close_interrupted() == 1
        closed = await store.runs.get(stuck["id"])
        assert closed is not None and closed["status"] == "error"
        assert "interrupted" in closed["errors"][0]
        runs = await store.runs.list(agent_id="a1")
        assert [r["id"] for r in runs] == [stuck["id"], run["id"]]
        with pytest.raises(ValueError):
            await store.runs.finish(run["id"], status="running", items_processed=0,
                                    items_created=0, errors=[])


async def test_agent_upsert_merge_and_delete(tmp_path: Path) -> None:
    async with Store(tmp_path / "s.db") as store:
        agent = validate_agent({"kind": "local", "name": "n", "directories": [str(tmp_path)]})
        assert await store.agents.upsert(agent) is True
        assert await store.agents.upsert(agent) is False
        got = await store.agents.get_agent(agent.id)
        assert got == agent
        assert await store.agents.delete(agent.id) is True
        assert await store.agents.get_agent(agent.id) is None


async def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    async with Store(tmp_path / "s.db") as store:
        with pytest.raises(RuntimeError):
            async with store.db.transaction() as conn:
                await conn.execute("INSERT INTO cursors VALUES ('a', '{}', 'now')")
                raise RuntimeError("boom")
        assert await store.db.scalar("SELECT count(*) FROM cursors") == 0
