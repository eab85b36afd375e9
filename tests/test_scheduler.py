"""The Scheduler with a controllable clock, a fake run starter and power; plus the real daemon."""

from __future__ import annotations

import asyncio
import json
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import sidecar.scheduler as scheduler_mod
from sidecar.client import DaemonProcess, SidecarClient
from sidecar.clock import iso, parse_iso
from sidecar.domain import validate_agent
from sidecar.power import PowerState, PsutilPower
from sidecar.scheduler import CronTrigger, Scheduler
from sidecar.store import Store

BERLIN = ZoneInfo("Europe/Berlin")
#: A fixed "now" for catch-up decisions: Wednesday 2025-06-04 14:20 in Berlin.
NOW = datetime(2025, 6, 4, 14, 20, tzinfo=BERLIN)


@dataclass
class Clock:
    """The scheduler's ``now=``: tests move it by hand."""

    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Power:
    """An injected PowerSource whose state a test sets."""

    state: PowerState = field(default_factory=lambda: PowerState(on_battery=False))
    reads: int = 0

    def read(self) -> PowerState:
        self.reads += 1
        return self.state


@dataclass
class FakeRuns:
    """start_run: records calls; an agent in ``running`` answers (its run id, True)."""

    store: Store
    clock: Clock
    calls: list[tuple[str, str]] = field(default_factory=list)
    running: dict[str, str] = field(default_factory=dict)
    #: Like the real Runner, a finished run sets last_run_at (to the clock's now).
    complete: bool = True

    async def start(self, agent_id: str, trigger: str) -> tuple[str, bool]:
        self.calls.append((agent_id, trigger))
        if agent_id in self.running:
            return self.running[agent_id], True
        run_id = f"r_{len(self.calls)}"
        if self.complete:
            await self.store.agents.set_last_run(agent_id, iso(self.clock.now))
        return run_id, False

    def agents(self) -> list[str]:
        return [a for a, _ in self.calls]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store(tmp_path / "sidecar.db").open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def power() -> Power:
    return Power()


@pytest.fixture
def runs(store: Store, clock: Clock) -> FakeRuns:
    return FakeRuns(store, clock)


MakeScheduler = Callable[..., Awaitable[Scheduler]]


@pytest.fixture
async def make_scheduler(store: Store, runs: FakeRuns, power: Power, clock: Clock
                         ) -> AsyncIterator[MakeScheduler]:
    made: list[Scheduler] = []

    async def make(*, start: bool = True, **kwargs: Any) -> Scheduler:
        opts: dict[str, Any] = dict(tz=BERLIN, power=power, now=clock, tick_seconds=3600.0,
                                    power_poll_seconds=3600.0, battery_threshold=30.0)
        opts.update(kwargs)
        sched = Scheduler(store, runs.start, **opts)
        made.append(sched)
        if start:
            await sched.start()
        return sched

    yield make
    for s in made:
        await s.stop()


async def add_agent(store: Store, agent_id: str, cron: str, *, enabled: bool = True,
                    last_run: datetime | None = None) -> None:
    agent = validate_agent({"id": agent_id, "kind": "cloud", "provider": "gmail",
                            "name": agent_id, "schedule_cron": cron, "enabled": enabled})
    await store.agents.upsert(agent)
    if last_run is not None:
        await store.agents.set_last_run(agent_id, iso(last_run))


async def insert_raw_agent(store: Store, agent_id: str, cron: str) -> None:
    """An agent row from an old database: written by SQL, never through validate_agent."""
    config = {"id": agent_id, "kind": "cloud", "provider": "gmail", "name": agent_id,
              "schedule_cron": cron, "enabled": True, "data_types": ["tasks"],
              "engine": "local", "min_confidence": 0.0, "remote": {}, "filter_config": {},
              "prompt_template": "", "project_id": None, "account": None}
    ts = iso(NOW - timedelta(days=400))
    await store.db.execute(
        "INSERT INTO agents (id, kind, name, enabled, schedule_cron, config, created_at, "
        "updated_at) VALUES (?, 'cloud', ?, 1, ?, ?, ?, ?)",
        (agent_id, agent_id, cron, json.dumps(config), ts, ts))


def next_minute(after: datetime) -> datetime:
    return after.replace(second=0, microsecond=0) + timedelta(minutes=1)


# -- catch-up -------------------------------------------------------------------------------


async def test_catch_up_after_sleep_fires_once_per_agent(
        store: Store, runs: FakeRuns, clock: Clock, make_scheduler: MakeScheduler) -> None:
    # both last ran before the laptop slept at 09:10; it is now 14:20: many slots were missed
    await add_agent(store, "hourly", "0 * * * *", last_run=NOW.replace(hour=9, minute=0))
    await add_agent(store, "quarter", "*/15 * * * *", last_run=NOW.replace(hour=9, minute=5))
    await add_agent(store, "daily", "0 12 * * *",
                    last_run=NOW.replace(hour=12, minute=0, second=5) - timedelta(days=1))
    clock.now = NOW.replace(hour=9, minute=10)
    sched = await make_scheduler()
    assert runs.calls == []  # at 09:10 nothing was due

    clock.now = NOW
    started = await sched.catch_up("wake")
    assert sorted(runs.calls) == [("daily", "catch_up"), ("hourly", "catch_up"),
                                  ("quarter", "catch_up")]
    assert len(started) == 3 and len(set(started)) == 3
    assert sorted(sched.fired) == sorted(runs.calls)

    # the runs set last_run_at: a second wake-up at the same moment starts nothing more
    assert await sched.catch_up("wake") == []
    assert len(runs.calls) == 3


async def test_startup_catch_up_runs_never_run_and_overdue_agents(
        store: Store, runs: FakeRuns, make_scheduler: MakeScheduler) -> None:
    await add_agent(store, "never", "0 3 * * *")  # never run → overdue (the seed's rule)
    await add_agent(store, "missed", "0 * * * *", last_run=NOW - timedelta(hours=2))
    await add_agent(store, "fresh", "0 * * * *", last_run=NOW.replace(minute=1))
    await make_scheduler()
    assert sorted(runs.calls) == [("missed", "catch_up"), ("never", "catch_up")]


@pytest.mark.parametrize(
    ("cron", "last_run", "now"),
    [
        ("0 * * * *", NOW.replace(minute=0, second=30), NOW),  # ran after the latest slot
        ("*/15 * * * *", NOW.replace(minute=16), NOW),  # 14:30 is still ahead
        ("0 3 * * *", NOW.replace(hour=3, minute=0, second=2), NOW),  # today's run is done
        ("0 9 * * 1-5", datetime(2025, 6, 6, 9, 0, 5, tzinfo=BERLIN),  # Fri; next is Mon
         datetime(2025, 6, 8, 23, 0, tzinfo=BERLIN)),
    ],
)
async def test_not_overdue_agent_does_not_fire(
        store: Store, runs: FakeRuns, clock: Clock, make_scheduler: MakeScheduler,
        cron: str, last_run: datetime, now: datetime) -> None:
    clock.now = now
    await add_agent(store, "a", cron, last_run=last_run)
    sched = await make_scheduler()
    assert await sched.catch_up("wake") == []
    assert runs.calls == [] and sched.fired == []


async def test_disabled_agent_never_fires(
        store: Store, runs: FakeRuns, clock: Clock, make_scheduler: MakeScheduler) -> None:
    await add_agent(store, "off", "* * * * *", enabled=False)  # never run: would be overdue
    sched = await make_scheduler()
    clock.now = NOW + timedelta(days=30)
    assert await sched.catch_up("wake") == []
    assert sched._aps.get_job("off") is None
    assert sched.next_run_at("off") is None
    assert runs.calls == []


async def test_catch_up_of_a_running_agent_starts_nothing_new(
        store: Store, runs: FakeRuns, make_scheduler: MakeScheduler) -> None:
    await add_agent(store, "busy", "0 * * * *", last_run=NOW - timedelta(hours=5))
    runs.running["busy"] = "r_manual"
    sched = await make_scheduler()
    assert runs.calls == [("busy", "catch_up")]
    assert sched.fired == []  # the manual run already covers it
    assert sched.deferred == {}


# -- sync: edit, disable, delete ------------------------------------------------------------


async def test_edit_reschedules_at_once_and_delete_removes_the_job(
        store: Store, runs: FakeRuns, make_scheduler: MakeScheduler) -> None:
    await add_agent(store, "a", "0 3 * * *", last_run=NOW)
    sched = await make_scheduler()
    first = parse_iso(sched.next_run_at("a"))
    assert first is not None
    assert first.astimezone(BERLIN).strftime("%H:%M") == "03:00"
    assert first > datetime.now(UTC)

    await add_agent(store, "a", "*/5 * * * *", last_run=NOW)
    await sched.sync("a")
    edited = parse_iso(sched.next_run_at("a"))
    assert edited is not None and edited.minute % 5 == 0 and edited.second == 0
    real_now = datetime.now(UTC)
    assert real_now < edited <= real_now + timedelta(minutes=5)
    assert sched._aps.get_job("a").trigger.cron == "*/5 * * * *"

    await add_agent(store, "a", "*/5 * * * *", enabled=False)
    await sched.sync("a")
    assert sched._aps.get_job("a") is None and sched.next_run_at("a") is None

    await add_agent(store, "a", "*/5 * * * *", enabled=True)
    await sched.sync("a")
    assert sched._aps.get_job("a") is not None

    assert await store.agents.delete("a")
    await sched.sync("a")
    assert sched._aps.get_job("a") is None and sched.next_run_at("a") is None
    assert sched._aps.get_jobs() == []
    assert runs.calls == []


async def test_sync_before_start_is_a_no_op(store: Store, make_scheduler: MakeScheduler) -> None:
    await add_agent(store, "a", "0 * * * *")
    sched = await make_scheduler(start=False)
    await sched.sync("a")  # no APScheduler yet: nothing to do, no error
    assert sched.next_run_at("a") is None


# -- invalid cron from an old database ------------------------------------------------------


@pytest.mark.parametrize("cron", ["61 * * * *", "not cron", "", "* * * * * *"])
async def test_invalid_cron_from_an_old_database_never_fires(
        store: Store, runs: FakeRuns, clock: Clock, make_scheduler: MakeScheduler,
        cron: str) -> None:
    await insert_raw_agent(store, "old", cron)
    await add_agent(store, "good", "0 * * * *", last_run=NOW)
    sched = await make_scheduler()  # start-up catch-up: "old" never ran, yet must not run
    assert "old" in sched.invalid and repr(cron) in sched.invalid["old"]
    assert sched.invalid["old"].startswith("invalid schedule")
    assert "good" not in sched.invalid
    assert sched._aps.get_job("old") is None
    assert sched.next_run_at("old") is None
    nxt, why = sched.upcoming("old")
    assert nxt is None and why is not None and why.startswith("invalid schedule")
    clock.now = NOW + timedelta(days=2)
    await sched.catch_up("wake")
    assert "old" not in runs.agents()
    assert runs.agents() == ["good"]
    # re-syncing (e.g. another agent changed) keeps reporting it
    await sched.sync("old")
    assert "old" in sched.invalid


# -- battery deferral -----------------------------------------------------------------------


async def test_low_battery_defers_then_power_returns(
        store: Store, runs: FakeRuns, power: Power, make_scheduler: MakeScheduler) -> None:
    power.state = PowerState(on_battery=True, percent=20.0)
    await add_agent(store, "a", "0 * * * *", last_run=NOW - timedelta(hours=3))
    sched = await make_scheduler()
    assert runs.calls == []
    assert sched.deferred == {"a": "deferred: on battery (20% < 30%)"}
    assert sched.deferred["a"].startswith("deferred: on battery (")
    assert await sched.catch_up("wake") == []  # still low: still waiting, not started
    assert runs.calls == [] and list(sched.deferred) == ["a"]

    await sched.release_deferred()  # still on battery: nothing moves
    assert runs.calls == []

    power.state = PowerState(on_battery=False, percent=21.0)  # plugged in
    await sched.release_deferred()
    assert runs.calls == [("a", "schedule")]
    assert sched.deferred == {}
    await sched.release_deferred()  # released once, not again
    assert len(runs.calls) == 1


async def test_power_watch_releases_deferred_runs_by_itself(
        store: Store, runs: FakeRuns, power: Power, make_scheduler: MakeScheduler) -> None:
    power.state = PowerState(on_battery=True, percent=5.0)
    await add_agent(store, "a", "0 * * * *")
    sched = await make_scheduler(power_poll_seconds=0.01)
    assert "a" in sched.deferred
    await asyncio.sleep(0.05)
    assert runs.calls == []
    power.state = PowerState(on_battery=True, percent=80.0)  # charged enough, still unplugged
    for _ in range(200):
        if runs.calls:
            break
        await asyncio.sleep(0.01)
    assert runs.calls == [("a", "schedule")] and sched.deferred == {}


async def test_scheduled_fire_is_deferred_too(
        store: Store, runs: FakeRuns, power: Power, make_scheduler: MakeScheduler) -> None:
    await add_agent(store, "a", "* * * * *", last_run=NOW)
    sched = await make_scheduler()
    power.state = PowerState(on_battery=True, percent=10.0)
    job = sched._aps.get_job("a")
    assert await job.func(*job.args) is None
    assert sched.deferred["a"] == "deferred: on battery (10% < 30%)"
    assert runs.calls == []


async def test_battery_saver_defers(
        store: Store, runs: FakeRuns, power: Power, make_scheduler: MakeScheduler) -> None:
    power.state = PowerState(on_battery=True, percent=90.0, saver=True)
    await add_agent(store, "a", "0 * * * *")
    sched = await make_scheduler()
    assert runs.calls == []
    assert sched.deferred == {"a": "deferred: battery saver on"}
    power.state = PowerState(on_battery=False, percent=90.0)
    await sched.release_deferred()
    assert runs.calls == [("a", "schedule")]


@pytest.mark.parametrize(
    ("state", "kwargs"),
    [
        (PowerState(on_battery=False), {}),  # no battery (desktop, CI)
        (PowerState(on_battery=False, percent=5.0), {}),  # charging
        (PowerState(on_battery=True, percent=30.0), {}),  # at the threshold, not below
        (PowerState(on_battery=True, percent=None), {}),  # no reading: never blocks
        (PowerState(on_battery=True, percent=5.0), {"defer_on_battery": False}),
        (PowerState(on_battery=True, percent=5.0, saver=True), {"defer_on_battery": False}),
        (PowerState(on_battery=True, percent=15.0), {"battery_threshold": 10.0}),
    ],
)
async def test_runs_when_power_allows(
        store: Store, runs: FakeRuns, power: Power, make_scheduler: MakeScheduler,
        state: PowerState, kwargs: dict[str, Any]) -> None:
    power.state = state
    await add_agent(store, "a", "0 * * * *")
    sched = await make_scheduler(**kwargs)
    assert runs.calls == [("a", "catch_up")] and sched.deferred == {}


def test_psutil_without_a_battery_counts_as_ac(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    monkeypatch.setattr(psutil, "sensors_battery", lambda: None)
    assert PsutilPower().read() == PowerState(on_battery=False)

    battery = types.SimpleNamespace(percent=42, power_plugged=False, secsleft=100)
    monkeypatch.setattr(psutil, "sensors_battery", lambda: battery)
    assert PsutilPower().read() == PowerState(on_battery=True, percent=42.0)

    battery = types.SimpleNamespace(percent=42, power_plugged=None, secsleft=100)
    monkeypatch.setattr(psutil, "sensors_battery", lambda: battery)
    assert PsutilPower().read().on_battery is False  # unknown: never blocks

    def broken() -> None:
        raise RuntimeError("sensor failure")

    monkeypatch.setattr(psutil, "sensors_battery", broken)
    assert PsutilPower().read() == PowerState(on_battery=False)


async def test_deleting_a_deferred_agent_forgets_it(
        store: Store, runs: FakeRuns, power: Power, make_scheduler: MakeScheduler) -> None:
    power.state = PowerState(on_battery=True, percent=1.0)
    await add_agent(store, "a", "0 * * * *")
    sched = await make_scheduler()
    assert "a" in sched.deferred
    await store.agents.delete("a")
    await sched.sync("a")
    assert sched.deferred == {}
    power.state = PowerState(on_battery=False)
    await sched.release_deferred()
    assert runs.calls == []


# -- manual runs ----------------------------------------------------------------------------


async def test_manual_runs_are_not_the_schedulers_business(
        store: Store, runs: FakeRuns, power: Power, clock: Clock,
        make_scheduler: MakeScheduler) -> None:
    """Manual runs go straight to the Runner: never deferred, and they count as a run."""
    power.state = PowerState(on_battery=True, percent=3.0)
    await add_agent(store, "a", "0 * * * *", last_run=NOW)
    sched = await make_scheduler()
    assert sched.deferred == {} and runs.calls == []

    # a manual run (the Runner, not the scheduler) ends and sets last_run_at
    clock.now = NOW + timedelta(hours=3)
    await store.agents.set_last_run("a", iso(clock.now))
    assert await sched.catch_up("wake") == []  # just ran manually: not overdue
    assert sched.deferred == {} and runs.calls == [] and sched.fired == []

    # a scheduled slot arriving while a manual run is going on joins it
    power.state = PowerState(on_battery=False)
    runs.running["a"] = "r_manual"
    job = sched._aps.get_job("a")
    assert await job.func(*job.args) == "r_manual"
    assert sched.fired == []


# -- APScheduler really fires ---------------------------------------------------------------


async def test_every_minute_job_next_run_is_the_next_minute_boundary(
        store: Store, make_scheduler: MakeScheduler) -> None:
    await add_agent(store, "m", "* * * * *", last_run=NOW)
    before = datetime.now(UTC)
    sched = await make_scheduler()
    after = datetime.now(UTC)
    nxt = parse_iso(sched.next_run_at("m"))
    assert nxt is not None
    assert nxt in (next_minute(before), next_minute(after))
    assert nxt.astimezone(BERLIN).second == 0
    assert str(sched.next_run_at("m")).endswith("Z")


async def test_apscheduler_job_function_starts_a_scheduled_run(
        store: Store, runs: FakeRuns, make_scheduler: MakeScheduler) -> None:
    await add_agent(store, "m", "* * * * *", last_run=NOW)
    sched = await make_scheduler()
    job = sched._aps.get_job("m")
    assert job.func == sched.fire and job.args == ("m", "schedule")
    assert job.coalesce is True and job.max_instances == 1
    run_id = await job.func(*job.args)
    assert run_id == "r_1" and runs.calls == [("m", "schedule")]
    assert sched.fired == [("m", "schedule")]


async def test_apscheduler_fires_through_its_executor(
        store: Store, runs: FakeRuns, make_scheduler: MakeScheduler) -> None:
    """Make the job due now and wake APScheduler: its own machinery runs Scheduler.fire."""
    await add_agent(store, "m", "* * * * *", last_run=NOW)
    sched = await make_scheduler()
    sched._aps.modify_job("m", next_run_time=datetime.now(UTC))
    sched._aps.wakeup()
    for _ in range(300):
        if runs.calls:
            break
        await asyncio.sleep(0.01)
    assert runs.calls == [("m", "schedule")]
    nxt = parse_iso(sched.next_run_at("m"))  # rescheduled on the following minute
    assert nxt is not None and nxt.second == 0 and nxt > datetime.now(UTC)


@pytest.mark.parametrize(
    ("cron", "now", "expected"),
    [
        # crontab weekdays (APScheduler 3's from_crontab read 1-5 as Tuesday..Saturday)
        ("0 9 * * 1-5", datetime(2025, 6, 6, 10, 0, tzinfo=BERLIN),
         datetime(2025, 6, 9, 9, 0, tzinfo=BERLIN)),
        ("0 9 * * 0", datetime(2025, 6, 6, 10, 0, tzinfo=BERLIN),
         datetime(2025, 6, 8, 9, 0, tzinfo=BERLIN)),
        # fall back: the repeated 02:30 fires once, at its first pass
        ("30 2 * * *", datetime(2025, 10, 26, 2, 40, tzinfo=BERLIN),
         datetime(2025, 10, 27, 2, 30, tzinfo=BERLIN)),
        # spring forward: the skipped 02:30 fires once, at 03:00
        ("30 2 * * *", datetime(2025, 3, 29, 12, 0, tzinfo=BERLIN),
         datetime(2025, 3, 30, 3, 0, tzinfo=BERLIN)),
    ],
)
def test_trigger_uses_crontab_semantics(cron: str, now: datetime, expected: datetime) -> None:
    trigger = CronTrigger(cron, BERLIN)
    nxt = trigger.get_next_fire_time(None, now)
    assert nxt is not None and nxt == expected.astimezone(UTC)


def test_trigger_after_a_long_gap_returns_a_recent_slot_quickly() -> None:
    trigger = CronTrigger("* * * * *", BERLIN)
    now = datetime(2025, 6, 4, 12, 0, 30, tzinfo=UTC)
    t0 = time.perf_counter()
    nxt = trigger.get_next_fire_time(now - timedelta(days=30), now)
    assert time.perf_counter() - t0 < 1.0
    assert nxt is not None and now - timedelta(hours=1) < nxt <= now


# -- wake-up ---------------------------------------------------------------------------------


class FakeTime:
    """Stands in for the ``time`` module inside sidecar.scheduler: the wall clock can jump."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


async def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


async def test_wall_clock_jump_triggers_catch_up(
        store: Store, runs: FakeRuns, clock: Clock, make_scheduler: MakeScheduler,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTime()
    monkeypatch.setattr(scheduler_mod, "time", fake)
    await add_agent(store, "a", "0 * * * *", last_run=NOW.replace(minute=5))
    sched = await make_scheduler(tick_seconds=0.01)
    whys: list[str] = []
    real_catch_up = sched.catch_up

    async def spy(why: str) -> list[str]:
        whys.append(why)
        return await real_catch_up(why)

    sched.catch_up = spy  # type: ignore[method-assign]
    wakeups: list[bool] = []
    real_wakeup = sched._aps.wakeup
    monkeypatch.setattr(sched._aps, "wakeup", lambda: (wakeups.append(True), real_wakeup()))

    fake.offset += 30  # NTP-sized step: not a sleep
    await asyncio.sleep(0.1)
    assert whys == [] and runs.calls == []

    clock.now = NOW + timedelta(hours=4)  # the laptop slept four hours
    fake.offset += 4 * 3600
    assert await wait_for(lambda: bool(runs.calls))
    assert whys == ["wake"] and wakeups == [True]
    assert runs.calls == [("a", "catch_up")]  # once, not once per missed slot

    await asyncio.sleep(0.1)  # no further jump: no further catch-up
    assert whys == ["wake"] and len(runs.calls) == 1


async def test_wake_watch_survives_a_failing_catch_up(
        store: Store, runs: FakeRuns, make_scheduler: MakeScheduler,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTime()
    monkeypatch.setattr(scheduler_mod, "time", fake)
    sched = await make_scheduler(tick_seconds=0.01)
    calls: list[str] = []

    async def flaky(why: str) -> list[str]:
        calls.append(why)
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return []

    sched.catch_up = flaky  # type: ignore[method-assign]
    fake.offset += 3600
    assert await wait_for(lambda: len(calls) == 1)
    fake.offset += 3600
    assert await wait_for(lambda: len(calls) == 2)
    assert all(not t.done() for t in sched._tasks)


async def test_catch_up_wake_directly_with_a_deferred_and_an_invalid_agent(
        store: Store, runs: FakeRuns, power: Power, clock: Clock,
        make_scheduler: MakeScheduler) -> None:
    await add_agent(store, "a", "*/15 * * * *", last_run=NOW)
    await insert_raw_agent(store, "bad", "61 * * * *")
    sched = await make_scheduler()
    assert runs.calls == []
    clock.now = NOW + timedelta(hours=8)
    power.state = PowerState(on_battery=True, percent=12.0)
    assert await sched.catch_up("wake") == []
    assert sched.deferred == {"a": "deferred: on battery (12% < 30%)"}
    power.state = PowerState(on_battery=False)
    await sched.release_deferred()
    assert runs.calls == [("a", "schedule")]
    assert "bad" in sched.invalid and sched.deferred == {}


# -- the real daemon ------------------------------------------------------------------------


async def test_daemon_status_next_run_and_run_now_while_running(
        data_dir: Path, token: str, model_dir: Path, default_model: Path,
        tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(4):
        (folder / f"meeting-{i}.md").write_text(
            f"# Weekly sync {i}\n\n## Action items\n- [ ] Priya to send the report {i} by "
            "Friday\n- [ ] Luis: book the venue for the offsite\n")
    d = await DaemonProcess.start(data_dir, token=token, extra_args=[
        "--model-dir", str(model_dir)])
    c: SidecarClient | None = None
    try:
        c = await d.connect()
        await c.hello()
        created = await c.request({"type": "agent_upsert", "agent": {
            "kind": "local", "name": "Notes", "directories": [str(folder)],
            "extensions": [".md"], "engine": "local", "schedule_cron": "*/15 * * * *",
            "watch": False}})
        assert created["type"] == "agent_upsert_result", created
        agent_id = created["agent"]["id"]

        status = await c.request({"type": "status"})
        line = next(a for a in status["agents"] if a["id"] == agent_id)
        assert line["deferred"] is None and line["schedule_error"] is None
        nxt = parse_iso(line["next_run_at"])
        assert nxt is not None and line["next_run_at"].endswith("Z")
        real_now = datetime.now(UTC)
        assert real_now < nxt <= real_now + timedelta(minutes=15)
        assert nxt.minute % 15 == 0 and nxt.second == 0 and nxt.microsecond == 0
        assert line["running_run_id"] is None and line["last_run_at"] is None

        first, second = await asyncio.gather(
            c.request({"type": "run_agent", "agent_id": agent_id}),
            c.request({"type": "run_agent", "agent_id": agent_id}))
        assert first["type"] == second["type"] == "run_agent_result", (first, second)
        assert first["run_id"] == second["run_id"]
        assert sorted([first["already_running"], second["already_running"]]) == [False, True]
        run_id = first["run_id"]


        loop = asyncio.get_running_loop()
        deadline = loop.time() + 180
        finished: dict[str, Any] | None = None
        while finished is None:
            frame = await c.next_push(None, timeout=max(0.1, deadline - loop.time()))
            if frame["type"] == "tool_call":
                await c.ack(frame, result={"id": frame["id"]})
            elif frame["type"] == "run_finished" and frame["run"]["id"] == run_id:
                finished = frame["run"]
        assert finished["trigger"] == "manual"
        assert finished["status"] in ("success", "partial"), finished

        after = await c.request({"type": "status"})
        line = next(a for a in after["agents"] if a["id"] == agent_id)
        assert line["last_run_at"] is not None and line["running_run_id"] is None
        assert parse_iso(line["next_run_at"]) is not None and line["deferred"] is None
        runs_list = await c.request({"type": "run_list", "agent_id": agent_id, "limit": 10})
        assert [r["id"] for r in runs_list["runs"]] == [run_id]  # no scheduled run slipped in
    finally:
        if c is not None:
            await c.close()
        await d.stop()


async def test_an_agent_that_needs_a_reconnect_is_not_run_on_schedule(tmp_path: Path) -> None:
    """Its runs would all fail the same way; Electron was told once; manual runs still go."""
    async with Store(tmp_path / "s.db") as store:
        agent = validate_agent({"kind": "cloud", "provider": "gmail", "name": "Inbox",
                                "account": "me@example.com", "schedule_cron": "0 * * * *"})
        await store.agents.upsert(agent)
        started: list[str] = []

        async def start_run(agent_id: str, trigger: str) -> tuple[str, bool]:
            started.append(agent_id)
            return "r1", False

        sched = Scheduler(store, start_run, tz=ZoneInfo("UTC"))
        await store.agents.set_state(agent.id, "needs_reauth")
        assert await sched.fire(agent.id, "schedule") is None and started == []
        assert "reconnected" in sched.skipped[agent.id]
        await store.agents.set_state(agent.id, "ok")
        assert await sched.fire(agent.id, "schedule") == "r1" and started == [agent.id]
        assert agent.id not in sched.skipped


async def test_status_next_run_comes_from_the_job_and_none_for_an_invalid_cron(
        store: Store, make_scheduler: MakeScheduler) -> None:
    """Status shows the job's next slot; an invalid cron shows none and why; with no job
    (the scheduler not started) there is no next run either, and status says so instead of
    showing cron math for an agent that will never run."""
    # Wednesday 14:20 in Berlin, last run 14:00: "30 * * * *" is due at 14:30 (by hand)
    await add_agent(store, "h", "30 * * * *", last_run=NOW.replace(minute=0))
    await insert_raw_agent(store, "bad", "61 * * * *")
    unstarted = await make_scheduler(start=False)
    assert unstarted.next_run_at("h") is None
    nxt, why = unstarted.upcoming("h")
    assert nxt is None and why is not None and "not scheduled" in why
    sched = await make_scheduler()
    job = sched._aps.get_job("h")
    assert job is not None and job.misfire_grace_time == scheduler_mod.MISFIRE_GRACE_SECONDS
    assert job.misfire_grace_time == 30 and job.coalesce is True
    real_next = parse_iso(sched.next_run_at("h"))
    assert real_next is not None and real_next.astimezone(BERLIN).minute == 30
    assert sched.upcoming("h") == (iso(real_next), None)
    nxt, why = sched.upcoming("bad")
    assert nxt is None and why is not None and "61 * * * *" in why
    assert "bad" in sched.invalid and sched._aps.get_job("bad") is None
    await sched.sync("h")  # re-sync replaces the job instead of failing on a duplicate id
    assert [j.id for j in sched._aps.get_jobs()] == ["h"]
