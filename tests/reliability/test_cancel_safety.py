"""Cancel safety: a tray "Cancel" at any await of a store transaction never leaves it stuck.

aiosqlite runs each statement on its own thread, so a cancelled ``await`` of ``BEGIN``,
``COMMIT`` or ``ROLLBACK`` does not stop the statement; it only stops the caller knowing how
it ended. Each deterministic case holds one transaction statement on the store's worker
thread (``SIDECAR_FAILDELAY``, announced on stderr with the task that issued it) and sends
``cancel_run`` over the WebSocket exactly while the run's statement is in flight. The storm
sends 500 cancels at random moments of real runs. After each, the same daemon must still
save an agent and finish a full run that delivers every record of the folder: the expected
records are the task lines the test wrote, each with a unique tag its title keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.client import DaemonProcess, SidecarClient
from tests.reliability.taskdocs import make_agent, write_task_docs

Figure = Callable[[str, str, Any], None]

SEED = 1_300_013
DOCS = 3
HOLD = 0.4  # seconds a held statement stays in flight on the store's thread
STORM_CANCELS = 500


class Tray:
    """The app's one writer: acks every tool_call, keeps every run_finished it is pushed."""

    def __init__(self, client: SidecarClient) -> None:
        self.c = client
        self.received: Counter[str] = Counter()
        self.titles: dict[str, str] = {}
        self.finished: dict[str, dict[str, Any]] = {}
        self._changed = asyncio.Event()
        self._pump_task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            frame = await self.c.pushed.get()
            if frame["type"] == "tool_call":
                key = frame["idempotency_key"]
                self.received[key] += 1
                self.titles[key] = str(frame["data"].get("title", ""))
                await self.c.ack(frame)
            elif frame["type"] == "run_finished":
                self.finished[frame["run"]["id"]] = frame["run"]
                self._changed.set()

    async def run_finished(self, run_id: str, timeout: float = 30.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while run_id not in self.finished:
                self._changed.clear()
                await self._changed.wait()
        return self.finished[run_id]

    async def request(self, frame: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        reply = await self.c.request(frame, timeout)
        assert reply["type"] != "error", reply
        return reply

    async def drained(self, timeout: float = 60.0) -> None:
        """Until the outbox is empty (every queued record acked)."""
        async with asyncio.timeout(timeout):
            while True:  # polling the daemon: no local flag to wait on
                if not (await self.request({"type": "status"}))["outbox_pending"]:
                    return
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._pump_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump_task
        await self.c.close()


async def announced(d: DaemonProcess, point: str, run_id: str, start: int,
                    timeout: float = 20.0) -> int:
    """Wait for the daemon's stderr to say the run's task is held at ``point``; its index."""
    needle, owner = f"failpoint {point}:", f"(task run-{run_id})"
    deadline = time.monotonic() + timeout
    i = start
    while time.monotonic() < deadline:
        lines = d.stderr_lines
        for i in range(start, len(lines)):
            if needle in lines[i] and owner in lines[i]:
                return i
        start = max(start, len(lines))
        await asyncio.sleep(0.002)
    raise AssertionError(f"run {run_id} never reached {point}; stderr tail: {d.stderr_lines[-5:]}")


async def still_works(tray: Tray, d: DaemonProcess, folder: Path, agent_id: str,
                      tags: set[str]) -> dict[str, Any]:
    """An agent save and a full run succeed; every task line written reaches the client once."""
    saved = await tray.request({"type": "agent_upsert", "agent": {
        "id": agent_id, "kind": "local", "name": "Saved after the cancels",
        "directories": [str(folder)], "extensions": [".md"], "data_types": ["tasks"],
        "schedule_cron": "0 3 * * *", "watch": False}})
    assert saved["agent"]["id"] == agent_id
    run_id = (await tray.request({"type": "run_agent", "agent_id": agent_id,
                                  "full": True}))["run_id"]
    run = await tray.run_finished(run_id, timeout=120)
    assert run["status"] == "success", run
    await tray.drained()
    titles = " ".join(tray.titles.values()).lower()
    missing = sorted(t for t in tags if t not in titles)
    assert not missing, f"task lines never delivered: {missing}"
    twice = [k for k, n in tray.received.items() if n > 1]
    assert not twice, f"records delivered twice: {twice[:5]}"
    stuck = [line for line in d.stderr_lines if "within a transaction" in line
             or "left inside a transaction" in line]
    assert not stuck, stuck[:3]
    return run


@pytest.fixture
async def launch(data_dir: Path, token: str, model_dir: Path
                 ) -> AsyncIterator[Callable[[dict[str, str]], Any]]:
    started: list[DaemonProcess] = []

    async def start(env: dict[str, str]) -> DaemonProcess:
        d = await DaemonProcess.start(data_dir, token=token,
                                      extra_args=["--model-dir", str(model_dir)], env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        await d.stop()


#: where the cancel lands → (delay points armed, the points cancelled at, in order)
CASES = {
    "begin": ("store.begin", ["store.begin"]),
    "body": ("store.body", ["store.body"]),
    "commit": ("store.commit", ["store.commit"]),
    # "Cancel" pressed twice (tray and window): the second lands in the first's ROLLBACK
    "rollback": ("store.body,store.rollback", ["store.body", "store.rollback"]),
}


@pytest.mark.parametrize("where", list(CASES))
async def test_cancel_at_each_await_of_a_transaction(
        launch: Callable[[dict[str, str]], Any], tmp_path: Path, where: str,
        figure: Figure) -> None:
    armed, points = CASES[where]
    spec = ",".join(f"{p}:{HOLD}" for p in armed.split(","))
    tags = write_task_docs(tmp_path / "docs", DOCS, 3, seed=SEED)
    d: DaemonProcess = await launch({"SIDECAR_FAILDELAY": spec})
    tray = Tray(await d.connect())
    second = await d.connect()  # the other window: no hello, so it only sends requests
    try:
        await tray.request({"type": "hello", "protocol": 1, "client": "tray"})
        agent_id = await make_agent(tray.c, tmp_path / "docs", "Cancelled")
        run_id = (await tray.request({"type": "run_agent", "agent_id": agent_id}))["run_id"]
        seen = len(d.stderr_lines)
        pending: list[asyncio.Task[dict[str, Any]]] = []
        for n, point in enumerate(points):
            seen = await announced(d, point, run_id, seen) + 1
            who = tray.c if n == 0 else second
            pending.append(asyncio.create_task(who.request(
                {"type": "cancel_run", "run_id": run_id}, timeout=30)))
        replies = await asyncio.gather(*pending)
        assert all(r["type"] == "cancel_run_result" for r in replies), replies
        assert replies[0]["cancelled"], replies
        run = await tray.run_finished(run_id)
        assert run["status"] == "cancelled", run
        await still_works(tray, d, tmp_path / "docs", agent_id, tags)
    finally:
        print("\n".join(d.stderr_lines[-30:]))  # shown when the test fails
        await second.close()
        await tray.close()
    figure("cancel safety", f"cancel held in {'/'.join(points)}: run status, then a full run",
           f"{run['status']}, then every record delivered")


@pytest.mark.parametrize("point", ["store.begin", "store.commit"])
async def test_shutdown_while_a_run_is_held_in_a_transaction(
        launch: Callable[[dict[str, str]], Any], tmp_path: Path, data_dir: Path,
        point: str) -> None:
    """SIGTERM (the app quitting) cancels the run mid-transaction: the daemon still exits 0
    within the shutdown budget, and the next one finds a whole store and delivers it all."""
    import signal
    import sqlite3

    tags = write_task_docs(tmp_path / "docs", DOCS, 3, seed=SEED)
    d: DaemonProcess = await launch({"SIDECAR_FAILDELAY": f"{point}:{HOLD}"})
    tray = Tray(await d.connect())
    try:
        await tray.request({"type": "hello", "protocol": 1, "client": "tray"})
        agent_id = await make_agent(tray.c, tmp_path / "docs", "Quit mid-run")
        run_id = (await tray.request({"type": "run_agent", "agent_id": agent_id}))["run_id"]
        await announced(d, point, run_id, len(d.stderr_lines))
        d.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(d.proc.wait(), 15) == 0
    finally:
        await tray.close()
    with sqlite3.connect(data_dir / "sidecar.sqlite3") as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        status = con.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    assert status == "cancelled", status
    again: DaemonProcess = await launch({})
    tray = Tray(await again.connect())
    try:
        await tray.request({"type": "hello", "protocol": 1, "client": "tray"})
        await still_works(tray, again, tmp_path / "docs", agent_id, tags)
    finally:
        await tray.close()


@pytest.mark.slow
async def test_cancel_storm_leaves_the_store_writable(
        launch: Callable[[dict[str, str]], Any], tmp_path: Path, figure: Figure) -> None:
    """500 runs cancelled at random moments (a quarter of them twice, from two windows at
    once); every run still ends with run_finished; then a save and a full run succeed."""
    rng = random.Random(SEED + 1)
    tags = write_task_docs(tmp_path / "docs", DOCS, 3, seed=SEED)
    d: DaemonProcess = await launch({})
    tray = Tray(await d.connect())
    second = await d.connect()
    try:
        await tray.request({"type": "hello", "protocol": 1, "client": "tray"})
        agent_id = await make_agent(tray.c, tmp_path / "docs", "Storm")
        # how long an uncancelled full run takes (the second: the model is loaded by then);
        # the cancels are spread over that span
        for _ in range(2):
            t0 = time.monotonic()
            first = (await tray.request({"type": "run_agent", "agent_id": agent_id,
                                         "full": True}))["run_id"]
            assert (await tray.run_finished(first, timeout=120))["status"] == "success"
            span = time.monotonic() - t0
        outcomes: Counter[str] = Counter()
        frames = 0
        t_storm = time.monotonic()
        for i in range(STORM_CANCELS):
            start = await tray.request({"type": "run_agent", "agent_id": agent_id,
                                        "full": rng.random() < 0.7}, timeout=30)
            run_id = start["run_id"]
            await asyncio.sleep(rng.uniform(0, 0.8 * span) if rng.random() < 0.8
                                else rng.uniform(0, 0.005))
            cancel = {"type": "cancel_run", "run_id": run_id}
            senders = [tray.c, second] if rng.random() < 0.25 else [tray.c]
            replies = await asyncio.gather(*(c.request(cancel, timeout=30) for c in senders))
            frames += len(senders)
            assert all(r["type"] == "cancel_run_result" for r in replies), (i, replies)
            run = await tray.run_finished(run_id, timeout=30)
            outcomes[run["status"]] += 1
            assert run["status"] in ("cancelled", "success"), (i, run)
        storm_s = time.monotonic() - t_storm
        after = await still_works(tray, d, tmp_path / "docs", agent_id, tags)
    finally:
        print("\n".join(d.stderr_lines[-30:]))  # shown when the test fails
        await second.close()
        await tray.close()
    # the cancels hit runs in flight, not only finished ones
    assert outcomes["cancelled"] >= STORM_CANCELS // 4, outcomes
    figure("cancel safety", "runs cancelled at random moments (cancel_run frames)",
           f"{STORM_CANCELS} ({frames})")
    figure("cancel safety", "of those: stopped mid-run / had already ended",
           f"{outcomes['cancelled']} / {outcomes['success']}")
    figure("cancel safety", "runs that sent run_finished; the full run after the storm",
           f"{sum(outcomes.values())} of {STORM_CANCELS}; {after['status']}")
    figure("cancel safety", "storm wall time, s", round(storm_s, 1))


# -- the store alone: the same guarantees where watchers and shutdown cancel tasks --------


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Any]:
    from sidecar.store.db import Database

    database = await Database(tmp_path / "unit.sqlite3").open()
    await database.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    yield database
    await database.close()


async def _rows(db: Any) -> list[str]:
    return [r[0] for r in await db.fetchall("SELECT k FROM t ORDER BY k")]


class Announced(logging.Handler):
    """Sees the store's failpoint announcements (logged on its worker thread)."""

    def __init__(self, point: str) -> None:
        super().__init__()
        self.point = point
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(f"failpoint {self.point}:"):
            self.seen.set()


@pytest.mark.parametrize("point", ["store.begin", "store.body", "store.commit",
                                   "store.rollback"])
async def test_a_task_cancelled_at_each_step_leaves_the_connection_free(
        db: Any, point: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a watcher's stop() or the runner's shutdown does: cancel a task mid-transaction."""
    from sidecar import failpoints

    monkeypatch.setattr(failpoints, "_DELAYS", {point: HOLD})
    announced_ = Announced(point)
    logging.getLogger("sidecar.store.db").addHandler(announced_)

    async def writer() -> None:
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO t VALUES ('a')")
            if point == "store.rollback":
                raise RuntimeError("the body fails: the rollback is what gets cancelled")

    try:
        task = asyncio.create_task(writer())
        # cancel while the held statement is in flight on the worker thread
        assert await asyncio.to_thread(announced_.seen.wait, 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            await task
    finally:
        logging.getLogger("sidecar.store.db").removeHandler(announced_)
    assert task.cancelled() or point == "store.rollback"
    assert not db.conn.in_transaction
    monkeypatch.setattr(failpoints, "_DELAYS", {})
    await db.execute("INSERT INTO t VALUES ('b')")  # the next write works
    rows = await _rows(db)
    # a cancel during COMMIT lands after it ran (as a crash there could); elsewhere: undone
    assert rows == (["a", "b"] if point == "store.commit" else ["b"]), rows


async def test_a_failed_commit_leaves_no_transaction_behind(db: Any) -> None:
    """A deferred foreign key fails at COMMIT, which leaves SQLite's transaction open."""
    await db.execute("CREATE TABLE child (p TEXT REFERENCES t(k) DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(Exception, match="FOREIGN KEY"):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO child VALUES ('nobody')")
    assert not db.conn.in_transaction
    await db.execute("INSERT INTO t VALUES ('after')")
    assert await _rows(db) == ["after"]
    assert await db.scalar("SELECT count(*) FROM child") == 0


async def test_a_transaction_nobody_owns_is_rolled_back_before_the_next(db: Any) -> None:
    await db.conn.execute("BEGIN IMMEDIATE")  # as a statement cancelled by an older version
    await db.conn.execute("INSERT INTO t VALUES ('orphan')")
    await db.execute("INSERT INTO t VALUES ('next')")
    assert await _rows(db) == ["next"]
    assert not db.conn.in_transaction


async def test_shutdown_mid_transaction_closes_the_store_and_keeps_it_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runner shutdown cancels a run mid-commit and the store closes: nothing half-written."""
    from sidecar import failpoints
    from sidecar.store.db import Database

    path = tmp_path / "shutdown.sqlite3"
    database = await Database(path).open()
    await database.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    monkeypatch.setattr(failpoints, "_DELAYS", {"store.commit": 0.3})

    async def writer() -> None:
        async with database.transaction() as conn:
            await conn.execute("INSERT INTO t VALUES ('x')")
            await conn.execute("INSERT INTO t VALUES ('y')")

    task = asyncio.create_task(writer())
    await asyncio.sleep(0.1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await database.close()
    monkeypatch.setattr(failpoints, "_DELAYS", {})
    again = await Database(path).open()
    try:
        assert await again.integrity_check() == "ok"
        assert await _rows(again) in ([], ["x", "y"])
        await again.execute("INSERT INTO t VALUES ('z')")
    finally:
        await again.close()
