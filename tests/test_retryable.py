"""Retryable inserts through the real daemon: ``tool_result`` with ``retryable: true`` and an
``error`` puts the call back in the outbox (same id, capped exponential backoff, kept across
a kill -9); a plain error still records a failed insert and makes the run ``partial``."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

from sidecar.client import DaemonProcess, SidecarClient
from sidecar.store import Store
from sidecar.store.outbox import NewEntry, idempotency_key, retry_delay

AGENT = "a_retry"


async def queue(data_dir: Path, n: int, *, with_run: bool = True) -> tuple[str | None, list[str]]:
    """``n`` tasks queued for a closed run (as a run leaves them when no app is connected)."""
    async with Store(data_dir / "sidecar.sqlite3") as store:
        run_id = None
        if with_run:
            run = await store.runs.start(AGENT, "local", "manual")
            run_id = run["id"]
            await store.runs.complete(run_id, documents=n, errors=[])
        items = [NewEntry(idempotency_key=idempotency_key(AGENT, "doc", i), agent_id=AGENT,
                         run_id=run_id, table="tasks", data={"title": f"Task {i}"},
                         meta={"source": {"path": f"/docs/{i}.md"}}) for i in range(n)]
        assert await store.outbox.enqueue(items) == n
    return run_id, [i.idempotency_key for i in items]


async def retry(c: SidecarClient, call: dict[str, Any], error: str = "SQLITE_BUSY") -> None:
    await c.send_raw(json.dumps({"type": "tool_result", "id": call["id"], "error": error,
                                 "retryable": True}))


async def rows(data_dir: Path) -> dict[str, dict[str, Any]]:
    async with Store(data_dir / "sidecar.sqlite3") as store:
        found = await store.db.fetchall(
            "SELECT idempotency_key, state, attempts, last_error, next_at FROM outbox")
    return {r["idempotency_key"]: dict(r) for r in found}


async def run_row(data_dir: Path, run_id: str) -> dict[str, Any]:
    async with Store(data_dir / "sidecar.sqlite3") as store:
        run = await store.runs.get(run_id)
    assert run is not None
    return run


def test_backoff_doubles_from_one_second_and_stops_at_five_minutes() -> None:
    assert [retry_delay(n) for n in range(1, 12)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert retry_delay(10_000) == 300  # no overflow after days of retries


async def test_retryable_error_resends_the_same_call_with_backoff_until_acked(
        data_dir: Path, token: str) -> None:
    run_id, keys = await queue(data_dir, 3)
    assert run_id is not None
    d = await DaemonProcess.start(data_dir, token=token)
    try:
        c = await d.connect()
        await c.hello()
        calls = [await c.next_push("tool_call") for _ in range(3)]
        await c.ack(calls[0])
        await retry(c, calls[1])
        t_first = time.monotonic()
        await c.ack(calls[2])
        again = await c.next_push("tool_call", timeout=15)
        gap1 = time.monotonic() - t_first
        assert again == calls[1], "the same call (same id, same frame) comes back"
        await asyncio.sleep(0.3)
        mid = await rows(data_dir)
        assert mid[keys[1]]["state"] == "pending" and mid[keys[1]]["attempts"] == 1
        assert mid[keys[1]]["last_error"] == "SQLITE_BUSY"
        run = await run_row(data_dir, run_id)
        assert run["status"] == "success" and run["errors"] == [], "a retry is not a failure"
        await retry(c, again)
        t_second = time.monotonic()
        third = await c.next_push("tool_call", timeout=15)
        gap2 = time.monotonic() - t_second
        assert third["id"] == calls[1]["id"]
        assert gap1 >= 0.9 and gap2 >= 1.9, (gap1, gap2)  # 1 s, then 2 s: never sooner
        await c.ack(third, result={"id": 42})
        await asyncio.sleep(0.5)
        assert c.pushed.empty() or all(f["type"] != "tool_call" for f in
                                       [c.pushed.get_nowait() for _ in range(c.pushed.qsize())])
        await c.close()
    finally:
        await d.stop()
    final = await rows(data_dir)
    assert {k: r["state"] for k, r in final.items()} == dict.fromkeys(keys, "acked")
    assert final[keys[1]]["attempts"] == 3
    run = await run_row(data_dir, run_id)
    assert run["status"] == "success" and run["items_created"] == 3 and run["errors"] == []


async def test_a_plain_error_still_fails_the_insert_and_the_run_is_partial(
        data_dir: Path, token: str) -> None:
    run_id, keys = await queue(data_dir, 2)
    assert run_id is not None
    d = await DaemonProcess.start(data_dir, token=token)
    try:
        c = await d.connect()
        await c.hello()
        calls = [await c.next_push("tool_call") for _ in range(2)]
        await c.ack(calls[0])
        await c.send_raw(json.dumps({"type": "tool_result", "id": calls[1]["id"],
                                     "error": "NOT NULL constraint failed", "retryable": False}))
        await asyncio.sleep(2.5)  # past the first retry time: nothing may come back
        assert all(f["type"] != "tool_call" for f in
                   [c.pushed.get_nowait() for _ in range(c.pushed.qsize())])
        await c.close()
    finally:
        await d.stop()
    final = await rows(data_dir)
    assert final[keys[1]]["state"] == "failed" and final[keys[1]]["next_at"] is None
    run = await run_row(data_dir, run_id)
    assert run["status"] == "partial" and run["items_created"] == 1
    assert run["errors"] == ["Insert failed (tasks, '/docs/1.md'): NOT NULL constraint failed"]


async def test_later_calls_do_not_wait_behind_a_retried_one(data_dir: Path, token: str) -> None:
    _, keys = await queue(data_dir, 3, with_run=False)
    d = await DaemonProcess.start(data_dir, token=token, env={"SIDECAR_DELIVERY_WINDOW": "1"})
    try:
        c = await d.connect()
        await c.hello()
        first = await c.next_push("tool_call")
        await retry(c, first)
        order = [first["idempotency_key"]]
        for _ in range(3):
            f = await c.next_push("tool_call", timeout=15)
            order.append(f["idempotency_key"])
            await c.ack(f)
        await c.close()
    finally:
        await d.stop()
    # the window of one frees at once: 1 and 2 go while 0 waits its second, then 0 again
    assert order == [keys[0], keys[1], keys[2], keys[0]], order
    assert {r["state"] for r in (await rows(data_dir)).values()} == {"acked"}


async def test_a_retry_survives_kill_9_and_is_sent_again_after_restart(
        data_dir: Path, token: str) -> None:
    _, keys = await queue(data_dir, 2, with_run=False)
    d = await DaemonProcess.start(data_dir, token=token)
    c = await d.connect()
    await c.hello()
    calls = [await c.next_push("tool_call") for _ in range(2)]
    await c.ack(calls[0])
    await retry(c, calls[1], "database is locked")
    await asyncio.sleep(0.3)  # the retry is committed (state pending, next_at set)
    d.proc.send_signal(signal.SIGKILL)
    await d.proc.wait()
    await c.close()
    saved = await rows(data_dir)
    assert saved[keys[1]]["state"] == "pending" and saved[keys[1]]["next_at"] is not None
    assert saved[keys[1]]["attempts"] == 1 and saved[keys[1]]["last_error"] == "database is locked"

    d2 = await DaemonProcess.start(data_dir, token=token)
    seen: list[dict[str, Any]] = []
    try:
        c2 = await d2.connect()
        await c2.hello()
        f = await c2.next_push("tool_call", timeout=15)
        seen.append(f)
        await c2.ack(f)
        await asyncio.sleep(1.5)
        seen += [x for x in [c2.pushed.get_nowait() for _ in range(c2.pushed.qsize())]
                 if x["type"] == "tool_call"]
        await c2.close()
    finally:
        await d2.stop()
    assert [s["id"] for s in seen] == [calls[1]["id"]], "the retried call, once; not the acked one"
    assert {r["state"] for r in (await rows(data_dir)).values()} == {"acked"}


async def test_a_storm_of_retryable_errors_and_a_reconnect_loses_and_repeats_nothing(
        data_dir: Path, token: str) -> None:
    """300 records; the app answers 30% of first tries and 10% of second tries with a
    retryable error, and reconnects halfway: every record ends acked once, none comes back
    after its success was acked, none is counted failed."""
    import random

    rng = random.Random(16)
    _, keys = await queue(data_dir, 300)
    tries: dict[str, int] = {}
    acked_at: dict[str, float] = {}
    after_ack: list[str] = []
    retries = 0
    d = await DaemonProcess.start(data_dir, token=token)
    try:
        c = await d.connect()
        await c.hello()
        results = 0
        while len(acked_at) < len(keys):
            f = await c.next_push("tool_call", timeout=30)
            key = f["idempotency_key"]
            if key in acked_at and time.monotonic() - acked_at[key] > 0.3:
                after_ack.append(key)
                await c.ack(f)
                continue
            tries[key] = tries.get(key, 0) + 1
            chance = {1: 0.3, 2: 0.1}.get(tries[key], 0.0)
            if rng.random() < chance:
                await retry(c, f)
                retries += 1
            else:
                await c.ack(f)
                acked_at.setdefault(key, time.monotonic())
            results += 1
            if results == 150:  # the window closes; a new one takes over
                await asyncio.sleep(0.3)
                await c.close()
                c = await d.connect()
                await c.hello()
        await asyncio.sleep(0.5)
        await c.close()
    finally:
        await d.stop()
    final = await rows(data_dir)
    assert retries >= 60, retries
    assert not after_ack, after_ack[:5]
    assert {r["state"] for r in final.values()} == {"acked"}
    assert sum(r["attempts"] for r in final.values()) == 300 + retries
