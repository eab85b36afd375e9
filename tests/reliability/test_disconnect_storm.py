"""Disconnect storm: the client drops and comes back at random while agents run; nothing is lost.

Three local agents over real files; six rounds of edits (new task lines in old files, new
files, edits that change no task) each followed by a run of every agent. All the while the
one client, driven by a seeded RNG, vanishes and reconnects: with a TCP reset (no close
frame) or a clean close, right after a tool_call arrives and before acking it, after acking
it, half-way through acking a batch of calls, with nothing in flight, or by handing over to
a new connection that says hello before the old one dies.

What "duplicated" means. The wire is at-least-once: a tool_call sent but not acked before a
disconnect (never acked, or acked in bytes that a TCP reset discarded) is rightly sent again
to the next client, which de-duplicates by ``idempotency_key``; those count as "re-sends of
unacked calls". A duplicate is a tool_call that reaches the client for a record whose ack
the daemon had already committed (its outbox row reads ``acked`` in SQLite when the test
looks, the moment the frame arrives and before acking it), or for a record acked before a
clean close whose handshake completed (the daemon answers a close frame only after handling
every frame sent before it, so it held that ack). Re-sends on timeout, the one legitimate
way a frame sent before a commit could still arrive after it, are ruled out by a 600 s
insert timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSCloseCode

from sidecar.client import DaemonProcess, SidecarClient
from sidecar.store import Store
from tests.reliability.corpus import CHORES, PEOPLE

Figure = Callable[[str, str, Any], None]

SEED = 5_150_515
AGENTS = 3
FILES = 14  # per agent, at the start
ROUNDS = 6
#: The storm goes on with more rounds until it has dropped the client this often: how many
#: tool_calls arrive while runs are still going depends on the machine's load, and a quiet
#: storm proves little (it once ended with 28 on a loaded machine).
MIN_DISCONNECTS = 40
MAX_ROUNDS = 30
WORDS = ["amber", "basil", "cedar", "delta", "ember", "fjord", "garnet", "hazel", "indigo",
         "juniper", "kelp", "lotus", "maple", "nectar", "onyx", "pepper", "quartz", "rowan"]
#: Per tool_call: how the client reacts (cumulative probabilities, the rest is a plain ack).
ACTIONS = [(0.05, "reset before ack"), (0.08, "close before ack"),
           (0.12, "reset mid-batch of acks"), (0.16, "close mid-batch of acks"),
           (0.18, "reset after ack"), (0.20, "close after ack"), (0.24, "hand over")]


class Folders:
    """The agents' folders; every task line written has a unique tag that its title keeps."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.rng = rng
        self.dirs = [root / f"agent{a}" for a in range(AGENTS)]
        self.tags: set[str] = set()
        self._n = 0
        for d in self.dirs:
            d.mkdir(parents=True)
            for _ in range(FILES):
                self.new_file(d)

    def task_line(self) -> str:
        self._n += 1
        tag = f"{self.rng.choice(WORDS)}{self._n}"
        self.tags.add(tag)
        return (f"- [ ] {self.rng.choice(PEOPLE)} to {self.rng.choice(CHORES[:10])} "
                f"for the {tag} account\n")

    def new_file(self, d: Path) -> None:
        name = f"sync-{len(list(d.iterdir())):03}.md"
        tasks = "".join(self.task_line() for _ in range(self.rng.randint(2, 4)))
        (d / name).write_text(f"# Weekly sync {name}\n\n## Notes\n- We keep the hosting.\n\n"
                              f"## Action items\n{tasks}", encoding="utf-8")

    def edit_round(self) -> None:
        """New tasks in old files, new files, and an edit that adds no task at all."""
        for d in self.dirs:
            files = sorted(d.iterdir())
            for f in self.rng.sample(files, 3):
                with f.open("a", encoding="utf-8") as fh:
                    fh.write(self.task_line())
            with self.rng.choice(files).open("a", encoding="utf-8") as fh:
                fh.write("\nThe client liked the second palette.\n")
            for _ in range(2):
                self.new_file(d)


class Storm:
    """One client that keeps vanishing; a ledger of what reached it and what it acked."""

    def __init__(self, daemon: DaemonProcess, db: sqlite3.Connection, rng: random.Random
                 ) -> None:
        self.daemon = daemon
        self.db = db  # read-only view of the daemon's SQLite: is an ack committed?
        self.rng = rng
        self.conn: SidecarClient | None = None
        self.n = 0  # connections opened
        self.received: Counter[str] = Counter()
        self.titles: dict[str, str] = {}
        self.acked: set[str] = set()
        self.clean_acked: set[str] = set()  # acked, then a completed close handshake
        self.duplicated: list[str] = []
        self.resent_unacked = 0
        self.unclean_closes = 0  # a clean close whose handshake did not complete
        self.disconnects: Counter[str] = Counter()
        self.history: dict[str, list[str]] = {}  # key → what happened to it, for failures

    @property
    def c(self) -> SidecarClient:
        assert self.conn is not None
        return self.conn

    def note(self, key: str, event: str) -> None:
        self.history.setdefault(key, []).append(f"{event} #{self.n}")

    async def connect(self) -> None:
        self.conn = await self.daemon.connect()
        self.n += 1
        await self.conn.hello()

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        return await self.c.request(frame)

    def on_call(self, frame: dict[str, Any]) -> None:
        """Account for one tool_call the moment it arrives, before any ack."""
        key = frame["idempotency_key"]
        row = self.db.execute("SELECT state FROM outbox WHERE call_id = ?",
                              (frame["id"],)).fetchone()
        self.note(key, "received")
        if row is None or row[0] != "pending" or key in self.clean_acked:
            state = row[0] if row else "not queued"
            self.duplicated.append(f"{key} ({state}): {self.history[key]}")
        elif self.received[key]:
            self.resent_unacked += 1
        self.received[key] += 1
        self.titles[key] = str(frame["data"].get("title", ""))

    async def ack(self, frame: dict[str, Any]) -> None:
        await self.c.ack(frame)
        self.acked.add(frame["idempotency_key"])
        self.note(frame["idempotency_key"], "acked")

    async def drop(self, how: str, acked_now: Sequence[str] = ()) -> None:
        """Vanish (reset: TCP abort, no close frame; close: a close frame), then come back."""
        old, self.conn = self.c, None
        for key in acked_now:
            self.note(key, how)
        if how == "hand over":
            await self.connect()  # the new client says hello while the old one still lives
            await asyncio.sleep(self.rng.uniform(0, 0.02))
        if how.startswith(("reset", "hand over")):
            old.ws._writer.transport.abort()  # the socket just dies: no close frame
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.close(), 15)
        if how.startswith("close"):
            if old.ws.close_code == WSCloseCode.OK:  # the daemon answered our close frame
                self.clean_acked.update(acked_now)
            else:
                self.unclean_closes += 1
        self.disconnects[how] += 1
        if self.conn is None:
            await asyncio.sleep(self.rng.uniform(0, 0.03))
            await self.connect()

    async def on_tool_call(self, frame: dict[str, Any]) -> None:
        self.on_call(frame)
        r = self.rng.random()
        how = next((name for p, name in ACTIONS if r < p), None)
        if how is None:
            await self.ack(frame)
        elif how.endswith("before ack") or how == "hand over":
            await self.drop(how)
        elif how.endswith("after ack"):
            await self.ack(frame)
            await self.drop(how, [frame["idempotency_key"]])
        else:  # a batch: what is queued or arrives within 30 ms, acked only in part
            batch, size = [frame], self.rng.randint(2, 12)
            with contextlib.suppress(TimeoutError):
                while len(batch) < size:
                    nxt = await self.c.next_push("tool_call", timeout=0.03)
                    self.on_call(nxt)
                    batch.append(nxt)
            done = batch[:self.rng.randint(1, max(1, len(batch) - 1))]
            for f in done:
                await self.ack(f)
            await self.drop(how, [f["idempotency_key"] for f in done])

    async def step(self, stormy: bool) -> bool:
        """Handle one pushed frame, storming or not; False if none came within 50 ms."""
        try:
            frame = await self.c.next_push(None, timeout=0.05)
        except TimeoutError:
            if stormy and self.rng.random() < 0.08:  # nothing in flight: drop anyway
                await self.drop(self.rng.choice(["reset, idle", "close, idle"]))
            return False
        if frame["type"] == "tool_call":
            if stormy:
                await self.on_tool_call(frame)
            else:
                self.on_call(frame)
                await self.ack(frame)
        return True


async def still_running(storm: Storm, agents: list[str], run_ids: set[str]) -> set[str]:
    """The subset of ``run_ids`` still running (asked over the wire: pushes may be missed)."""
    still: set[str] = set()
    for agent in agents:
        reply = await storm.request({"type": "run_list", "agent_id": agent, "limit": 5})
        still |= {r["id"] for r in reply["runs"]
                  if r["id"] in run_ids and r["status"] == "running"}
    return still


@pytest.fixture
async def daemon_storm(data_dir: Path, token: str, model_dir: Path
                       ) -> AsyncIterator[DaemonProcess]:
    # 600 s: no re-send on timeout during the test, so every re-send seen follows a disconnect
    # and a call stuck in flight shows up as a lost record instead of a 30 s hiccup.
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)],
                                  env={"SIDECAR_INSERT_TIMEOUT_SECONDS": "600"})
    try:
        yield d
    finally:
        await d.stop()


@pytest.mark.slow
async def test_disconnect_storm_loses_and_duplicates_nothing(
        daemon_storm: DaemonProcess, data_dir: Path, tmp_path: Path, figure: Figure) -> None:
    """Every record the agents queue reaches the client and is acked; no committed ack returns."""
    folders = Folders(tmp_path / "docs", random.Random(SEED))  # the same files every time
    db = sqlite3.connect(f"file:{data_dir / 'sidecar.sqlite3'}?mode=ro", uri=True)
    storm = Storm(daemon_storm, db, random.Random(SEED + 1))
    await storm.connect()
    agents: list[str] = []
    for i, d in enumerate(folders.dirs):
        reply = await storm.request({"type": "agent_upsert", "agent": {
            "kind": "local", "name": f"Storm {i}", "directories": [str(d)],
            "extensions": [".md"], "data_types": ["tasks"], "schedule_cron": "0 3 * * *",
            "watch": False}})
        agents.append(reply["agent"]["id"])

    t0 = time.monotonic()
    rnd = 0
    while rnd < ROUNDS or (sum(storm.disconnects.values()) < MIN_DISCONNECTS
                           and rnd < MAX_ROUNDS):
        if rnd:
            folders.edit_round()
        running = {(await storm.request({"type": "run_agent", "agent_id": a}))["run_id"]
                   for a in agents}
        polled = 0.0
        while running:  # the storm goes on while the runs extract, queue and drain
            assert time.monotonic() - t0 < 300, "the storm did not settle in time"
            await storm.step(stormy=True)
            if time.monotonic() - polled > 0.2:
                running = await still_running(storm, agents, running)
                polled = time.monotonic()
        rnd += 1

    # calm: the last client stays and acks everything until the outbox is empty
    while True:
        assert time.monotonic() - t0 < 360, "the outbox did not empty in time"
        while await storm.step(stormy=False):
            pass
        if (await storm.request({"type": "status"}))["outbox_pending"] == 0:
            break
    quiet = time.monotonic()
    while time.monotonic() - quiet < 0.5:  # nothing else may arrive now
        if await storm.step(stormy=False):
            quiet = time.monotonic()
    storm_s = time.monotonic() - t0
    await storm.c.close()
    db.close()

    async with Store(data_dir / "sidecar.sqlite3") as store:
        rows = await store.db.fetchall("SELECT idempotency_key, state FROM outbox")
    queued = {r["idempotency_key"]: r["state"] for r in rows}
    lost = sorted(k for k in queued if k not in storm.acked)
    disconnects = sum(storm.disconnects.values())
    figure("disconnect storm", "disconnects (reset / clean / hand-over)",
           f"{disconnects} ({sum(n for k, n in storm.disconnects.items() if 'reset' in k)} / "
           f"{sum(n for k, n in storm.disconnects.items() if k.startswith('close'))} / "
           f"{storm.disconnects['hand over']})")
    figure("disconnect storm", f"records ({AGENTS} agents, {rnd} runs each)", len(queued))
    figure("disconnect storm", "records lost", len(lost))
    figure("disconnect storm", "records duplicated (after a committed ack)",
           len(storm.duplicated))
    figure("disconnect storm", "re-sends of unacked calls", storm.resent_unacked)
    figure("disconnect storm", "wall time, s", round(storm_s, 1))

    assert not lost, f"{len(lost)} queued records never acked: {lost[:5]}"
    assert set(storm.received) == set(queued), "a tool_call for a record never queued"
    assert set(queued.values()) == {"acked"}, Counter(queued.values())
    assert not storm.duplicated, storm.duplicated[:5]
    got = set(re.findall(r"[a-z]+\d+", " ".join(storm.titles.values()).lower()))
    missing = sorted(folders.tags - got)
    assert not missing, f"written task lines never arrived: {missing[:5]}"
    assert len(queued) == len(folders.tags), "one record per task line written"
    assert storm.unclean_closes == 0, "a clean close did not complete its handshake"
    assert disconnects >= MIN_DISCONNECTS and storm.resent_unacked > 0, storm.disconnects
