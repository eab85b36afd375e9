"""Outbox → Electron: windows of insert tool_calls in flight per writer, acks settled in batches.

At-least-once on the wire, exactly-once by key: every frame carries a stable ``id`` and
``idempotency_key``; an entry leaves the outbox only when Electron's ``tool_result`` for it
is committed. Inserts go to writers only (``hello`` with role "writer", the default), the
newest healthy one first. A call not acked within the insert timeout goes back to the queue
and to another connected writer, and the writer that sat on it gets no new calls until it
acks something: a silent client never holds records hostage. With one writer, the same id
is re-sent to it. A lost client's unacked calls go to the next writer; a restart re-reads
pending entries from SQLite. A settle that cannot commit (a full disk) keeps its acks in
memory and retries with capped exponential backoff.

A ``tool_result`` with ``retryable: true`` and an ``error`` keeps the call pending with its
next try time in SQLite (1 s doubling to 5 min, :func:`sidecar.store.outbox.retry_delay`): it
is re-sent with the same id when due, also after a restart, and never counts as failed. New
calls do not wait behind it: a retried call may reach the app after later ones. When a
closed run's last record is acked or fails for good, every client gets ``run_delivered``.
An ack's ``result.id`` is kept with it: records held for that insert (a new project's tasks,
a task's comments, :mod:`sidecar.store.held`) are queued in the settle's transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import Counter
from dataclasses import dataclass

from sidecar import failpoints
from sidecar import protocol as p
from sidecar.diskfull import DISK_FULL, is_disk_full
from sidecar.hub import Client, Hub
from sidecar.ratelimit import Backoff, RateLimitedLog
from sidecar.runview import capped
from sidecar.store.held import id_of
from sidecar.store.outbox import Entry, OutboxStore, Settled

log = logging.getLogger(__name__)

REVIEW_FLAGS = {"isAiSuggested": 1, "isApproved": 0}
#: Capped exponential backoff of a settle that failed (a full disk): first 50 ms, at most 5 s.
SETTLE_BACKOFF = (0.05, 5.0)


def tool_call_for(entry: Entry) -> p.ToolCall:
    """The seed's insert frame plus additive provenance fields; a record linked to one of
    the app's projects (``source.project``) carries its ``projectId``."""
    source = entry.meta.get("source")
    project = source.get("project") if isinstance(source, dict) else None
    linked = ({"projectId": project["id"]} if isinstance(project, dict)
              and not entry.data.get("projectId") else {})
    return p.ToolCall(
        id=entry.call_id, action="insert", table=entry.table,
        data={**entry.data, **linked, **REVIEW_FLAGS},
        agent_id=entry.agent_id, run_id=entry.run_id, idempotency_key=entry.idempotency_key,
        source=entry.meta.get("source"), confidence=entry.meta.get("confidence"),
    )


@dataclass(slots=True)
class InFlight:
    entry: Entry
    client_id: int
    sent_at: float


class Delivery:
    """One delivery loop per daemon; see the module docstring for who gets which call."""

    def __init__(self, hub: Hub, outbox: OutboxStore, *, window: int = 64,
                 timeout: float = 30.0, flush_interval: float = 0.005) -> None:
        self.hub = hub
        self.outbox = outbox
        self.window = max(1, window)  # per writer
        self.timeout = timeout
        self.flush_interval = flush_interval
        self._inflight: dict[str, InFlight] = {}
        self._load: Counter[int] = Counter()  # client id → calls in flight to it
        self._retry: list[tuple[int, Entry]] = []  # heap by seq: unacked calls to send again
        self._tried: dict[str, set[int]] = {}  # call id → writers it timed out on
        self._stalled: set[int] = set()  # writers that let a call time out, until they ack
        self._buffer: list[Entry] = []  # loaded from SQLite, not yet sent
        self._loaded_seq = 0
        self._settling: dict[str, Settled] = {}
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._next_retry: float | None = None  # epoch seconds: a retried call falls due
        self._backoff = Backoff(*SETTLE_BACKOFF)
        self._quiet = RateLimitedLog(log, interval=60.0)
        self.sent = 0
        self.resent = 0
        self.settle_failures = 0
        self.retried = 0

    # ── wiring ────────────────────────────────────────────────────────────
    def attach(self) -> None:
        self.hub.tool_result_sink = self.on_tool_result
        self.hub.hello_listeners.append(self._on_hello)
        self.hub.disconnect_listeners.append(self._on_disconnect)

    async def start(self) -> None:
        self.attach()
        self._next_retry = await self.outbox.next_retry_at(0.0)  # calls retried before a stop
        await self.outbox.mark_settled_runs()  # runs a crash closed, whose records all settled
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

    @property
    def settle_blocked(self) -> bool:
        """Acks are waiting in memory because the last settle could not commit."""
        return self._backoff.failures > 0

    # ── in-flight bookkeeping ─────────────────────────────────────────────
    def _put(self, f: InFlight) -> None:
        self._inflight[f.entry.call_id] = f
        self._load[f.client_id] += 1

    def _take(self, call_id: str) -> InFlight | None:
        f = self._inflight.pop(call_id, None)
        if f is not None:
            self._load[f.client_id] -= 1
            if self._load[f.client_id] <= 0:
                del self._load[f.client_id]
        return f

    def _requeue(self, f: InFlight) -> None:
        heapq.heappush(self._retry, (f.entry.seq, f.entry))

    # ── events from the hub ───────────────────────────────────────────────
    async def _on_hello(self, client: Client) -> None:
        if not client.writer:  # a writer that said hello again as an observer
            self._release(client)
        self._wake.set()

    async def _on_disconnect(self, client: Client) -> None:
        self._release(client)
        self._stalled.discard(client.id)
        self._wake.set()

    def _unstall(self, client: Client) -> None:
        """A writer that answers is alive: it takes new inserts again."""
        if client.id in self._stalled:
            self._stalled.discard(client.id)
            log.info("client %d acks again; it takes new inserts", client.id)
            self._wake.set()

    def _release(self, client: Client) -> None:
        """The client takes no more inserts: its unacked calls go back to the queue."""
        for call_id, f in list(self._inflight.items()):
            if f.client_id == client.id:
                self._take(call_id)
                self._requeue(f)

    async def on_tool_result(self, client: Client, frame: p.ToolResult) -> bool:
        """Record the outcome; False only if no such call was ever queued."""
        f = self._take(frame.id)
        if f is None and frame.id not in self._settling:
            known = await self.outbox.by_call_id(frame.id)
            if known is None:
                return False
            if known[1] != "pending":
                self._unstall(client)  # late, for a call settled meanwhile: still alive
                return True  # a duplicate ack of a settled call: harmless
        self._unstall(client)
        retry = frame.retryable is True and frame.error is not None
        self._settling[frame.id] = Settled(frame.id, frame.error, retryable=retry,
                                           result_id=id_of(frame.result))
        failpoints.hit("delivery.ack_received")
        self._wake.set()
        return True

    # ── the loop ──────────────────────────────────────────────────────────
    def _target(self) -> Client | None:
        """The writer new inserts go to: the newest that is not stalled, else the newest."""
        writers = self.hub.writers()
        healthy = [c for c in writers if c.id not in self._stalled]
        pool = healthy or writers
        return pool[-1] if pool else None

    def _choose(self, entry: Entry, target: Client) -> Client:
        """The target, unless ``entry`` already timed out on it: then another writer with
        room (healthy first, newest first), or the target again if there is none."""
        tried = self._tried.get(entry.call_id)
        if not tried or target.id not in tried:
            return target
        others = [c for c in self.hub.writers()
                  if c.id not in tried and self._load[c.id] < self.window]
        healthy = [c for c in others if c.id not in self._stalled]
        pool = healthy or others
        return pool[-1] if pool else target

    async def _still_pending(self, entry: Entry) -> bool:
        """A re-queued call may have been acked late and settled meanwhile."""
        if entry.call_id in self._settling or entry.call_id in self._inflight:
            return False
        known = await self.outbox.by_call_id(entry.call_id)
        # an ack may have landed while the lookup awaited
        return (known is not None and known[1] == "pending"
                and entry.call_id not in self._settling and entry.call_id not in self._inflight)

    async def _next_entry(self) -> Entry | None:
        while self._retry:
            _, entry = heapq.heappop(self._retry)
            if await self._still_pending(entry):
                return entry
            self._tried.pop(entry.call_id, None)
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

    async def _load_due(self) -> None:
        """Put retried calls whose wait is over back in the queue (oldest first)."""
        now = time.time()
        if self._next_retry is None or self._next_retry > now:
            return
        page = 512
        due = await self.outbox.due_retries(now, limit=page)
        queued = {e.call_id for _, e in self._retry}
        fresh = [e for e in due if e.call_id not in queued and e.call_id not in self._inflight
                 and e.call_id not in self._settling]
        for entry in fresh:
            heapq.heappush(self._retry, (entry.seq, entry))
        self.retried += len(fresh)
        if len(due) == page:  # more may be due; a full page of calls in flight: look later
            self._next_retry = now if fresh else now + 1.0
        else:
            self._next_retry = await self.outbox.next_retry_at(now)

    def _retry_due_in(self) -> float | None:
        return None if self._next_retry is None else max(0.0, self._next_retry - time.time())

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            self._expire()
            await self._load_due()
            await self._pump()
            waits = [w for w in (self.timeout / 4 if self._inflight else None,
                                 self._retry_due_in()) if w is not None]
            wait = min(waits) if waits else None
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that races
            # with the event being set, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _pump(self) -> None:
        """Send queued entries while the target writer has room in its window."""
        while (target := self._target()) is not None and self._load[target.id] < self.window:
            entry = await self._next_entry()
            if entry is None:
                return
            target = self._target() or target  # _next_entry awaited: clients may have gone
            client = self._choose(entry, target)
            # in flight before the send: an ack that arrives while send() awaits
            # must find it, or the settled call would stay in flight and be re-sent
            again = entry.call_id in self._tried
            self._put(InFlight(entry, client.id, time.monotonic()))
            if not await client.send(tool_call_for(entry)):
                # unless a disconnect already re-queued it, or an ack came anyway
                f = self._take(entry.call_id)
                if f is not None:
                    self._requeue(f)
                return
            self.sent += 1
            self.resent += again
            failpoints.hit("delivery.sent")

    def _expire(self) -> None:
        """Calls unacked for the timeout go back to the queue; their writers are stalled."""
        now = time.monotonic()
        expired: Counter[int] = Counter()
        for call_id, f in list(self._inflight.items()):
            if now - f.sent_at >= self.timeout:
                self._take(call_id)
                self._tried.setdefault(call_id, set()).add(f.client_id)
                self._requeue(f)
                expired[f.client_id] += 1
        for client_id, n in expired.items():
            self._stalled.add(client_id)
            others = len([c for c in self.hub.writers() if c.id not in self._stalled])
            self._quiet.info(
                "timeout", "client %d acked none of %d tool_call(s) within %.0fs; %s",
                client_id, n, self.timeout,
                f"moving them to another writer ({others} healthy)" if others
                else "re-sending them (no other healthy writer)")

    # ── settling acks in batches ──────────────────────────────────────────
    async def _flush_loop(self) -> None:
        while True:
            delay = self.flush_interval
            if self._settling and not await self._flush():
                delay = self._backoff.next_delay()
            await asyncio.sleep(delay)

    async def _flush(self) -> bool:
        """Commit the acks taken in; False if the commit failed (they stay to retry)."""
        if not self._settling:
            return True
        batch = list(self._settling.values())
        try:
            applied = await self.outbox.settle(batch)
        except Exception as exc:
            self.settle_failures += 1
            if is_disk_full(exc):
                self._quiet.warning("settle-full", "could not record %d tool_result(s): %s; "
                                    "keeping them and retrying with backoff", len(batch),
                                    DISK_FULL)
            else:
                self._quiet.error("settle", "could not record %d tool_result(s); will retry",
                                  len(batch), exc_info=exc)
            return False
        if self._backoff.failures:
            log.info("recorded %d tool_result(s) held back by %d failed settle(s)",
                     len(batch), self._backoff.failures)
            self._backoff.reset()
        for s in batch:
            if self._settling.get(s.call_id) is s:
                del self._settling[s.call_id]
            self._tried.pop(s.call_id, None)
        if applied.retry_at:
            due = min(applied.retry_at.values())
            self._next_retry = due if self._next_retry is None else min(self._next_retry, due)
            log.info("%d insert(s) the app could not store yet: retrying from %.1fs",
                     len(applied.retry_at), due - time.time())
        self._flushed.set()
        self._wake.set()
        for run_id in sorted(applied.runs):
            await self.run_settled(run_id)
        return True

    async def run_settled(self, run_id: str) -> bool:
        """Send ``run_delivered`` once a closed run has nothing pending (exactly once: the
        mark is in SQLite); True if it was sent now."""
        try:
            record = await self.outbox.mark_delivered(run_id)
        except Exception as exc:  # a full disk: hello_result and status still tell
            self._quiet.warning("delivered", "run %s: could not record its delivery: %s",
                                run_id, exc)
            return False
        if record is None:
            return False
        await self.hub.broadcast(p.RunDelivered(run=capped(record)))
        return True

    async def drained(self, run_id: str | None = None, timeout: float = 30.0) -> bool:
        """Wait until nothing (of ``run_id``) is pending or in flight but calls waiting out
        a retry backoff, or ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not self._settling and (await self.outbox.count("pending", run_id)
                                       == await self.outbox.count_waiting(time.time(), run_id)):
                return True  # nothing left but calls waiting out a retry backoff
            if self._target() is None:
                return False
            self._flushed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.25, deadline - loop.time())):
                    await self._flushed.wait()
        return False
