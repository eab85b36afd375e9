"""Delivery, branch by branch, in process (issue 19): the real Delivery over a real outbox in
SQLite and the real Hub, with writers whose sockets are recorders. Windows, acks, errors,
retryable errors, timeouts moving a call to another writer, a writer turning observer or
leaving, failed sends and settles, run_delivered and drained. Every expected value is
written by hand (keys, counts, frame fields), never read back from the code under test.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar import protocol as p
from sidecar.delivery import Delivery, tool_call_for
from sidecar.hub import Client, Hub
from sidecar.store import Store
from sidecar.store.outbox import Entry, NewEntry, Settled
from tests.test_runner_cancel import RecordingHub

_hellos = itertools.count(1)


class Peer:
    """A writer's socket: keeps every frame sent to it; with ``acks`` it answers each insert
    while the send still awaits, as a fast app does; ``fail`` makes sends raise."""

    def __init__(self, acks: bool = False) -> None:
        self.closed = False
        self.acks = acks
        self.fail = False
        self.frames: list[dict[str, Any]] = []
        self.client: Client | None = None
        self.delivery: Delivery | None = None

    async def send_str(self, data: str) -> None:
        if self.fail:
            raise ConnectionResetError("connection reset by peer")
        frame = json.loads(data)
        self.frames.append(frame)
        if self.acks and frame["type"] == "tool_call":
            assert self.delivery is not None and self.client is not None
            await self.delivery.on_tool_result(self.client, p.ToolResult(
                id=frame["id"], result={"id": len(self.frames)}))

    @property
    def calls(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "tool_call"]


def writer(hub: Hub, delivery: Delivery, *, acks: bool = False) -> tuple[Client, Peer]:
    """A client that said hello as a writer (each newer than the last)."""
    peer = Peer(acks)
    client = Client(peer)  # type: ignore[arg-type]
    client.ready, client.hello_seq = True, next(_hellos)
    peer.client, peer.delivery = client, delivery
    hub.clients[client.id] = client
    return client, peer


async def until(check: Callable[[], bool | Awaitable[bool]], timeout: float = 3.0) -> bool:
    """Poll ``check`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if not isinstance(got, bool):
            got = await got
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.01)


async def ack(delivery: Delivery, client: Client, call: dict[str, Any], *,
              error: str | None = None, retryable: bool | None = None) -> bool:
    return await delivery.on_tool_result(client, p.ToolResult(
        id=call["id"], result=None if error else {"id": 1}, error=error, retryable=retryable))


def items(n: int, run_id: str | None = None, start: int = 0) -> list[NewEntry]:
    return [NewEntry(idempotency_key=f"a1:k{i}", agent_id="a1", run_id=run_id, table="tasks",
                    data={"title": f"Task {i}"}, meta={"source": {"path": f"/d/{i}.md"},
                                                       "confidence": 0.5})
            for i in range(start, start + n)]


async def states(store: Store) -> dict[str, int]:
    rows = await store.db.fetchall("SELECT state, count(*) AS n FROM outbox GROUP BY state")
    return {r["state"]: r["n"] for r in rows}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "s.db") as s:
        yield s


Started = Callable[..., Awaitable[tuple[RecordingHub, Delivery]]]


@pytest.fixture
async def started(store: Store) -> AsyncIterator[Started]:
    """Start a delivery over ``store`` with a recording hub (window 4, insert timeout 30 s
    unless told): stopped at the end of the test."""
    running: list[Delivery] = []

    async def start(**kw: Any) -> tuple[RecordingHub, Delivery]:
        hub = RecordingHub()
        delivery = Delivery(hub, store.outbox, **{"window": 4, "timeout": 30.0, **kw})
        await delivery.start()
        running.append(delivery)
        return hub, delivery

    yield start
    for delivery in running:
        await delivery.stop()


def keys(calls: list[dict[str, Any]]) -> list[str]:
    return [c["idempotency_key"] for c in calls]


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """(level, message) of what the delivery logged: an operator's account of each fault."""
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "sidecar.delivery"]


# -- the frame -----------------------------------------------------------------------------

def _entry(data: dict[str, Any], meta: dict[str, Any]) -> Entry:
    return Entry(seq=7, call_id="c_1", idempotency_key="k2:src:tasks:ab", agent_id="a1",
                 run_id="r1", table="tasks", data=data, meta=meta)


def test_tool_call_carries_the_record_its_flags_and_provenance() -> None:
    source = {"path": "/d/x.md", "span": [0, 4], "project": {"id": "p7", "by": "name"}}
    call = tool_call_for(_entry({"title": "T", "isApproved": 1},
                                {"source": source, "confidence": 0.75}))
    assert call == p.ToolCall(
        id="c_1", action="insert", table="tasks",
        data={"title": "T", "projectId": "p7", "isAiSuggested": 1, "isApproved": 0},
        agent_id="a1", run_id="r1", idempotency_key="k2:src:tasks:ab", source=source,
        confidence=0.75)


@pytest.mark.parametrize(("data", "meta", "project_id"), [
    ({"title": "T", "projectId": "own"}, {"source": {"project": {"id": "p7"}}}, "own"),
    ({"title": "T"}, {"source": {"project": "p7"}}, None),
    ({"title": "T"}, {"source": "not an object"}, None),
    ({"title": "T"}, {}, None),
])
def test_a_record_is_linked_only_to_a_project_object_it_does_not_name_itself(
        data: dict[str, Any], meta: dict[str, Any], project_id: str | None) -> None:
    call = tool_call_for(_entry(data, meta))
    assert call.data.get("projectId") == project_id
    assert call.source == meta.get("source") and call.confidence is None


# -- windows, order, acks --------------------------------------------------------------------

async def test_calls_go_in_order_one_window_per_writer(store: Store,
                                                        started: Started) -> None:
    hub, delivery = await started()
    await store.outbox.enqueue(items(10))
    client, peer = writer(hub, delivery)
    delivery.notify()
    assert await until(lambda: len(peer.calls) == 4)
    await asyncio.sleep(0.1)  # the window is full (4): nothing more while none is acked
    assert keys(peer.calls) == ["a1:k0", "a1:k1", "a1:k2", "a1:k3"]
    assert await ack(delivery, client, peer.calls[0]) is True
    assert await until(lambda: len(peer.calls) == 5)
    assert keys(peer.calls)[4] == "a1:k4"
    for call in peer.calls[1:4]:  # one stays in flight
        await ack(delivery, client, call)
    assert await until(lambda: len(peer.calls) == 8)
    await asyncio.sleep(0.1)
    assert len(peer.calls) == 8 and delivery.sent == 8 and delivery.resent == 0
    assert keys(peer.calls)[5:] == ["a1:k5", "a1:k6", "a1:k7"]
    assert await until(_states_are(store, {"acked": 4, "pending": 6}))
    rows = await store.db.fetchall("SELECT idempotency_key, result_id FROM outbox "
                                   "WHERE state = 'acked' ORDER BY seq")
    assert [(r[0], r[1]) for r in rows] == [("a1:k0", "1"), ("a1:k1", "1"), ("a1:k2", "1"),
                                            ("a1:k3", "1")]  # the app's id of each record


def _states_are(store: Store, want: dict[str, int]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await states(store) == want
    return check


async def test_a_window_below_one_still_sends_one_at_a_time(store: Store) -> None:
    hub = RecordingHub()
    delivery = Delivery(hub, store.outbox, window=0, timeout=5)
    await store.outbox.enqueue(items(3))
    client, peer = writer(hub, delivery)
    await delivery.start()
    try:
        assert await until(lambda: len(peer.calls) == 1)
        await asyncio.sleep(0.1)
        assert len(peer.calls) == 1
        await ack(delivery, client, peer.calls[0])
        assert await until(lambda: len(peer.calls) == 2)
    finally:
        await delivery.stop()


async def test_acks_errors_and_duplicates_settle_the_run_and_send_run_delivered_once(
        store: Store, started: Started) -> None:
    hub, delivery = await started()
    run = await store.runs.start("a1", "local", "manual")
    await store.runs.complete(run["id"], documents=1, errors=[])
    await store.outbox.enqueue(items(3, run["id"]))
    client, peer = writer(hub, delivery)
    delivery.notify()
    assert await until(lambda: len(peer.calls) == 3)
    await ack(delivery, client, peer.calls[0])
    await ack(delivery, client, peer.calls[1], error="UNIQUE constraint failed: tasks.title")
    await ack(delivery, client, peer.calls[2], error="no such table", retryable=False)
    assert await until(lambda: any(isinstance(f, p.RunDelivered) for f in hub.sent))
    assert await states(store) == {"acked": 1, "failed": 2}
    # acked twice, or acked for a call never queued: no second run_delivered, no harm
    assert await ack(delivery, client, peer.calls[0]) is True
    assert await ack(delivery, client, {"id": "c_never_queued"}) is False
    await asyncio.sleep(0.1)
    assert delivery.settle_blocked is False  # every settle went through
    (delivered,) = [f.run for f in hub.sent if isinstance(f, p.RunDelivered)]
    assert (delivered["id"], delivered["status"], delivered["items_created"]) == (
        run["id"], "partial", 1)
    assert (delivered["extracted"], delivered["delivered"], delivered["failed"],
            delivered["pending"], delivered["errors_total"]) == (3, 1, 2, 0, 2)
    assert sorted(delivered["errors"]) == [  # one settle batch: in call id order
        "Insert failed (tasks, '/d/1.md'): UNIQUE constraint failed: tasks.title",
        "Insert failed (tasks, '/d/2.md'): no such table"]
    assert await store.outbox.count("acked") == 1  # the duplicate counted nothing


async def test_an_ack_for_a_queued_call_never_sent_is_taken_and_settled_on_stop(
        store: Store) -> None:
    """After a restart the app may ack a call this process never sent: it is settled."""
    hub = RecordingHub()
    delivery = Delivery(hub, store.outbox)
    await store.outbox.enqueue(items(2))
    (first, second) = await store.outbox.pending_after(0)
    client, _ = writer(hub, delivery)
    assert await delivery.on_tool_result(client, p.ToolResult(id=first.call_id)) is True
    assert await delivery.on_tool_result(client, p.ToolResult(
        id=second.call_id, error="busy", retryable=True)) is True
    await delivery.stop()  # never started: stop still commits what was taken in
    assert await store.outbox.by_call_id(first.call_id) == (first.seq, "acked")
    assert await store.outbox.by_call_id(second.call_id) == (second.seq, "pending")
    assert await store.outbox.count_waiting(time.time(), None) == 1


async def test_a_retryable_error_keeps_the_call_and_sends_the_same_id_again(
        store: Store, started: Started, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.delivery")
    hub, delivery = await started()
    await store.outbox.enqueue(items(2))
    client, peer = writer(hub, delivery)
    delivery.notify()
    assert await until(lambda: len(peer.calls) == 2)
    first = peer.calls[0]
    await ack(delivery, client, first, error="SQLITE_BUSY", retryable=True)
    await ack(delivery, client, peer.calls[1], retryable=True)  # no error: a plain ack
    assert await until(_states_are(store, {"acked": 1, "pending": 1}))
    assert any(re.fullmatch(r"1 insert\(s\) the app could not store yet: retrying from "
                            r"(0\.9|1\.0)s", m) for _, m in logged(caplog)), logged(caplog)
    assert await delivery.drained(timeout=2) is True  # a call waiting out its backoff
    await asyncio.sleep(0.5)
    assert len(peer.calls) == 2, "sent again before its 1 s backoff"
    assert await until(lambda: len(peer.calls) == 3, timeout=3)
    assert peer.calls[2] == first and delivery.retried == 1 and delivery.resent == 0
    await ack(delivery, client, peer.calls[2])
    assert await until(_states_are(store, {"acked": 2}))


async def test_a_retry_due_sooner_is_sent_before_one_due_later(store: Store) -> None:
    """y fails once (1 s backoff), then x a second time (2 s): y is sent again first,
    though x's later time was set after y's."""
    hub = RecordingHub()
    delivery = Delivery(hub, store.outbox, timeout=30)
    await store.outbox.enqueue(items(2))
    client, peer = writer(hub, delivery)
    await delivery.start()
    try:
        assert await until(lambda: len(peer.calls) == 2)
        x, y = peer.calls
        await ack(delivery, client, x, error="busy", retryable=True)
        assert await until(lambda: len(peer.calls) == 3, timeout=3)
        await ack(delivery, client, y, error="busy", retryable=True)
        assert await until(lambda: store.outbox.count_waiting(time.time(), None))
        await ack(delivery, client, peer.calls[2], error="busy", retryable=True)
        assert await until(lambda: len(peer.calls) == 5, timeout=4)
        assert keys(peer.calls) == ["a1:k0", "a1:k1", "a1:k0", "a1:k1", "a1:k0"]
    finally:
        await delivery.stop()


async def test_calls_retried_before_a_restart_are_sent_when_due(store: Store) -> None:
    await store.outbox.enqueue(items(2))
    (first, _) = await store.outbox.pending_after(0)
    await store.outbox.settle([Settled(first.call_id, "busy", retryable=True)])
    hub = RecordingHub()
    delivery = Delivery(hub, store.outbox, timeout=5)
    _client, peer = writer(hub, delivery)
    await delivery.start()
    try:
        assert await until(lambda: len(peer.calls) == 1)
        assert keys(peer.calls) == ["a1:k1"]  # the retried one waits its turn
        assert await until(lambda: len(peer.calls) == 2, timeout=3)
        assert peer.calls[1]["id"] == first.call_id and delivery.retried == 1
    finally:
        await delivery.stop()


async def test_retries_waiting_from_before_a_restart_are_each_sent_when_due(
        store: Store, started: Started) -> None:
    await store.outbox.enqueue(items(3))
    now = time.time()
    for key, due in (("a1:k0", now + 0.3), ("a1:k1", now + 0.9)):
        await store.db.execute("UPDATE outbox SET next_at = ? WHERE idempotency_key = ?",
                               (due, key))
    hub, delivery = await started()
    _, peer = writer(hub, delivery, acks=True)
    delivery.notify()
    assert await until(lambda: len(peer.calls) == 3, timeout=4)
    assert keys(peer.calls) == ["a1:k2", "a1:k0", "a1:k1"] and delivery.retried == 2


async def test_more_due_retries_than_one_page_are_all_sent(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """600 calls due again: a page of 512 goes out; while the app sits on them the next
    page is looked for once a second (no busy loop); once they are acked the rest goes."""
    await store.outbox.enqueue(items(600))
    await store.db.execute("UPDATE outbox SET next_at = ?", (time.time() - 5,))
    looks: list[float] = []
    real = store.outbox.due_retries

    async def due_retries(now: float, limit: int = 512) -> list[Entry]:
        looks.append(now)
        return await real(now, limit)

    monkeypatch.setattr(store.outbox, "due_retries", due_retries)
    hub = RecordingHub()
    delivery = Delivery(hub, store.outbox, window=1000, timeout=30)
    client, peer = writer(hub, delivery)
    await delivery.start()
    try:
        assert await until(lambda: len(peer.calls) == 512)
        assert keys(peer.calls)[:2] == ["a1:k0", "a1:k1"] and keys(peer.calls)[511] == "a1:k511"
        before = len(looks)
        await asyncio.sleep(0.5)
        assert len(looks) - before <= 1, "the next page is looked for in a busy loop"
        assert len(peer.calls) == 512
        for call in list(peer.calls):
            await ack(delivery, client, call)
        assert await until(lambda: len(peer.calls) == 600, timeout=5)
        assert keys(peer.calls)[512] == "a1:k512" and delivery.retried == 600
    finally:
        await delivery.stop()


# -- timeouts, roles, disconnects, failed sends ------------------------------------------------

async def test_with_one_writer_a_timed_out_call_is_sent_to_it_again(
        store: Store, started: Started) -> None:
    hub, delivery = await started(timeout=0.3)
    await store.outbox.enqueue(items(2))
    client, peer = writer(hub, delivery)
    delivery.notify()
    assert await until(lambda: len(peer.calls) == 4, timeout=3)
    assert peer.calls[2:] == peer.calls[:2] and delivery.resent == 2 and delivery.sent == 4
    for call in peer.calls[2:]:
        await ack(delivery, client, call)
    assert await until(_states_are(store, {"acked": 2}))
    await asyncio.sleep(0.5)  # acked: never sent again
    assert len(peer.calls) == 4


async def test_a_timed_out_call_moves_to_another_writer_and_new_ones_avoid_the_silent_one(
        store: Store, started: Started, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.delivery")
    hub, delivery = await started(timeout=0.3)
    await store.outbox.enqueue(items(1))
    older, a = writer(hub, delivery)
    newer, b = writer(hub, delivery)  # the newest writer gets new calls: it does not answer
    delivery.notify()
    assert await until(lambda: len(a.calls) == 1, timeout=3)
    assert keys(b.calls) == ["a1:k0"] and a.calls == b.calls and delivery.resent == 1
    assert (logging.INFO, f"client {newer.id} acked none of 1 tool_call(s) within 0s; moving "
            "them to another writer (1 healthy)") in logged(caplog)
    # the silent writer is stalled: the next record goes to the other one
    await store.outbox.enqueue(items(1, start=1))
    delivery.notify()
    assert await until(lambda: len(a.calls) == 2)
    assert keys(a.calls) == ["a1:k0", "a1:k1"] and len(b.calls) == 1
    await ack(delivery, older, a.calls[1])
    # a late ack of the moved call settles it, and makes its writer healthy again
    assert await ack(delivery, newer, b.calls[0]) is True
    assert (logging.INFO, f"client {newer.id} acks again; it takes new inserts") in logged(
        caplog)
    assert await until(_states_are(store, {"acked": 2}))
    await store.outbox.enqueue(items(1, start=2))
    delivery.notify()
    assert await until(lambda: len(b.calls) == 2)
    assert keys(b.calls)[1] == "a1:k2" and len(a.calls) == 2
    assert await ack(delivery, older, a.calls[0]) is True  # the first copy's ack: harmless
    await asyncio.sleep(0.1)
    assert await states(store) == {"acked": 2, "pending": 1}


async def test_a_late_ack_of_a_call_another_writer_settled_still_unstalls_its_writer(
        store: Store, started: Started) -> None:
    """The silent window answers at last, after the call it sat on was moved and acked by the
    other window: its answer changes nothing in the outbox, but it shows the window is alive,
    so new inserts go to it again (the newest writer) instead of it staying out for good."""
    hub, delivery = await started(timeout=0.3)
    await store.outbox.enqueue(items(1))
    older, a = writer(hub, delivery)
    newer, b = writer(hub, delivery)
    delivery.notify()
    assert await until(lambda: len(a.calls) == 1, timeout=3)  # moved from b to a
    await ack(delivery, older, a.calls[0])
    assert await until(_states_are(store, {"acked": 1}))
    assert await ack(delivery, newer, b.calls[0]) is True  # late, for a settled call
    await store.outbox.enqueue(items(1, start=1))
    delivery.notify()
    assert await until(lambda: len(b.calls) == 2)
    assert keys(b.calls) == ["a1:k0", "a1:k1"] and len(a.calls) == 1


async def test_a_timed_out_call_goes_to_a_healthy_writer_before_a_stalled_one(
        store: Store, started: Started) -> None:
    hub, delivery = await started(timeout=0.3)
    _c1, w1 = writer(hub, delivery, acks=True)
    _c2, w2 = writer(hub, delivery)
    await store.outbox.enqueue(items(1))
    delivery.notify()
    assert await until(lambda: len(w1.calls) == 1, timeout=3)  # w2 sat on it: stalled
    assert keys(w2.calls) == ["a1:k0"]
    _c3, w3 = writer(hub, delivery)  # the newest healthy writer: gets the next calls, silent
    await store.outbox.enqueue(items(2, start=1))
    delivery.notify()
    assert await until(lambda: len(w3.calls) == 2)
    # they time out on w3: they go to w1, which answers, not to w2, which is stalled
    assert await until(lambda: len(w1.calls) == 3, timeout=3)
    assert keys(w1.calls) == ["a1:k0", "a1:k1", "a1:k2"] and len(w2.calls) == 1
    assert await until(_states_are(store, {"acked": 3}))


async def test_a_writer_saying_hello_as_observer_hands_its_calls_to_another(
        store: Store, started: Started) -> None:
    hub, delivery = await started()
    await store.outbox.enqueue(items(3))
    _other, a = writer(hub, delivery)
    client, b = writer(hub, delivery)
    delivery.notify()
    assert await until(lambda: len(b.calls) == 3)
    for listener in hub.hello_listeners:  # the same writer says hello again: nothing moves
        await listener(client)
    await asyncio.sleep(0.1)
    assert a.calls == [] and len(b.calls) == 3
    client.role = "observer"
    for listener in hub.hello_listeners:
        await listener(client)
    assert await until(lambda: len(a.calls) == 3)
    assert keys(a.calls) == ["a1:k0", "a1:k1", "a1:k2"] and len(b.calls) == 3
    assert delivery.resent == 0  # moved, not timed out


async def test_a_writer_that_leaves_hands_its_unacked_calls_to_the_next(
        store: Store, started: Started) -> None:
    hub, delivery = await started()
    await store.outbox.enqueue(items(3))
    _other, a = writer(hub, delivery)
    client, b = writer(hub, delivery)
    delivery.notify()
    assert await until(lambda: len(b.calls) == 3)
    await ack(delivery, client, b.calls[1])
    b.closed = True
    await hub.remove(client)
    assert await until(lambda: len(a.calls) == 2)
    assert keys(a.calls) == ["a1:k0", "a1:k2"]
    await asyncio.sleep(0.1)
    assert len(a.calls) == 2


async def test_a_failed_send_keeps_the_call_for_the_next_try(
        store: Store, started: Started) -> None:
    hub, delivery = await started()
    await store.outbox.enqueue(items(2))
    _client, peer = writer(hub, delivery)
    peer.fail = True
    delivery.notify()
    await asyncio.sleep(0.2)
    assert peer.calls == [] and delivery.sent == 0
    peer.fail = False
    delivery.notify()  # at once, not after the 30 s insert timeout
    assert await until(lambda: len(peer.calls) == 2)
    assert keys(peer.calls) == ["a1:k0", "a1:k1"] and delivery.sent == 2


async def test_no_writer_no_calls_and_drained_says_so(
        store: Store, started: Started) -> None:
    hub, delivery = await started()
    assert await delivery.drained(timeout=1) is True  # nothing queued at all
    await store.outbox.enqueue(items(1))
    delivery.notify()
    assert await delivery.drained(timeout=1) is False  # pending, and nobody to send it to
    observer, peer = writer(hub, delivery)
    observer.role = "observer"
    delivery.notify()
    await asyncio.sleep(0.1)
    assert peer.frames == [] and await delivery.drained(timeout=1) is False


async def test_drained_waits_for_acks_of_its_run_only(
        store: Store, started: Started) -> None:
    hub, delivery = await started()
    await store.outbox.enqueue(items(1, "r1") + items(1, "r2", start=1))
    client, peer = writer(hub, delivery)
    delivery.notify()
    assert await until(lambda: len(peer.calls) == 2)
    t0 = time.monotonic()
    assert await delivery.drained("r1", timeout=0.2) is False  # in flight, never acked
    assert time.monotonic() - t0 >= 0.2
    mine = next(c for c in peer.calls if c["run_id"] == "r1")
    waiting = asyncio.create_task(delivery.drained("r1", timeout=5))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await ack(delivery, client, mine)
    assert await asyncio.wait_for(waiting, 5) is True
    assert await store.outbox.count("pending", "r2") == 1
    # r2's call waits out a retry backoff: r2 counts as drained, r1 is not held by it
    await ack(delivery, client, next(c for c in peer.calls if c["run_id"] == "r2"),
              error="busy", retryable=True)
    assert await until(lambda: store.outbox.count_waiting(time.time(), "r2"))
    assert await delivery.drained("r1", timeout=1) is True
    assert await delivery.drained("r2", timeout=1) is True


# -- settles that fail, run_delivered ----------------------------------------------------------

@pytest.mark.parametrize("error", [sqlite3.OperationalError("database or disk is full"),
                                   sqlite3.OperationalError("disk I/O error")])
async def test_a_settle_that_fails_keeps_the_acks_and_retries(
        store: Store, started: Started, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, error: Exception) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.delivery")
    hub, delivery = await started()
    run = await store.runs.start("a1", "local", "manual")
    await store.runs.complete(run["id"], documents=1, errors=[])
    await store.outbox.enqueue(items(2, run["id"]))
    client, peer = writer(hub, delivery)
    delivery.notify()
    assert await until(lambda: len(peer.calls) == 2)
    real, fails = store.outbox.settle, [3]

    async def settle(batch: Any) -> Any:
        if fails[0]:
            fails[0] -= 1
            raise error
        return await real(batch)

    monkeypatch.setattr(store.outbox, "settle", settle)
    assert delivery.settle_blocked is False
    for call in peer.calls:
        await ack(delivery, client, call)
    assert await until(lambda: delivery.settle_failures >= 1)
    assert delivery.settle_blocked is True
    assert await until(_states_are(store, {"acked": 2}))
    assert delivery.settle_failures == 3 and delivery.settle_blocked is False
    said = logged(caplog)
    if "full" in str(error):  # said once (rate-limited), then once more when it heals
        assert (logging.WARNING, "could not record 2 tool_result(s): disk full; keeping them "
                "and retrying with backoff") in said
    else:
        assert (logging.ERROR, "could not record 2 tool_result(s); will retry") in said
        assert [r.exc_info[1] for r in caplog.records if r.levelno == logging.ERROR] == [error]
    assert (logging.INFO, "recorded 2 tool_result(s) held back by 3 failed settle(s)") in said
    assert await until(lambda: any(isinstance(f, p.RunDelivered) for f in hub.sent))
    await asyncio.sleep(0.5)  # the acked calls are not sent again
    assert len(peer.calls) == 2


async def test_run_settled_sends_run_delivered_once_a_closed_run_has_nothing_pending(
        store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hub = RecordingHub()
    delivery = Delivery(hub, store.outbox)
    run = await store.runs.start("a1", "local", "manual")
    await store.outbox.enqueue(items(1, run["id"]))
    assert await delivery.run_settled(run["id"]) is False  # still running
    await store.runs.complete(run["id"], documents=1,
                              errors=["x" * 600] + [f"e{i}" for i in range(59)])
    assert await delivery.run_settled(run["id"]) is False  # one record pending
    (entry,) = await store.outbox.pending_after(0)
    await store.outbox.settle([Settled(entry.call_id)])

    async def broken(run_id: str) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as m:
        m.setattr(store.outbox, "mark_delivered", broken)
        assert await delivery.run_settled(run["id"]) is False
    assert hub.sent == [] and logged(caplog) == [(logging.WARNING, f"run {run['id']}: could "
                                                  "not record its delivery: database or disk "
                                                  "is full")]
    assert await delivery.run_settled(run["id"]) is True
    assert await delivery.run_settled(run["id"]) is False  # exactly once
    (frame,) = hub.sent
    assert isinstance(frame, p.RunDelivered) and frame.run["id"] == run["id"]
    assert frame.run["errors_total"] == 60 and len(frame.run["errors"]) == 50
    assert len(frame.run["errors"][0]) == 249 + 1 + 249  # a long line: its ends, clipped
    assert (frame.run["extracted"], frame.run["delivered"]) == (1, 1)


async def test_start_marks_runs_a_crash_left_settled_as_delivered(store: Store) -> None:
    run = await store.runs.start("a1", "local", "manual")
    await store.runs.complete(run["id"], documents=0, errors=[])
    hub = RecordingHub()
    delivery = Delivery(hub, store.outbox)
    await delivery.start()
    await delivery.stop()
    assert (await store.runs.get(run["id"]))["delivered_at"] is not None
    assert hub.tool_result_sink == delivery.on_tool_result


# -- an ack that arrives another way ----------------------------------------------------------

@pytest.mark.parametrize("settles", [True, False])
async def test_a_queued_call_acked_through_another_connection_is_not_sent_again(
        store: Store, started: Started, monkeypatch: pytest.MonkeyPatch,
        settles: bool) -> None:
    """The app got k0 and k1, its socket dropped (both back in the queue), and a new
    connection acks k0 before it says hello: only k1 goes out again, whether the ack is
    committed by then or still held in memory (its settle failing)."""
    hub, delivery = await started()
    await store.outbox.enqueue(items(2))
    client, peer = writer(hub, delivery)
    delivery.notify()
    assert await until(lambda: len(peer.calls) == 2)
    peer.closed = True
    await hub.remove(client)
    if not settles:
        async def full(batch: Any) -> Any:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(store.outbox, "settle", full)
    again = Client(Peer())  # type: ignore[arg-type]
    assert await ack(delivery, again, peer.calls[0]) is True
    if settles:
        assert await until(_states_are(store, {"acked": 1, "pending": 1}))
    else:
        assert await until(lambda: delivery.settle_failures >= 1)
    _, peer2 = writer(hub, delivery)
    delivery.notify()
    assert await until(lambda: len(peer2.calls) == 1)
    await asyncio.sleep(0.1)
    assert keys(peer2.calls) == ["a1:k1"]


async def test_a_call_acked_before_it_was_ever_sent_is_not_sent(
        store: Store, started: Started, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a restart the app acks k0 before anything was sent; the ack cannot be
    committed yet (a full disk), so k0 is still pending in SQLite: it is not sent."""
    await store.outbox.enqueue(items(2))
    (first, _) = await store.outbox.pending_after(0)

    async def full(batch: Any) -> Any:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store.outbox, "settle", full)
    hub, delivery = await started()
    early = Client(Peer())  # type: ignore[arg-type]
    assert await delivery.on_tool_result(early, p.ToolResult(id=first.call_id)) is True
    _, peer = writer(hub, delivery)
    delivery.notify()
    assert await until(lambda: len(peer.calls) == 1)
    await asyncio.sleep(0.1)
    assert keys(peer.calls) == ["a1:k1"]


async def test_when_every_writer_sat_on_a_call_it_goes_to_one_it_did_not_time_out_on(
        store: Store, started: Started, caplog: pytest.LogCaptureFixture) -> None:
    """Both writers are stalled; k1 timed out on the newest, so it goes to the older one
    (k0 timed out on the older one and goes to the newest)."""
    caplog.set_level(logging.INFO, logger="sidecar.delivery")
    hub, delivery = await started(timeout=0.3)
    await store.outbox.enqueue(items(1))
    older, a = writer(hub, delivery)
    delivery.notify()
    assert await until(lambda: len(a.calls) == 2, timeout=3)  # k0 timed out on a: again
    assert (logging.INFO, f"client {older.id} acked none of 1 tool_call(s) within 0s; "
            "re-sending them (no other healthy writer)") in logged(caplog)
    _, b = writer(hub, delivery)
    await store.outbox.enqueue(items(1, start=1))
    delivery.notify()
    assert await until(lambda: keys(b.calls)[:1] == ["a1:k1"])
    assert await until(lambda: keys(a.calls).count("a1:k1") == 1, timeout=3)
    assert keys(b.calls).count("a1:k1") == 1  # not sent to the writer it timed out on


@pytest.mark.parametrize("room", [False, True])
async def test_a_call_moving_off_a_writer_prefers_a_healthy_one_with_room(
        store: Store, started: Started, room: bool) -> None:
    """h, o, t (newest last), window 2. o sits on k2, k3 and t on k4, k5: both stall, h
    (which acked its own) takes k2, k3. t acks k5 late, so it is healthy again and the
    target, but k4 timed out on it: k4 goes to another writer with room, a healthy one
    first. With h full, that is o (stalled); with room on h (it acks k2), it is h."""
    hub, delivery = await started(timeout=0.3, window=2)
    h_client, h = writer(hub, delivery)
    await store.outbox.enqueue(items(2))
    delivery.notify()
    assert await until(lambda: len(h.calls) == 2)
    _, o = writer(hub, delivery)
    await store.outbox.enqueue(items(2, start=2))
    delivery.notify()
    assert await until(lambda: len(o.calls) == 2)
    t_client, t = writer(hub, delivery)
    await store.outbox.enqueue(items(2, start=4))
    delivery.notify()
    assert await until(lambda: len(t.calls) == 2)
    for call in h.calls:
        await ack(delivery, h_client, call)
    assert await until(lambda: len(h.calls) == 4, timeout=3)  # o and t timed out
    assert keys(h.calls)[2:] == ["a1:k2", "a1:k3"] and keys(t.calls) == ["a1:k4", "a1:k5"]
    assert await ack(delivery, t_client, t.calls[1]) is True  # late: t takes calls again
    if room:
        await ack(delivery, h_client, h.calls[2])  # no await in between: same turn
    assert await until(lambda: "a1:k4" in keys(h.calls) + keys(o.calls)[2:])
    assert ("a1:k4" in keys(h.calls)) is room and ("a1:k4" in keys(o.calls)) is not room
    assert keys(t.calls) == ["a1:k4", "a1:k5"]
