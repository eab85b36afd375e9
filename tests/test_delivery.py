"""Outbox delivery through the real daemon: order, window, acks, errors, re-sends, restarts."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from sidecar import protocol as p
from sidecar.client import DaemonProcess, SidecarClient
from sidecar.store import Store
from sidecar.store.outbox import NewEntry, idempotency_key

AGENT = "a_test"


async def queue_items(data_dir: Path, n: int, run_id: str | None = None,
                      start: int = 0) -> list[str]:
    async with Store(data_dir / "sidecar.sqlite3") as store:
        items = [NewEntry(idempotency_key=idempotency_key(AGENT, "h" * 8, i), agent_id=AGENT,
                         run_id=run_id, table="tasks",
                         data={"title": f"Task {i}", "status": "todo", "priority": "medium"},
                         meta={"source": {"path": f"/docs/{i}.md", "span": [0, 6]},
                               "confidence": 0.9})
                 for i in range(start, start + n)]
        assert await store.outbox.enqueue(items) == n
        assert await store.outbox.enqueue(items[:3]) == 0  # same keys: ignored
    return [i.idempotency_key for i in items]


async def outbox_states(data_dir: Path) -> dict[str, int]:
    async with Store(data_dir / "sidecar.sqlite3") as store:
        rows = await store.db.fetchall("SELECT state, count(*) AS n FROM outbox GROUP BY state")
    return {r["state"]: r["n"] for r in rows}


async def receive(client: SidecarClient, n: int, timeout: float = 20) -> list[dict]:
    return [await client.next_push("tool_call", timeout=timeout) for _ in range(n)]


async def test_pending_items_flow_after_hello_in_order_with_seed_shape(
    data_dir: Path, token: str
) -> None:
    keys = await queue_items(data_dir, 150)
    d = await DaemonProcess.start(data_dir, token=token)
    try:
        c = await d.connect()
        await asyncio.sleep(0.3)
        assert c.pushed.empty(), "nothing is pushed before hello"
        await c.hello()
        calls = []
        for _ in range(150):  # ack as they come: the window is 64
            calls.append(await c.next_push("tool_call"))
            await c.ack(calls[-1], result={"id": calls[-1]["id"]})
        assert [f["idempotency_key"] for f in calls] == keys
        first = calls[0]
        assert first["action"] == "insert" and first["table"] == "tasks"
        assert first["data"] == {"title": "Task 0", "status": "todo", "priority": "medium",
                                 "isAiSuggested": 1, "isApproved": 0}
        assert first["source"] == {"path": "/docs/0.md", "span": [0, 6]}
        assert first["confidence"] == 0.9 and first["agent_id"] == AGENT
        status = None
        for _ in range(50):
            status = await c.request({"type": "status"})
            if status["outbox_pending"] == 0:
                break
            await asyncio.sleep(0.1)
        assert status is not None and status["outbox_pending"] == 0
        await c.close()
    finally:
        assert await d.stop() == 0
    assert await outbox_states(data_dir) == {"acked": 150}


async def test_window_bounds_calls_in_flight(data_dir: Path, token: str) -> None:
    await queue_items(data_dir, 40)
    d = await DaemonProcess.start(data_dir, token=token,
                                  env={"SIDECAR_DELIVERY_WINDOW": "8"})
    try:
        c = await d.connect()
        await c.hello()
        first = await receive(c, 8)
        await asyncio.sleep(0.5)
        assert c.pushed.empty(), "no more than the window is in flight"
        await c.ack(first[0])
        nxt = await c.next_push("tool_call")
        assert nxt["idempotency_key"].endswith(":8")
        await c.close()
    finally:
        await d.stop()


async def test_timeout_resends_with_the_same_id(data_dir: Path, token: str) -> None:
    await queue_items(data_dir, 1)
    d = await DaemonProcess.start(data_dir, token=token,
                                  env={"SIDECAR_INSERT_TIMEOUT_SECONDS": "1"})
    try:
        c = await d.connect()
        await c.hello()
        first = await c.next_push("tool_call")
        again = await c.next_push("tool_call", timeout=10)
        assert again["id"] == first["id"] and again == first
        await c.ack(again)
        await c.ack(first)  # a late duplicate ack is harmless: no error frame
        await asyncio.sleep(0.3)
        assert c.errors.empty()
        await c.close()
    finally:
        await d.stop()
    assert await outbox_states(data_dir) == {"acked": 1}


async def test_error_results_are_recorded_against_the_run(data_dir: Path, token: str) -> None:
    async with Store(data_dir / "sidecar.sqlite3") as store:
        run = await store.runs.start(AGENT, "local", "manual")
        await store.runs.complete(run["id"], documents=1, errors=[])
    await queue_items(data_dir, 3, run_id=run["id"])
    d = await DaemonProcess.start(data_dir, token=token)
    try:
        c = await d.connect()
        await c.hello()
        calls = await receive(c, 3)
        await c.ack(calls[0])
        await c.ack(calls[1], error="UNIQUE constraint failed: tasks.title")
        await c.ack(calls[2])
        runs: dict = {}
        for _ in range(50):
            runs = await c.request({"type": "run_list", "agent_id": AGENT})
            if runs["runs"][0]["items_created"] == 2 and runs["runs"][0]["errors"]:
                break
            await asyncio.sleep(0.1)
        r = runs["runs"][0]
        assert r["items_created"] == 2 and r["status"] == "partial"
        assert r["errors"] == ["Insert failed (tasks, '/docs/1.md'): UNIQUE constraint failed: "
                               "tasks.title"]
        await c.close()
    finally:
        await d.stop()
    assert await outbox_states(data_dir) == {"acked": 2, "failed": 1}


async def test_disconnect_then_reconnect_delivers_the_rest_once(data_dir: Path,
                                                                token: str) -> None:
    keys = await queue_items(data_dir, 60)
    d = await DaemonProcess.start(data_dir, token=token,
                                  env={"SIDECAR_DELIVERY_WINDOW": "16"})
    acked: list[str] = []
    try:
        c = await d.connect()
        await c.hello()
        for f in await receive(c, 10):
            await c.ack(f)
            acked.append(f["idempotency_key"])
        await receive(c, 6)  # in flight, never acked: the client vanishes
        await asyncio.sleep(0.3)
        await c.close()
        c2 = await d.connect()
        await c2.hello()
        while len(acked) < 60:
            f = await c2.next_push("tool_call", timeout=20)
            assert f["idempotency_key"] not in acked, "an acked item came back"
            await c2.ack(f)
            acked.append(f["idempotency_key"])
        await asyncio.sleep(0.5)
        assert c2.pushed.empty()
        await c2.close()
    finally:
        await d.stop()
    assert sorted(acked) == sorted(keys)
    assert await outbox_states(data_dir) == {"acked": 60}


@pytest.mark.parametrize("kill_after", [0, 7, 33])
async def test_kill_9_loses_nothing_and_restart_delivers_the_rest(
    data_dir: Path, token: str, kill_after: int
) -> None:
    keys = await queue_items(data_dir, 50)
    received: dict[str, int] = {}
    d = await DaemonProcess.start(data_dir, token=token)
    c = await d.connect()
    await c.hello()
    for f in await receive(c, kill_after):
        received[f["idempotency_key"]] = received.get(f["idempotency_key"], 0) + 1
        await c.ack(f)
    await asyncio.sleep(0.2)  # let the acks commit
    d.proc.send_signal(signal.SIGKILL)
    await d.proc.wait()
    await c.close()

    d2 = await DaemonProcess.start(data_dir, token=token)
    try:
        c2 = await d2.connect()
        await c2.hello()
        while sum(1 for k in keys if k in received) < len(keys):
            f = await c2.next_push("tool_call", timeout=20)
            received[f["idempotency_key"]] = received.get(f["idempotency_key"], 0) + 1
            await c2.ack(f)
        await asyncio.sleep(0.5)
        assert c2.pushed.empty()
        await c2.close()
    finally:
        await d2.stop()
    assert set(received) == set(keys), "lost items"
    assert max(received.values()) == 1, "an acked item was delivered again"
    assert await outbox_states(data_dir) == {"acked": 50}


async def test_sigterm_with_calls_in_flight_exits_cleanly(data_dir: Path, token: str) -> None:
    await queue_items(data_dir, 100)
    d = await DaemonProcess.start(data_dir, token=token)
    c = await d.connect()
    await c.hello()
    await receive(c, 64)  # the whole window in flight, none acked
    assert await d.stop(timeout=10) == 0
    await c.close()
    assert await outbox_states(data_dir) == {"pending": 100}


class _AckingWhileSending:
    """A peer whose send() yields, and whose ack lands before send() returns."""

    closed = False

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.delivery: object = None

    async def send_str(self, data: str) -> None:
        import json

        self.sent.append(data)
        frame = json.loads(data)
        await self.delivery.on_tool_result(  # type: ignore[attr-defined]
            self.client, p.ToolResult(id=frame["id"], result={"ok": True}))
        await asyncio.sleep(0.01)


async def test_an_ack_that_lands_while_send_awaits_is_not_resent(data_dir: Path) -> None:
    """The call is in flight before the send, so the ack finds it and no timeout re-sends it."""
    from sidecar.delivery import Delivery
    from sidecar.hub import Client, Hub

    await queue_items(data_dir, 5)
    async with Store(data_dir / "sidecar.sqlite3") as store:
        hub = Hub()
        delivery = Delivery(hub, store.outbox, timeout=0.2)
        peer = _AckingWhileSending()
        client = Client(peer)  # type: ignore[arg-type]
        client.ready = True
        hub.clients[client.id] = client
        peer.client, peer.delivery = client, delivery  # type: ignore[attr-defined]
        await delivery.start()
        try:
            assert await delivery.drained(timeout=10)
            await asyncio.sleep(0.6)  # three timeouts: a call stuck in flight would be re-sent
        finally:
            await delivery.stop()
        assert len(peer.sent) == 5 and delivery.resent == 0
        assert await store.outbox.count("pending") == 0
