"""Crash harness: SIGKILL the daemon at 26 exact and random points of a run; nothing is lost.

Each kill is either a named failpoint (sidecar/failpoints.py, armed through the daemon's
environment: the process SIGKILLs itself on the Nth pass) or a SIGKILL from outside at a
moment drawn from a seeded RNG. The next daemon starts on the same data directory, on the
very bytes the kill left, and a client that acks only some frames talks to it. Which
failpoint fires on which pass is fixed; what else the daemon got done by then is not, so the
checks are invariants over whatever state each kill left, read back from SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import shutil
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sidecar.client import DaemonProcess, SidecarClient
from tests.reliability.corpus import CHORES, PEOPLE

Figure = Callable[[str, str, Any], None]
#: What a record is, independent of the agent id inside its key: (file, table, title).
Ident = tuple[str, str, str]

SEED = 20240611
DOCS = 90
LIFE_TIMEOUT = 8.0  # an armed failpoint that has not fired by then never will
PACE = 0.015  # seconds between acks in settle lives: more than the 5 ms flush interval

CLIENTS = ["Harbor Bakery", "Northwind Dental", "Kestrel Bikes", "Alder & Finch",
           "Bluebell Florist", "Orbit Coworking", "Juniper Yoga", "Tidewater Books"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]


def write_documents(folder: Path, n: int) -> dict[str, list[str]]:
    """Meeting notes, plans and emails in md/txt, each with a few action items.

    Returns the gold lines: for each file, the chores its action items name (lower case), as
    written here, independent of what any extractor makes of them.
    """
    rng = random.Random(SEED)
    gold: dict[str, list[str]] = {}
    for i in range(n):
        client = CLIENTS[i % len(CLIENTS)]
        chores = rng.sample(CHORES, 4)
        who = rng.sample(PEOPLE, 4)
        day = rng.choice(DAYS)
        kind = i % 3
        if kind == 0:
            text = (f"# Weekly sync: {client} (#{i})\n\nAttendees: {who[0]}, {who[1]}, {who[2]}\n\n"
                    f"## Notes\n- Decision: we keep the current hosting until the launch.\n"
                    f"- The client liked the second colour palette.\n\n## Action items\n"
                    f"- [ ] {who[0]} to {chores[0]} by {day}\n"
                    f"- [ ] {who[1]}: {chores[1]} for {client}\n"
                    f"- [ ] {chores[2].capitalize()} (urgent)\n"
                    f"- [ ] {who[3]} to {chores[3]} before the review\n")
            name = f"sync-{i:02}.md"
        elif kind == 1:
            text = (f"# Project plan: {client} site refresh, phase {i}\n\n"
                    f"Goal: a faster site with the new brand before the season starts.\n\n"
                    f"## Next steps\n- [ ] {chores[0].capitalize()} by {day}\n"
                    f"- [ ] {who[0]} will {chores[1]}\n"
                    f"- [ ] {chores[2].capitalize()}\n"
                    f"- [x] Agree the sitemap with {who[1]}\n\n"
                    f"Risks: the photographer is booked out in April.\n")
            name = f"plan-{i:02}.md"
        else:
            text = (f"From: {who[0]} <{who[0].lower()}@{client.split()[0].lower()}.example>\n"
                    f"To: {who[1]} <{who[1].lower()}@studio.example>\n"
                    f"Subject: Before the {client} launch ({i})\n\n"
                    f"Hi {who[1]},\n\nthanks for the update yesterday. A few things:\n\n"
                    f"- [ ] Please {chores[0]} before {day}\n"
                    f"- [ ] {chores[1].capitalize()}\n"
                    f"- [ ] {chores[2].capitalize()} by the end of the week\n\n"
                    f"Best,\n{who[0]}\n")
            name = f"mail-{i:02}.txt"
        (folder / name).write_text(text, encoding="utf-8")
        items = [c.lower() for c in (chores[:4] if kind == 0 else chores[:3])]
        gold[name] = [*items, f"agree the sitemap with {who[1]}".lower()] if kind == 1 else items
    return gold


def gold_missing(gold: dict[str, list[str]], records: set[Ident]) -> list[tuple[str, str]]:
    """Gold action items with no task record from their file whose title names them."""
    titles: dict[str, list[str]] = {}
    for path, table, title in records:
        if table == "tasks":
            titles.setdefault(Path(path).name, []).append(title.lower())
    return [(name, chore) for name, chores in gold.items() for chore in chores
            if not any(chore in t for t in titles.get(name, ()))]


@dataclass(frozen=True, slots=True)
class Kill:
    """One daemon life, ended by a SIGKILL: at a failpoint's Nth hit, or from outside."""

    point: str | None  # a failpoint name; None = SIGKILL from the test
    hit: int = 0  # which pass through ``point``; 0 = "the last document still to extract"
    run: bool = False  # ask for a run (until one finishes, the start-up catch-up runs anyway)
    frames: int = 0  # outside kills: after this many tool_calls reach the client…
    delay: float = 0.0  # …plus this many seconds
    pace: float = 0.0  # seconds between the client's acks (> the 5 ms flush: one per batch)
    quiet: float = 0.0  # outside kills: stop acking, wait this long, then kill
    acks: int = 8  # the client acks at most this many calls: a backlog is left for later kills


def schedule(rng: random.Random) -> list[Kill]:
    """Extraction kills interleaved with delivery kills, then the backlog's delivery kills."""

    def outside(run: bool, frames_hi: int, quiet: float = 0.0) -> Kill:
        return Kill(None, run=run, frames=rng.randint(1, frames_hi),
                    delay=round(rng.uniform(0.0, 0.02), 4), quiet=quiet)

    return [
        Kill("outbox.queued", 10, run=True),
        Kill("delivery.sent", 4),
        Kill("extract", 2, run=True),
        Kill("delivery.ack_received", 3),
        Kill("outbox.enqueue", 2, run=True),
        Kill("outbox.settle", 2, pace=PACE),
        outside(True, 6),
        Kill("extract", 5, run=True),
        Kill("outbox.settled", 1, pace=PACE),
        Kill("outbox.enqueue", 4, run=True),
        Kill("delivery.sent", 9),
        Kill("outbox.queued", 1, run=True),
        outside(True, 6),
        Kill("outbox.queued", 0, run=True),  # the very last document: all work is queued
        Kill("delivery.sent", 1),
        Kill("delivery.ack_received", 1),
        Kill("outbox.settle", 1, pace=PACE),
        Kill("delivery.sent", 40),
        outside(False, 30, quiet=0.3),
        Kill("delivery.ack_received", 10, acks=14),
        Kill("outbox.settled", 3, pace=PACE),
        Kill("outbox.settle", 4, pace=PACE),
        outside(False, 30),
        Kill("delivery.sent", 20),
        Kill("outbox.settled", 2, pace=PACE),
        outside(False, 40, quiet=0.3),  # every ack given 0.3 s before the kill is committed
    ]


def acks(life: int, key: str) -> bool:
    """The client acks about 60 % of frames, a different but reproducible 60 % each life."""
    return hashlib.sha256(f"{life}:{key}".encode()).digest()[0] < 154


def ident(frame: dict[str, Any]) -> Ident:
    data = frame["data"]
    return (str((frame.get("source") or {}).get("path")), frame["table"],
            str(data.get("title") or data.get("name") or data.get("content")))


@dataclass
class Snapshot:
    """What a kill left in SQLite, read from a copy so the next daemon gets the raw bytes."""

    integrity: str
    acked: set[str]
    pending: int
    failed: int
    files_done: int


def snapshot(data_dir: Path, scratch: Path) -> Snapshot:
    scratch.mkdir(exist_ok=True)
    db = data_dir / "sidecar.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        src = db.with_name(db.name + suffix)
        dst = scratch / (db.name + suffix)
        dst.unlink(missing_ok=True)
        if src.exists():
            shutil.copyfile(src, dst)
    con = sqlite3.connect(scratch / db.name)
    try:
        integrity = "\n".join(r[0] for r in con.execute("PRAGMA integrity_check"))
        acked = {r[0] for r in con.execute(
            "SELECT idempotency_key FROM outbox WHERE state = 'acked'")}
        pending = con.execute("SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone()
        failed = con.execute("SELECT count(*) FROM outbox WHERE state = 'failed'").fetchone()
        files = con.execute("SELECT count(*) FROM file_state WHERE status = 'extracted'"
                            ).fetchone()
    finally:
        con.close()
    return Snapshot(integrity, acked, pending[0], failed[0], files[0])


@dataclass
class Ledger:
    """Every tool_call the client saw, classified against what the daemon had committed."""

    idents: dict[str, Ident] = field(default_factory=dict)  # key → record, first sight
    key_reused: list[str] = field(default_factory=list)  # one key, two different records
    client_acked: set[str] = field(default_factory=set)
    committed: set[str] = field(default_factory=set)  # acked in SQLite as of the last kill
    received: int = 0
    acked_then_resent: list[str] = field(default_factory=list)
    twice_in_one_life: int = 0
    resent_unacked: int = 0  # never acked: must come again (allowed, expected)
    resent_ack_uncommitted: int = 0  # acked, but the kill beat the commit (allowed)

    def see(self, frame: dict[str, Any], life_keys: set[str], life_acked: set[str]) -> None:
        key = frame["idempotency_key"]
        record = ident(frame)
        self.received += 1
        seen = key in self.idents
        if self.idents.setdefault(key, record) != record:
            self.key_reused.append(key)
        if key in life_keys:  # no insert times out here: one connection sees a call once
            self.twice_in_one_life += 1
            if key in life_acked:
                self.acked_then_resent.append(key)
        elif key in self.committed:
            self.acked_then_resent.append(key)
        elif key in self.client_acked:
            self.resent_ack_uncommitted += 1
        elif seen:
            self.resent_unacked += 1
        life_keys.add(key)


async def make_agent(c: SidecarClient, folder: Path) -> dict[str, Any]:
    reply = await c.request({"type": "agent_upsert", "agent": {
        "kind": "local", "name": "Crash", "directories": [str(folder)],
        "extensions": [".md", ".txt"], "data_types": ["tasks"],
        "schedule_cron": "0 3 * * *", "watch": False}})
    assert reply["type"] == "agent_upsert_result", reply
    return reply["agent"]


async def live(d: DaemonProcess, c: SidecarClient, ledger: Ledger, life: int, kill: Kill | None,
               agent_id: str) -> tuple[set[str], bool]:
    """Drive one daemon life: start a run if asked, take frames, ack some, until it dies.

    The final life (``kill`` None) acks everything and returns once nothing is pending.
    Returns the keys this life's client acked, and whether the planned kill happened (a
    failpoint that never fires is killed from outside at LIFE_TIMEOUT, so the records are
    still counted, and reported).
    """
    loop = asyncio.get_running_loop()
    exited = asyncio.ensure_future(d.proc.wait())
    life_keys: set[str] = set()
    life_acked: set[str] = set()
    run_id: str | None = None
    kill_at: float | None = None  # an outside kill, once its moment is known
    acking = True
    on_plan = True
    deadline = loop.time() + (120.0 if kill is None else LIFE_TIMEOUT)
    try:
        with contextlib.suppress(ConnectionError, TimeoutError, RuntimeError):
            await c.request({"type": "hello", "protocol": 1, "client": "crash-test"}, 5)
            if kill is None or kill.run:
                started = await c.request({"type": "run_agent", "agent_id": agent_id}, 5)
                run_id = started.get("run_id")
        finished = False
        while True:
            if loop.time() > deadline and kill_at != float("inf"):
                if kill is None:
                    pytest.fail("the final life did not deliver everything in time: "
                                + "\n".join(d.stderr_lines[-20:]))
                on_plan, kill_at = False, loop.time()
            if kill_at is not None and loop.time() >= kill_at:
                d.proc.send_signal(signal.SIGKILL)
                kill_at = float("inf")
            if exited.done() and c.pushed.empty() and c.closed.is_set():
                return life_acked, on_plan
            try:
                frame = await asyncio.wait_for(c.pushed.get(), 0.02)
            except TimeoutError:
                if kill is None and finished:
                    status = await c.request({"type": "status"})
                    if status["outbox_pending"] == 0:
                        return life_acked, on_plan
                continue
            if frame["type"] == "run_finished" and frame["run"]["id"] == run_id:
                finished = True
            if frame["type"] != "tool_call":
                continue
            key = frame["idempotency_key"]
            ledger.see(frame, life_keys, life_acked)
            if kill is not None and kill.point is None and kill_at is None \
                    and len(life_keys) >= kill.frames:
                kill_at = loop.time() + kill.delay + kill.quiet
                acking = not kill.quiet
            if acking and (kill is None or (len(life_acked) < kill.acks and acks(life, key))):
                try:
                    await c.ack(frame, result={"id": frame["id"]})
                except (ConnectionError, RuntimeError):
                    continue
                ledger.client_acked.add(key)
                life_acked.add(key)
                if kill is not None and kill.pace:
                    await asyncio.sleep(kill.pace)
    finally:
        exited.cancel()


@pytest.mark.slow
async def test_sigkill_anywhere_loses_and_duplicates_nothing(
        tmp_path: Path, token: str, model_dir: Path, figure: Figure) -> None:
    """26 SIGKILLs (21 at 7 failpoints, 5 from outside) and restarts over a 90-document run.

    Delivery is at-least-once on the wire and exactly-once by ``idempotency_key``: a kill may
    cause a re-send of a call the client never acked, or acked too late for the daemon to
    commit it (the client de-duplicates on the key), and that is counted but allowed. These
    are the failures, each asserted to be 0:

    * lost: a record an uncrashed daemon delivers for these documents that never arrived,
      or that is not ``acked`` in the outbox at the end;
    * duplicated: the client's de-duplicated set holds a record not expected, one record
      under two keys, or one key carrying two different records;
    * acked then resent: a tool_call for a key whose ack was committed in the database the
      previous kill left, or that this same connection had already acked;
    * ack dropped: an ack given 0.3 s before a kill (time to commit it) but not committed;
    * corrupt: a database left by a kill that fails ``PRAGMA integrity_check``.
    """
    t0 = time.monotonic()
    folder = tmp_path / "docs"
    folder.mkdir()
    gold = write_documents(folder, DOCS)
    gold_lines = sum(map(len, gold.values()))
    assert len(gold) == DOCS and gold_lines >= 3 * DOCS
    args = ["--model-dir", str(model_dir)]

    ref = await DaemonProcess.start(tmp_path / "ref", token=token, extra_args=args)
    try:  # what an uncrashed daemon delivers for these documents
        c = await ref.connect()
        reference = Ledger()
        await live(ref, c, reference, 0, None, (await make_agent(c, folder))["id"])
        await c.close()
    finally:
        await ref.stop()
    expected = set(reference.idents.values())
    # the uncrashed daemon's records are the expected set only if they hold every gold line
    ref_missing = gold_missing(gold, expected)
    assert not ref_missing, (f"an uncrashed daemon delivered {len(expected)} records but "
                             f"{len(ref_missing)} of {gold_lines} gold action items are "
                             f"missing", ref_missing[:10])
    assert len(expected) == len(reference.idents) == reference.received >= gold_lines

    data_dir = tmp_path / "data"
    kills = schedule(random.Random(SEED))
    ledger = Ledger()
    integrity: list[str] = []
    acks_dropped: list[str] = []
    unfired: list[str] = []  # planned kills that could not happen: the schedule is wrong
    agent_id = ""
    snap: Snapshot | None = None
    log: list[str] = []
    for life, planned in enumerate([*kills, None]):
        kill = planned
        if kill is not None and kill.point is not None and kill.hit == 0:
            assert snap is not None
            left = DOCS - snap.files_done
            if left:
                kill = Kill(kill.point, left, run=True)
            else:  # earlier lives did it all: go on (and fail at the end), killing from outside
                unfired.append(f"life {life}: {kill}: no document left to extract")
                kill = Kill(None, frames=1)
        env = {"SIDECAR_FAILPOINT": f"{kill.point}:{kill.hit}"} if kill and kill.point else {}
        d = await DaemonProcess.start(data_dir, token=token, extra_args=args, env=env)
        try:
            c = await d.connect()
            if not agent_id:
                agent_id = (await make_agent(c, folder))["id"]
            acked, on_plan = await live(d, c, ledger, life, kill, agent_id)
            await c.close()
        finally:
            code = await d.stop()
        if not on_plan:
            unfired.append(f"life {life}: {kill}")
        want = 0 if kill is None else -signal.SIGKILL
        assert code == want, (life, kill, code, "\n".join(d.stderr_lines[-20:]))
        snap = snapshot(data_dir, tmp_path / "snap")
        integrity.append(snap.integrity)
        ledger.committed = snap.acked
        if kill is not None and kill.quiet:
            acks_dropped += sorted(acked - snap.acked)
        log.append(f"life {life:2} {kill}: files {snap.files_done} pending {snap.pending} "
                   f"acked {len(snap.acked)} received {ledger.received}")
    wall = time.monotonic() - t0
    assert snap is not None
    print("\n".join(log))  # shown when the test fails

    got = set(ledger.idents.values())
    lost = (expected - got) | {ledger.idents[k] for k in set(ledger.idents) - snap.acked}
    acked_records = {ledger.idents[k] for k in set(ledger.idents) & snap.acked}
    gold_lost = gold_missing(gold, acked_records)
    per_record = Counter(ledger.idents.values())
    duplicated = (len(got - expected) + sum(n - 1 for n in per_record.values())
                  + len(ledger.key_reused))
    corrupt = [i for i in integrity if i != "ok"]
    at_failpoints = sum(1 for k in kills if k.point is not None)
    figure("crash", "documents / records expected", f"{DOCS} / {len(expected)}")
    figure("crash", "gold action items written / delivered and acked",
           f"{gold_lines} / {gold_lines - len(gold_lost)}")
    figure("crash", "kill points (SIGKILL, restart)", len(kills))
    figure("crash", "  at failpoints / from outside",
           f"{at_failpoints} / {len(kills) - at_failpoints}")
    figure("crash", "tool_calls received", ledger.received)
    figure("crash", "re-sent, never acked (allowed)", ledger.resent_unacked)
    figure("crash", "re-sent, ack not committed (allowed)", ledger.resent_ack_uncommitted)
    figure("crash", "records lost", len(lost))
    figure("crash", "records duplicated", duplicated)
    figure("crash", "records acked then resent", len(ledger.acked_then_resent))
    figure("crash", "acks dropped by a live daemon", len(acks_dropped))
    figure("crash", "integrity_check failures", f"{len(corrupt)} of {len(integrity)}")
    figure("crash", "wall time, s", wall)

    assert len(kills) >= 20 and len(set(kills)) == len(kills)
    assert {k.point for k in kills} >= {
        None, "extract", "outbox.enqueue", "outbox.queued", "delivery.sent",
        "delivery.ack_received", "outbox.settle", "outbox.settled"}
    assert not lost, sorted(lost)[:10]
    assert not gold_lost, gold_lost[:10]
    assert duplicated == 0, (sorted(got - expected)[:5], ledger.key_reused[:5])
    resent = ledger.acked_then_resent
    assert not resent, resent[:10]
    assert ledger.twice_in_one_life == 0
    assert not acks_dropped, acks_dropped[:10]
    assert not corrupt, corrupt
    assert (snap.pending, snap.failed, len(snap.acked)) == (0, 0, len(expected))
    assert not unfired, f"failpoints that never fired (schedule needs more work): {unfired}"
    # the kills really cut work in flight: each kill between an ack and its commit left a call
    # the client had acked that had to come again; calls never acked came again too
    ack_kills = sum(1 for k in kills if k.point in ("delivery.ack_received", "outbox.settle"))
    again = ledger.resent_ack_uncommitted
    assert again >= ack_kills, (again, ack_kills)
    assert ledger.resent_unacked > 0
