"""Delivery-aware runs through the real daemon: ``run_finished`` counts what was extracted,
delivered, failed and is still pending; ``run_delivered`` comes once, when the run's last
record is acked or fails for good; ``hello_result.last_runs`` lets a reconnecting app
catch up without asking."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sidecar.client import DaemonProcess, SidecarClient
from tests.reliability.taskdocs import make_agent, write_task_docs


async def frames_until(c: SidecarClient, type_: str, run_id: str, timeout: float = 120
                       ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first ``type_`` frame of ``run_id``, and every frame seen before it."""
    seen = []
    while True:
        frame = await c.next_push(None, timeout=timeout)
        run = frame.get("run") or {}
        if frame["type"] == type_ and run.get("id") == run_id:
            return frame, seen
        seen.append(frame)


def pushed_now(c: SidecarClient) -> list[dict[str, Any]]:
    return [c.pushed.get_nowait() for _ in range(c.pushed.qsize())]


def last_run(hello: dict[str, Any], run_id: str) -> dict[str, Any]:
    runs = [r for r in hello["last_runs"] if r["id"] == run_id]
    assert len(runs) == 1, hello["last_runs"]
    return runs[0]


async def test_a_run_while_the_app_is_away_is_counted_caught_up_and_delivered_once(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    write_task_docs(tmp_path / "docs", files=2, per_file=2, seed=7)
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    tray = app = late = None
    try:
        tray = await d.connect()  # an observer only: nobody takes inserts during the run
        hello = await tray.hello(client="tray", role="observer")
        assert hello["last_runs"] == []
        agent = await make_agent(tray, tmp_path / "docs")
        run_id = (await tray.request({"type": "run_agent", "agent_id": agent}))["run_id"]
        finished, _ = await frames_until(tray, "run_finished", run_id)
        run = finished["run"]
        n = run["extracted"]
        assert n >= 4, run  # four task lines
        assert (run["delivered"], run["failed"], run["pending"]) == (0, 0, n), run
        await asyncio.sleep(0.5)
        assert not [f for f in pushed_now(tray) if f["type"] == "run_delivered"], \
            "nothing was delivered yet"

        app = await d.connect()  # the app comes back: hello tells it about the run
        hello = await app.hello(client="electron-main")
        seen = last_run(hello, run_id)
        assert seen["agent_id"] == agent and seen["status"] == "success"
        assert (seen["extracted"], seen["delivered"], seen["pending"]) == (n, 0, n)
        calls = []
        while len(calls) < n:
            frame = await app.next_push(None, timeout=30)
            assert frame["type"] != "run_delivered", "run_delivered before the last ack"
            if frame["type"] == "tool_call":
                calls.append(frame)
        assert {c["run_id"] for c in calls} == {run_id}
        for call in calls[:-1]:
            await app.ack(call)
        await asyncio.sleep(0.5)
        assert not [f for f in pushed_now(app) if f["type"] == "run_delivered"], \
            "one record is still pending"
        await app.send_raw(json.dumps({"type": "tool_result", "id": calls[-1]["id"],
                                       "error": "NOT NULL constraint failed: tasks.title"}))
        delivered = {}
        for c in (app, tray):  # every client that said hello hears it
            frame, _ = await frames_until(c, "run_delivered", run_id, timeout=15)
            delivered[c] = frame["run"]
        for r in delivered.values():
            assert (r["extracted"], r["delivered"], r["failed"], r["pending"]) == (n, n - 1, 1, 0)
            assert r["status"] == "partial" and r["items_created"] == n - 1
        await asyncio.sleep(1.0)
        assert not [f for f in pushed_now(app) + pushed_now(tray)
                    if f["type"] == "run_delivered"], "run_delivered is sent once"

        late = await d.connect()
        seen = last_run(await late.hello(client="later", role="observer"), run_id)
        assert (seen["delivered"], seen["failed"], seen["pending"]) == (n - 1, 1, 0)
        assert seen["status"] == "partial"
    finally:
        for c in (tray, app, late):
            if c is not None:
                await c.close()
        await d.stop()


async def test_run_delivered_waits_for_a_retried_record_and_follows_run_finished(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    write_task_docs(tmp_path / "docs", files=1, per_file=2, seed=3)
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        agent = await make_agent(c, tmp_path / "docs")
        run_id = (await c.request({"type": "run_agent", "agent_id": agent}))["run_id"]
        retried: dict[str, Any] | None = None
        acked = 0
        finished = None
        while finished is None:
            frame = await c.next_push(None, timeout=120)
            if frame["type"] == "tool_call" and retried is None:
                retried = frame
                await c.send_raw(json.dumps({"type": "tool_result", "id": frame["id"],
                                             "error": "SQLITE_BUSY", "retryable": True}))
            elif frame["type"] == "tool_call":
                await c.ack(frame)
                acked += 1
            elif frame["type"] == "run_delivered":
                raise AssertionError(f"run_delivered while a record waits: {frame}")
            elif frame["type"] == "run_finished":
                finished = frame["run"]
        assert retried is not None and acked >= 1
        # the run closes without waiting out the backoff; the retried record is pending
        assert (finished["extracted"], finished["delivered"], finished["pending"]) == (
            acked + 1, acked, 1), finished
        again = await c.next_push("tool_call", timeout=15)
        assert again["id"] == retried["id"]
        await c.ack(again)
        frame, _ = await frames_until(c, "run_delivered", run_id, timeout=15)
        r = frame["run"]
        assert (r["delivered"], r["failed"], r["pending"]) == (acked + 1, 0, 0)
        assert r["status"] == "success" and r["items_created"] == acked + 1
        await c.close()
    finally:
        await d.stop()


async def test_a_run_that_finds_nothing_is_delivered_at_once(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        agent = await make_agent(c, tmp_path / "empty")
        run_id = (await c.request({"type": "run_agent", "agent_id": agent}))["run_id"]
        finished, _ = await frames_until(c, "run_finished", run_id)
        assert (finished["run"]["extracted"], finished["run"]["pending"]) == (0, 0)
        frame = await c.next_push(None, timeout=10)
        assert frame["type"] == "run_delivered" and frame["run"]["id"] == run_id
        assert frame["run"]["extracted"] == 0
        await c.close()
    finally:
        await d.stop()


async def test_delivered_is_marked_once_and_never_while_running_or_pending(
        tmp_path: Path) -> None:
    """The race the daemon has (a run's close and its last ack settle at the same moment)
    played in process: whichever comes second finds the mark and sends nothing."""
    from sidecar.store import Store
    from sidecar.store.outbox import NewEntry, Settled, call_id_for

    async with Store(tmp_path / "s.sqlite3") as store:
        run = await store.runs.start("a_1", "local", "manual")
        await store.outbox.enqueue([NewEntry(idempotency_key="a_1:k", agent_id="a_1",
                                            run_id=run["id"], table="tasks",
                                            data={"title": "x"})])
        await store.outbox.settle([Settled(call_id_for("a_1:k"))])
        assert await store.outbox.mark_delivered(run["id"]) is None, "the run is running"
        await store.runs.complete(run["id"], documents=1, errors=[])
        first = await store.outbox.mark_delivered(run["id"])
        assert first is not None and first["delivered"] == 1 and first["pending"] == 0
        assert await store.outbox.mark_delivered(run["id"]) is None, "once"

        other = await store.runs.start("a_1", "local", "manual")
        await store.outbox.enqueue([NewEntry(idempotency_key="a_1:j", agent_id="a_1",
                                            run_id=other["id"], table="tasks",
                                            data={"title": "y"})])
        await store.runs.complete(other["id"], documents=1, errors=[])
        assert await store.outbox.mark_delivered(other["id"]) is None, "one is pending"
        await store.outbox.settle([Settled(call_id_for("a_1:j"), "busy", retryable=True)])
        assert await store.outbox.mark_delivered(other["id"]) is None, "a retry is pending"
        applied = await store.outbox.settle([Settled(call_id_for("a_1:j"), "bad")])
        assert applied.runs == {other["id"]}
        done = await store.outbox.mark_delivered(other["id"])
        assert done is not None and (done["failed"], done["status"]) == (1, "error")


async def test_a_run_a_crash_interrupted_is_delivered_once_nothing_is_pending(
        data_dir: Path, token: str) -> None:
    """A stop between a run's close and its mark, or a crash mid-run: after the restart the
    run log says delivered when nothing of it waits, and pending while something does."""
    from sidecar.store import Store
    from sidecar.store.outbox import NewEntry

    async with Store(data_dir / "sidecar.sqlite3") as store:
        empty = await store.runs.start("a_1", "local", "manual")  # left running by a kill
        busy = await store.runs.start("a_1", "local", "manual")
        await store.outbox.enqueue([NewEntry(idempotency_key="a_1:p", agent_id="a_1",
                                            run_id=busy["id"], table="tasks",
                                            data={"title": "p"})])
    d = await DaemonProcess.start(data_dir, token=token)
    try:
        c = await d.connect()
        await c.request({"type": "hello", "role": "observer"})
        runs = {r["id"]: r for r in (await c.request(
            {"type": "run_list", "agent_id": "a_1"}))["runs"]}
        assert runs[empty["id"]]["status"] == "error"  # interrupted
        assert runs[empty["id"]]["delivered_at"] is not None and runs[empty["id"]]["pending"] == 0
        assert runs[busy["id"]]["delivered_at"] is None and runs[busy["id"]]["pending"] == 1
        w = await d.connect()
        await w.hello()
        await w.ack(await w.next_push("tool_call", timeout=10))
        frame, _ = await frames_until(c, "run_delivered", busy["id"], timeout=10)
        assert frame["run"]["delivered"] == 1
        await w.close()
        await c.close()
    finally:
        await d.stop()


async def test_hello_is_answered_even_when_the_last_runs_cannot_be_read(tmp_path: Path) -> None:
    from sidecar.appkeys import STORE
    from sidecar.handlers import last_runs
    from sidecar.store import Store

    store = await Store(tmp_path / "s.sqlite3").open()
    await store.close()  # every read now fails
    assert await last_runs({STORE: store}) is None  # type: ignore[arg-type]
