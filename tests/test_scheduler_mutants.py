"""Scheduler, edge by edge (issue 19): what is forgotten when an agent changes, concurrent
syncs, the wake-up threshold, fire times across a fall-back hour in any local zone, and the
defaults. Expected times are written by hand from a calendar."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import sidecar.scheduler as scheduler_mod
from sidecar.clock import iso, parse_iso
from sidecar.domain import validate_agent
from sidecar.power import PowerState
from sidecar.scheduler import CronTrigger, Scheduler
from sidecar.store import Store

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2025, 6, 4, 14, 20, tzinfo=BERLIN)


class Power:
    def __init__(self) -> None:
        self.state = PowerState(on_battery=False)
        self.reads = 0

    def read(self) -> PowerState:
        self.reads += 1
        return self.state


class Runs:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def start(self, agent_id: str, trigger: str) -> tuple[str, bool]:
        self.calls.append((agent_id, trigger))
        return f"r_{len(self.calls)}", False


class SteppedTime:
    """The ``time`` module inside sidecar.scheduler: each read moves the clocks by a set step."""

    def __init__(self, wall_step: float, mono_step: float) -> None:
        self.wall, self.mono = 1_000_000.0, 1_000.0
        self.wall_step, self.mono_step = wall_step, mono_step

    def time(self) -> float:
        self.wall += self.wall_step
        return self.wall

    def monotonic(self) -> float:
        self.mono += self.mono_step
        return self.mono


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store(tmp_path / "sidecar.db").open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def sched(store: Store) -> AsyncIterator[tuple[Scheduler, Runs, Power]]:
    runs, power = Runs(), Power()
    s = Scheduler(store, runs.start, tz=BERLIN, power=power, now=lambda: NOW,
                  tick_seconds=3600.0, power_poll_seconds=3600.0)
    await s.start()
    try:
        yield s, runs, power
    finally:
        await s.stop()


async def add_agent(store: Store, agent_id: str, cron: str, *, enabled: bool = True,
                    last_run: datetime | None = NOW) -> None:
    await store.agents.upsert(validate_agent({
        "id": agent_id, "kind": "cloud", "provider": "gmail", "name": agent_id,
        "schedule_cron": cron, "enabled": enabled}))
    if last_run is not None:
        await store.agents.set_last_run(agent_id, iso(last_run))


async def break_cron(store: Store, agent_id: str, cron: str) -> None:
    """What an old database may hold: a cron validate_agent would refuse."""
    await store.db.execute("UPDATE agents SET config = json_set(config, '$.schedule_cron', ?) "
                           "WHERE id = ?", (cron, agent_id))


# -- what sync forgets ---------------------------------------------------------------------

async def test_a_fixed_cron_is_no_longer_reported_invalid(
        store: Store, sched: tuple[Scheduler, Runs, Power]) -> None:
    s, _, _ = sched
    await add_agent(store, "a", "0 * * * *")
    await break_cron(store, "a", "61 * * * *")
    await s.sync("a")
    nxt, why = s.upcoming("a")
    assert nxt is None and why is not None
    assert why.startswith("invalid schedule '61 * * * *': ")
    await add_agent(store, "a", "0 * * * *")
    await s.sync("a")
    assert "a" not in s.invalid
    nxt, why = s.upcoming("a")
    assert why is None and nxt is not None
    assert parse_iso(nxt).minute == 0  # type: ignore[union-attr]


async def test_disabling_a_deferred_agent_forgets_its_deferral(
        store: Store, sched: tuple[Scheduler, Runs, Power]) -> None:
    s, runs, power = sched
    await add_agent(store, "a", "0 * * * *")
    await add_agent(store, "b", "0 * * * *")
    await s.sync("a")
    await s.sync("b")
    power.state = PowerState(on_battery=True, percent=5.0)
    assert await s.fire("a", "schedule") is None
    assert await s.fire("b", "schedule") is None
    assert s.deferred == {"a": "deferred: on battery (5% < 30%)",
                          "b": "deferred: on battery (5% < 30%)"}
    await add_agent(store, "a", "0 * * * *", enabled=False)
    await s.sync("a")
    assert s.deferred == {"b": "deferred: on battery (5% < 30%)"}
    await break_cron(store, "b", "not cron")
    await s.sync("b")
    assert s.deferred == {}
    power.state = PowerState(on_battery=False)
    await s.release_deferred()
    assert runs.calls == []


async def test_two_syncs_of_one_agent_at_once_leave_one_job(
        store: Store, sched: tuple[Scheduler, Runs, Power]) -> None:
    s, _, _ = sched
    await add_agent(store, "a", "*/5 * * * *")
    await asyncio.gather(s.sync("a"), s.sync("a"), s.sync("a"))
    assert [j.id for j in s._aps.get_jobs()] == ["a"]


async def test_after_stop_sync_and_next_run_do_nothing(
        store: Store, sched: tuple[Scheduler, Runs, Power]) -> None:
    s, _, _ = sched
    await add_agent(store, "a", "*/5 * * * *")
    await s.sync("a")
    assert s.next_run_at("a") is not None
    await s.stop()
    await s.sync("a")
    assert s.next_run_at("a") is None
    assert s.upcoming("a") == (
        None, "not scheduled: the scheduler has no job for this agent (see the log)")
    await s.stop()  # twice: still fine


async def test_an_agent_needing_a_reconnect_is_skipped_with_a_reason(
        store: Store, sched: tuple[Scheduler, Runs, Power]) -> None:
    s, runs, _ = sched
    await add_agent(store, "a", "0 * * * *")
    await store.agents.set_state("a", "needs_reauth")
    assert await s.fire("a", "schedule") is None
    assert s.skipped == {"a": "skipped: the account needs to be reconnected"}
    await store.agents.set_state("a", "idle")
    assert await s.fire("a", "schedule") == "r_1"
    assert s.skipped == {} and runs.calls == [("a", "schedule")]


async def test_release_keeps_waiting_while_still_on_low_battery(
        store: Store, sched: tuple[Scheduler, Runs, Power]) -> None:
    s, runs, power = sched
    await add_agent(store, "a", "0 * * * *")
    power.state = PowerState(on_battery=True, percent=10.0)
    assert await s.fire("a", "schedule") is None
    await s.release_deferred()
    assert runs.calls == [] and list(s.deferred) == ["a"]
    power.state = PowerState(on_battery=True, percent=30.0)  # at the threshold: goes
    await s.release_deferred()
    assert runs.calls == [("a", "schedule")] and s.deferred == {}


# -- defaults ------------------------------------------------------------------------------

async def test_defaults(store: Store) -> None:
    runs = Runs()
    s = Scheduler(store, runs.start, tz=BERLIN, power=Power())
    assert (s.battery_threshold, s.tick_seconds, s.power_poll_seconds) == (30.0, 15.0, 60.0)
    assert s.defer_on_battery is True
    before = datetime.now(UTC)
    now = s.now()
    assert now.tzinfo is BERLIN
    assert before <= now <= datetime.now(UTC)


async def test_the_background_tasks_are_named_for_a_task_dump(
        sched: tuple[Scheduler, Runs, Power]) -> None:
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert {"scheduler-wake", "scheduler-power"} <= names


# -- the wake-up threshold -------------------------------------------------------------------

@pytest.mark.parametrize(("wall_step", "mono_step", "woke"), [
    (40.0, 40.0, False),   # both clocks moved together: no sleep
    (60.0, 0.0, False),    # exactly the threshold: not a sleep
    (61.0, 0.0, True),
])
async def test_wake_watch_threshold(store: Store, monkeypatch: pytest.MonkeyPatch,
                                    wall_step: float, mono_step: float, woke: bool) -> None:
    stepped = SteppedTime(wall_step, mono_step)
    monkeypatch.setattr(scheduler_mod, "time", stepped)
    runs = Runs()
    s = Scheduler(store, runs.start, tz=BERLIN, power=Power(), now=lambda: NOW,
                  tick_seconds=0.005, power_poll_seconds=3600.0)
    whys: list[str] = []

    async def spy(why: str) -> list[str]:
        whys.append(why)
        return []

    s.catch_up = spy  # type: ignore[method-assign]
    task = asyncio.create_task(s._wake_watch())
    try:
        for _ in range(40):  # 40 ticks at least: enough for a wake-up to show
            await asyncio.sleep(0.005)
        if woke:
            for _ in range(500):
                if whys:
                    break
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert bool(whys) is woke
    assert set(whys) <= {"wake"}


# -- fire times, whatever the machine's zone ----------------------------------------------

@pytest.fixture
def local_berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_fire_times_are_utc_even_when_the_machine_is_not(local_berlin: None) -> None:
    trig = CronTrigger("0 9 * * *", BERLIN)
    got = trig.get_next_fire_time(None, datetime(2025, 6, 4, 12, 0, tzinfo=UTC))
    assert got == datetime(2025, 6, 5, 7, 0, tzinfo=UTC)
    assert got is not None and got.tzinfo is UTC


def test_a_long_gap_across_the_fall_back_hour_is_measured_in_real_time(
        local_berlin: None) -> None:
    """Berlin, 2025-10-26: 02:05 CEST (00:05 UTC) to 02:10 CET (01:10 UTC) is 65 minutes,
    though the wall clock moved five: the next slot is the minute after now - 1 h."""
    trig = CronTrigger("* * * * *", BERLIN)
    got = trig.get_next_fire_time(datetime(2025, 10, 26, 0, 5, tzinfo=UTC),
                                  datetime(2025, 10, 26, 1, 10, tzinfo=UTC))
    assert got == datetime(2025, 10, 26, 0, 11, tzinfo=UTC)


def test_a_cron_that_never_fires_has_no_next_time() -> None:
    trig = CronTrigger("0 0 30 2 *", BERLIN)
    assert trig.get_next_fire_time(None, datetime(2025, 1, 1, tzinfo=UTC)) is None


def test_a_recent_previous_fire_time_is_kept() -> None:
    trig = CronTrigger("*/10 * * * *", UTC)
    got = trig.get_next_fire_time(datetime(2025, 1, 1, 11, 0, tzinfo=UTC),
                                  datetime(2025, 1, 1, 11, 59, tzinfo=UTC))
    assert got == datetime(2025, 1, 1, 11, 10, tzinfo=UTC)
    assert trig.get_next_fire_time(datetime(2025, 1, 1, 10, 0, tzinfo=UTC),
                                   datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC)
                                   ) == datetime(2025, 1, 1, 11, 10, tzinfo=UTC)


# -- what the log says (the only trace of a deferral, a failed start or a wake-up) ---------

def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name == "sidecar.scheduler"]


async def test_the_log_says_why_a_schedule_is_ignored_deferred_or_failed(
        store: Store, sched: tuple[Scheduler, Runs, Power],
        caplog: pytest.LogCaptureFixture) -> None:
    s, runs, power = sched
    caplog.set_level(logging.INFO, logger="sidecar.scheduler")
    await add_agent(store, "a", "0 * * * *")
    await break_cron(store, "a", "61 * * * *")
    await s.sync("a")
    assert messages(caplog) == [("WARNING", f"agent a: {s.invalid['a']}; it will not run on "
                                            "a schedule")]
    assert s.invalid["a"].startswith("invalid schedule '61 * * * *': ")
    caplog.clear()

    await add_agent(store, "b", "0 * * * *")
    power.state = PowerState(on_battery=True, percent=5.0)
    await s.fire("b", "schedule")
    assert messages(caplog) == [("INFO", "agent b: scheduled run deferred: on battery "
                                         "(5% < 30%)")]
    await s.fire("b", "schedule")  # still deferred: said once
    assert len(messages(caplog)) == 1
    caplog.clear()

    power.state = PowerState(on_battery=False)

    async def broken(agent_id: str, trigger: str) -> tuple[str, bool]:
        raise RuntimeError("database is locked")

    s.start_run = broken
    assert await s.fire("b", "catch_up") is None
    assert messages(caplog) == [("ERROR", "agent b: could not start a catch_up run")]
    assert caplog.records[-1].exc_info is not None
    assert runs.calls == []


async def test_the_log_says_which_agent_is_caught_up_and_why(
        store: Store, sched: tuple[Scheduler, Runs, Power],
        caplog: pytest.LogCaptureFixture) -> None:
    s, runs, _ = sched
    caplog.set_level(logging.INFO, logger="sidecar.scheduler")
    await add_agent(store, "a", "0 * * * *", last_run=NOW.replace(hour=10))
    assert await s.catch_up("wake") == ["r_1"]
    assert messages(caplog) == [("INFO", "agent a is overdue (wake); catching up once")]
    assert runs.calls == [("a", "catch_up")]


async def test_the_log_says_the_clock_jumped_and_a_failed_catch_up(
        store: Store, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.scheduler")
    monkeypatch.setattr(scheduler_mod, "time", SteppedTime(90.0, 0.0))
    s = Scheduler(store, Runs().start, tz=BERLIN, power=Power(), now=lambda: NOW,
                  tick_seconds=0.005, power_poll_seconds=3600.0)

    async def failing(why: str) -> list[str]:
        raise RuntimeError("database is locked")

    s.catch_up = failing  # type: ignore[method-assign]
    task = asyncio.create_task(s._wake_watch())
    try:
        for _ in range(500):  # a generous bound against a hang, not a speed limit
            if len(messages(caplog)) >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    said = messages(caplog)
    assert said[:2] == [("INFO", "clock jumped 90 s: woke from sleep"),
                        ("ERROR", "catch-up after wake-up failed")]


async def test_the_log_says_releasing_deferred_runs_failed(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.scheduler")
    s = Scheduler(store, Runs().start, tz=BERLIN, power=Power(), now=lambda: NOW,
                  tick_seconds=3600.0, power_poll_seconds=0.005)
    released = asyncio.Event()

    async def failing() -> None:
        released.set()
        raise RuntimeError("database is locked")

    s.release_deferred = failing  # type: ignore[method-assign]
    s._deferred_event.set()
    task = asyncio.create_task(s._power_watch())
    try:
        await asyncio.wait_for(released.wait(), 5)
        await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert ("ERROR", "releasing deferred runs failed") in messages(caplog)
