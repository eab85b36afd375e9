"""Outbox → Electron: a bounded window of insert tool_calls in flight, acks settled in batches.

At-least-once on the wire, exactly-once by key: every frame carries a stable ``id`` and
``idempotency_key``; an entry leaves the outbox only when Electron's ``tool_result`` for it
is committed. A timeout re-sends the same id; a lost client's unacked calls go to the next
client after its ``hello``; a restart re-reads pending entries from SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from dataclasses import dataclass

from sidecar import failpoints
from sidecar import protocol as p
from sidecar.hub import Client, Hub
from sidecar.store.outbox import Entry, OutboxStore, Settled

log = logging.getLogger(__name__)

REVIEW_FLAGS = {"isAiSuggested": 1, "isApproved": 0}


def tool_call_for(entry: Entry) -> p.ToolCall:
    """The seed's insert frame plus additive provenance fields."""
    return p.ToolCall(
        id=entry.call_id, action="insert", table=entry.table,
        data={**entry.data, **REVIEW_FLAGS},
        agent_id=entry.agent_id, run_id=entry.run_id, idempotency_key=entry.idempotency_key,
        source=entry.meta.get("source"), confidence=entry.meta.get("confidence"),
    )


@dataclass(slots=True)
class InFlight:
    entry: Entry
    client_id: int
    sent_at: float
    attempts: int = 1


class Delivery:
    """One delivery loop per daemon; inserts go to the most recent client that said hello."""

    def __init__(self, hub: Hub, outbox: OutboxStore, *, window: int = 64,
                 timeout: float = 30.0, flush_interval: float = 0.005) -> None:
        self.hub = hub
        self.outbox = outbox
        self.window = max(1, window)
        self.timeout = timeout
        self.flush_interval = flush_interval
        self._inflight: dict[str, InFlight] = {}
        self._retry: list[tuple[int, Entry]] = []  # heap by seq: unacked calls to send again
        self._buffer: list[Entry] = []  # loaded from SQLite, not yet sent
        self._loaded_seq = 0
        self._settling: dict[str, Settled] = {}
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.sent = 0
        self.resent = 0

    # ── wiring ────────────────────────────────────────────────────────────
    def attach(self) -> None:
        self.hub.tool_result_sink = self.on_tool_result
        self.hub.hello_listeners.append(self._on_hello)
        self.hub.disconnect_listeners.append(self._on_disconnect)

    async def start(self) -> None:
        self.attach()
        self._task = asyncio.create_task(self._run(), name="delivery")
        self._flusher = asyncio.create_task(self._flush_loop(), name="delivery-flush")

    async def stop(self) -> None:
        for task in (self._task, self._flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._flush()

    def notify(self) -> None:
        """New entries were queued."""
        self._wake.set()

    # ── events from the hub ───────────────────────────────────────────────
    async def _on_hello(self, client: Client) -> None:
        self._wake.set()

    async def _on_disconnect(self, client: Client) -> None:
        for call_id, f in list(self._inflight.items()):
            if f.client_id == client.id:
                del self._inflight[call_id]
                heapq.heappush(self._retry, (f.entry.seq, f.entry))
        self._wake.set()

    async def on_tool_result(self, client: Client, frame: p.ToolResult) -> bool:
        """Record the outcome; False only if no such call was ever queued."""
        f = self._inflight.pop(frame.id, None)
        if f is None and frame.id not in self._settling:
            known = await self.outbox.by_call_id(frame.id)
            if known is None:
                return False
            if known[1] != "pending":
                return True  # a duplicate ack of a settled call: harmless
        self._settling[frame.id] = Settled(frame.id, frame.error)
        failpoints.hit("delivery.ack_received")
        self._wake.set()
        return True

    # ── the loop ──────────────────────────────────────────────────────────
    def _target(self) -> Client | None:
        ready = self.hub.ready_clients()
        return ready[-1] if ready else None

    async def _next_entry(self) -> Entry | None:
        while self._retry:
            _, entry = heapq.heappop(self._retry)
            if entry.call_id not in self._settling and entry.call_id not in self._inflight:
                return entry
        if not self._buffer:
            self._buffer = await self.outbox.pending_after(self._loaded_seq, limit=512)
            self._buffer.reverse()
            if self._buffer:
                self._loaded_seq = self._buffer[0].seq
        while self._buffer:
            entry = self._buffer.pop()
            if entry.call_id not in self._settling and entry.call_id not in self._inflight:
                return entry
        return None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            target = self._target()
            if target is not None:
                await self._resend_expired(target)
                while len(self._inflight) < self.window:
                    entry = await self._next_entry()
                    if entry is None:
                        break
                    # in flight before the send: an ack that arrives while send() awaits
                    # must find it, or the settled call would stay in flight and be re-sent
                    self._inflight[entry.call_id] = InFlight(entry, target.id, time.monotonic())
                    if not await target.send(tool_call_for(entry)):
                        # unless a disconnect already re-queued it, or an ack came anyway
                        if self._inflight.pop(entry.call_id, None) is not None:
                            heapq.heappush(self._retry, (entry.seq, entry))
                        break
                    self.sent += 1
                    failpoints.hit("delivery.sent")
            wait = self.timeout / 4 if self._inflight else None
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that races
            # with the event being set, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _resend_expired(self, target: Client) -> None:
        now = time.monotonic()
        for call_id, f in list(self._inflight.items()):
            if now - f.sent_at >= self.timeout:
                log.info("no tool_result for %s after %.0fs; re-sending", call_id, self.timeout)
                if await target.send(tool_call_for(f.entry)):
                    f.sent_at, f.client_id = now, target.id
                    f.attempts += 1
                    self.resent += 1

    # ── settling acks in batches ──────────────────────────────────────────
    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            if self._settling:
                await self._flush()

    async def _flush(self) -> None:
        if not self._settling:
            return
        batch = list(self._settling.values())
        try:
            await self.outbox.settle(batch)
        except Exception:
            log.exception("could not record %d tool_result(s); will retry", len(batch))
            return
        for s in batch:
            if self._settling.get(s.call_id) is s:
                del self._settling[s.call_id]
        self._flushed.set()
        self._wake.set()

    async def drained(self, run_id: str | None = None, timeout: float = 30.0) -> bool:
        """Wait until nothing (of ``run_id``) is pending or in flight, or ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not self._settling and await self.outbox.count("pending", run_id) == 0:
                return True
            if self._target() is None:
                return False
            self._flushed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.25, deadline - loop.time())):
                    await self._flushed.wait()
        return False
