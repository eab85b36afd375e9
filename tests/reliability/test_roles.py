"""Second clients: a silent writer and a silent observer beside the acking writer take nothing.

Electron's main window says hello (no role: a writer, as every client did before roles); a
renderer window that also says hello as a writer but never acks, and a tray view that says
hello as an observer, connect after it. The silent writer is the newest writer, so the first
inserts go to it; each call it leaves unacked for the insert timeout must go to the acking
writer, and the silent one gets no new calls until it acks. The observer sees the run's
frames and never a tool_call.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar.client import DaemonProcess, SidecarClient
from sidecar.store import Store
from sidecar.store.outbox import NewEntry, idempotency_key
from tests.reliability.taskdocs import make_agent, write_task_docs

Figure = Callable[[str, str, Any], None]

INSERT_TIMEOUT = 2.0


async def ack_each(c: SidecarClient, n: int) -> list[str]:
    """Take and ack ``n`` tool_calls; their keys in arrival order."""
    keys = []
    for _ in range(n):
        frame = await c.next_push("tool_call", timeout=20)
        keys.append(frame["idempotency_key"])
        await c.ack(frame)
    return keys


def drain(c: SidecarClient) -> list[dict[str, Any]]:
    out = []
    while not c.pushed.empty():
        out.append(c.pushed.get_nowait())
    return out


async def test_silent_writer_and_observer_leave_every_record_to_the_acking_writer(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path, figure: Figure) -> None:
    tags = write_task_docs(tmp_path / "docs", files=4, per_file=3, seed=4)
    d = await DaemonProcess.start(
        data_dir, token=token, extra_args=["--model-dir", str(model_dir)],
        env={"SIDECAR_INSERT_TIMEOUT_SECONDS": str(INSERT_TIMEOUT)})
    main = silent = tray = None
    try:
        main = await d.connect()
        assert (await main.hello(client="electron-main"))["type"] == "hello_result"
        silent = await d.connect()
        assert (await silent.hello(client="renderer", role="writer"))["type"] == "hello_result"
        tray = await d.connect()
        assert (await tray.hello(client="tray", role="observer"))["type"] == "hello_result"

        agent = await make_agent(main, tmp_path / "docs")
        run_id = (await main.request({"type": "run_agent", "agent_id": agent}))["run_id"]
        received: Counter[str] = Counter()
        acked: set[str] = set()
        after_ack: list[str] = []
        titles: list[str] = []
        finished: dict[str, Any] | None = None
        t0 = time.monotonic()
        while finished is None:
            assert time.monotonic() - t0 < 240, "the run did not finish"
            frame = await main.next_push(None, timeout=240)
            if frame["type"] == "tool_call":
                key = frame["idempotency_key"]
                if key in acked:
                    after_ack.append(key)
                received[key] += 1
                titles.append(str(frame["data"].get("title", "")))
                await main.ack(frame)
                acked.add(key)
            elif frame["type"] == "run_finished" and frame["run"]["id"] == run_id:
                finished = frame["run"]
        run_s = time.monotonic() - t0
        quiet = time.monotonic()
        while time.monotonic() - quiet < 2 * INSERT_TIMEOUT:  # nothing else may come
            with contextlib.suppress(TimeoutError):
                frame = await main.next_push("tool_call", timeout=0.2)
                after_ack.append(frame["idempotency_key"])
        status = await main.request({"type": "status"})
        silent_frames, tray_frames = drain(silent), drain(tray)
    finally:
        for c in (main, silent, tray):
            if c is not None:
                await c.close()
        await d.stop()

    async with Store(data_dir / "sidecar.sqlite3") as store:
        rows = await store.db.fetchall("SELECT idempotency_key, state FROM outbox")
    queued = {r["idempotency_key"]: r["state"] for r in rows}
    silent_calls = [f for f in silent_frames if f["type"] == "tool_call"]
    tray_types = Counter(f["type"] for f in tray_frames)
    moved = len({f["idempotency_key"] for f in silent_calls})
    got_tags = set(re.findall(r"notes\d+x\d+", " ".join(titles).lower()))

    figure("roles", "records delivered to the acking writer (silent writer + observer)",
           f"{len(set(received) & set(queued))}/{len(queued)}")
    figure("roles", "calls the silent writer sat on, moved after the timeout", moved)
    figure("roles", "tool_calls to the observer", tray_types["tool_call"])
    figure("roles", f"run with a silent writer (insert timeout {INSERT_TIMEOUT:.0f} s), s",
           round(run_s, 1))

    assert queued and set(queued.values()) == {"acked"}, Counter(queued.values())
    assert set(received) == set(queued), "a queued record never reached the acking writer"
    assert not after_ack, f"records came back after their ack: {after_ack[:5]}"
    assert got_tags == tags, f"task lines that never arrived: {sorted(tags - got_tags)[:5]}"
    assert silent_calls, "the silent writer was the newest writer: the first calls go to it"
    assert finished["status"] == "success" and finished["items_created"] == len(queued), finished
    assert status["outbox_pending"] == 0
    assert tray_types["tool_call"] == 0, tray_types
    assert tray_types["run_started"] == 1 and tray_types["run_finished"] == 1, tray_types
    assert tray_types["run_progress"] >= 1, tray_types


async def test_observer_alone_gets_no_insert_and_a_writer_gets_them_all(
        data_dir: Path, token: str) -> None:
    """Records wait for a writer; an unknown role is refused with the field named."""
    async with Store(data_dir / "sidecar.sqlite3") as store:
        keys = [idempotency_key("a_obs", "doc", i) for i in range(20)]
        await store.outbox.enqueue([
            NewEntry(idempotency_key=k, agent_id="a_obs", run_id=None, table="tasks",
                    data={"title": f"Task {i}"}) for i, k in enumerate(keys)])
    d = await DaemonProcess.start(data_dir, token=token)
    try:
        tray = await d.connect()
        bad = await tray.hello(role="boss")
        assert bad["type"] == "error" and bad["field"] == "role", bad
        assert bad["code"] == "invalid_field" and "observer" in bad["message"], bad
        assert (await tray.hello(role="observer"))["type"] == "hello_result"
        await asyncio.sleep(1.0)
        assert not [f for f in drain(tray) if f["type"] == "tool_call"]
        writer = await d.connect()
        await writer.hello(role="writer")
        got = await ack_each(writer, len(keys))
        await asyncio.sleep(0.5)
        assert not [f for f in drain(tray) if f["type"] == "tool_call"]
        assert got == keys
        await tray.close()
        await writer.close()
    finally:
        await d.stop()


async def test_a_writer_that_becomes_an_observer_hands_its_calls_over_at_once(
        data_dir: Path, token: str) -> None:
    """hello again with role observer: its unacked calls go to the other writer now, not
    after the insert timeout (600 s here), and it gets no tool_call from then on."""
    async with Store(data_dir / "sidecar.sqlite3") as store:
        keys = [idempotency_key("a_swap", "doc", i) for i in range(10)]
        await store.outbox.enqueue([
            NewEntry(idempotency_key=k, agent_id="a_swap", run_id=None, table="tasks",
                    data={"title": f"Task {i}"}) for i, k in enumerate(keys)])
    d = await DaemonProcess.start(data_dir, token=token,
                                  env={"SIDECAR_INSERT_TIMEOUT_SECONDS": "600"})
    try:
        window = await d.connect()
        await window.hello()  # the only writer: it gets every call
        first = [await window.next_push("tool_call", timeout=20) for _ in keys]
        other = await d.connect()
        await other.hello()
        await asyncio.sleep(0.5)
        assert other.pushed.empty(), "calls in flight stay with their writer"
        assert (await window.hello(role="observer"))["type"] == "hello_result"
        got = await ack_each(other, len(keys))  # at once: the insert timeout is 600 s
        await asyncio.sleep(0.5)
        assert not [f for f in drain(window) if f["type"] == "tool_call"]
        assert sorted(got) == sorted(keys) == sorted(f["idempotency_key"] for f in first)
        status = await other.request({"type": "status"})
        for _ in range(50):
            if status["outbox_pending"] == 0:
                break
            await asyncio.sleep(0.1)
            status = await other.request({"type": "status"})
        assert status["outbox_pending"] == 0
        await window.close()
        await other.close()
    finally:
        await d.stop()
