"""Cron schedules inside the sidecar: one APScheduler job per agent, catch-up once, laptop-aware.

APScheduler fires the regular slots (in the user's IANA zone, DST-correct). What it misses
while the daemon was stopped or the laptop slept is handled by the seed's overdue rule in
:meth:`Scheduler.catch_up`, run at start-up and whenever the wall clock jumps ahead of the
monotonic clock (a wake-up): an overdue agent runs once, not once per missed slot.
Scheduled runs wait while the laptop is on low battery; they go when power returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from sidecar.clock import iso, parse_iso
from sidecar.power import PowerSource, PsutilPower, deferral_reason
from sidecar.schedule import cron_error, is_overdue, local_tz, next_run
from sidecar.store import Store

log = logging.getLogger(__name__)

StartRun = Callable[[str, str], Awaitable[tuple[str, bool]]]

#: A wall-clock jump beyond the monotonic clock larger than this means the machine slept.
WAKE_JUMP_SECONDS = 60.0
#: Slots older than this are never enumerated one by one (they are misfires anyway).
_MISSED_WINDOW = timedelta(hours=1)
#: Seconds late a slot may still fire; older ones are the catch-up's business.
MISFIRE_GRACE_SECONDS = 30


class CronTrigger(BaseTrigger):
    """Fires the slots of :func:`sidecar.schedule.next_run`, the ones the overdue rule sees."""

    # APScheduler 3's own CronTrigger.from_crontab reads day-of-week 0 as Monday (so "1-5"
    # ran Tuesday-Saturday), ANDs day-of-month with day-of-week, and fires a repeated
    # fall-back wall time twice; croniter via next_run has crontab's meaning.

    __slots__ = ("cron", "tz")

    def __init__(self, cron: str, tz: tzinfo) -> None:
        self.cron = cron
        self.tz = tz

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        # UTC throughout: same-zone aware datetimes compare and subtract by wall time, so a
        # zoned fire time would be mis-ordered inside a repeated fall-back hour.
        now = now.astimezone(UTC)
        base = (previous_fire_time or now).astimezone(UTC)
        if now - base > _MISSED_WINDOW:  # after a long sleep: skip straight to the recent slots
            base = now - _MISSED_WINDOW
        nxt = next_run(base, self.cron, self.tz)
        return nxt.astimezone(UTC) if nxt is not None else None

    def __str__(self) -> str:
        return f"cron[{self.cron!r}, {self.tz}]"

    def __repr__(self) -> str:
        return f"<CronTrigger {self.cron!r} tz={self.tz}>"


class Scheduler:
    """Keeps APScheduler's jobs in step with the agents table and fires runs."""

    def __init__(self, store: Store, start_run: StartRun, *, tz: tzinfo | None = None,
                 power: PowerSource | None = None, defer_on_battery: bool = True,
                 battery_threshold: float = 30.0, now: Callable[[], datetime] | None = None,
                 tick_seconds: float = 15.0, power_poll_seconds: float = 60.0) -> None:
        self.store = store
        self.start_run = start_run
        self.tz = tz or local_tz()
        self.power = power or PsutilPower()
        self.defer_on_battery = defer_on_battery
        self.battery_threshold = battery_threshold
        self.now = now or (lambda: datetime.now(self.tz))
        self.tick_seconds = tick_seconds
        self.power_poll_seconds = power_poll_seconds
        self.deferred: dict[str, str] = {}  # agent id → reason
        self.skipped: dict[str, str] = {}  # agent id → why its schedule is on hold
        self.invalid: dict[str, str] = {}  # agent id → why its cron is never fired
        self.fired: list[tuple[str, str]] = []  # (agent id, trigger), for status and tests
        self._aps: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._deferred_event = asyncio.Event()

    async def start(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._aps = AsyncIOScheduler(timezone=self.tz)
        self._aps.start()
        for record in await self.store.agents.records():
            await self.sync(record["id"])
        self._tasks = [asyncio.create_task(self._wake_watch(), name="scheduler-wake"),
                       asyncio.create_task(self._power_watch(), name="scheduler-power")]
        await self.catch_up("startup")

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None

    async def sync(self, agent_id: str) -> None:
        """Reschedule one agent after it was created, changed or deleted."""
        from apscheduler.jobstores.base import JobLookupError

        if self._aps is None:
            return
        with contextlib.suppress(JobLookupError):
            self._aps.remove_job(agent_id)
        self.invalid.pop(agent_id, None)
        record = await self.store.agents.record(agent_id)
        if record is None:
            self.deferred.pop(agent_id, None)
            return
        if not record.get("enabled"):
            self.deferred.pop(agent_id, None)
            return
        cron = record.get("schedule_cron")
        problem = cron_error(cron)
        if problem is not None:
            self.invalid[agent_id] = f"invalid schedule {cron!r}: {problem}"
            self.deferred.pop(agent_id, None)
            log.warning("agent %s: %s; it will not run on a schedule", agent_id,
                        self.invalid[agent_id])
            return
        self._aps.add_job(self.fire, CronTrigger(cron, self.tz),
                          args=[agent_id, "schedule"], id=agent_id, coalesce=True,
                          max_instances=1, misfire_grace_time=MISFIRE_GRACE_SECONDS,
                          replace_existing=True)

    def next_run_at(self, agent_id: str) -> str | None:
        if self._aps is None:
            return None
        job = self._aps.get_job(agent_id)
        return iso(job.next_run_time) if job is not None and job.next_run_time else None

    async def fire(self, agent_id: str, trigger: str) -> str | None:
        """A scheduled or catch-up run: waits (deferred) on low battery; returns the run id.

        An agent whose account needs a reconnect is not run on schedule: every run would fail
        the same way. Electron was told once (``agent_needs_reauth``); a manual run still goes.
        """
        record = await self.store.agents.record(agent_id)
        if record is not None and record.get("state") == "needs_reauth":
            self.skipped[agent_id] = "skipped: the account needs to be reconnected"
            return None
        self.skipped.pop(agent_id, None)
        reason = deferral_reason(self.power.read(), enabled=self.defer_on_battery,
                                 threshold=self.battery_threshold)
        if reason is not None:
            if agent_id not in self.deferred:
                log.info("agent %s: scheduled run %s", agent_id, reason)
            self.deferred[agent_id] = reason
            self._deferred_event.set()
            return None
        self.deferred.pop(agent_id, None)
        try:
            run_id, already = await self.start_run(agent_id, trigger)
        except Exception:
            log.exception("agent %s: could not start a %s run", agent_id, trigger)
            return None
        if not already:
            self.fired.append((agent_id, trigger))
        return run_id

    async def catch_up(self, why: str) -> list[str]:
        """Run every enabled agent whose next slot after its last run has passed, once."""
        started = []
        now = self.now()
        for record in await self.store.agents.records():
            if not record.get("enabled") or record["id"] in self.invalid:
                continue
            last = parse_iso(record.get("last_run_at"))
            if is_overdue(record["schedule_cron"], last, now, self.tz):
                log.info("agent %s is overdue (%s); catching up once", record["id"], why)
                run_id = await self.fire(record["id"], "catch_up")
                if run_id:
                    started.append(run_id)
        return started

    def status(self, agent_id: str, *, enabled: bool) -> dict[str, Any]:
        """The agent's schedule as ``status`` shows it: next run (or why none), whether a job
        exists, and why its runs are held (low battery, an invalid schedule)."""
        nxt, why = self.upcoming(agent_id) if enabled else (None, None)
        return {"next_run_at": nxt, "schedule_error": why,
                "deferred": self.deferred.get(agent_id) or self.skipped.get(agent_id),
                # a job really exists: next_run_at alone is cron math and would not tell
                "scheduled": self.next_run_at(agent_id) is not None}

    def upcoming(self, agent_id: str) -> tuple[str | None, str | None]:
        """(next run, why there is none) for status: only the job's own next slot counts.

        Cron math would show a plausible time for an agent that will never run (no job: the
        scheduler is down or the agent was never synced); the CLI, with no daemon, does that
        math itself (``schedule.upcoming``)."""
        if agent_id in self.invalid:
            return None, self.invalid[agent_id]
        scheduled = self.next_run_at(agent_id)
        if scheduled:
            return scheduled, None
        return None, "not scheduled: the scheduler has no job for this agent (see the log)"

    async def _wake_watch(self) -> None:
        """A wall-clock jump larger than the monotonic one: the laptop slept; catch up."""
        wall, mono = time.time(), time.monotonic()
        while True:
            await asyncio.sleep(self.tick_seconds)
            new_wall, new_mono = time.time(), time.monotonic()
            jump = (new_wall - wall) - (new_mono - mono)
            wall, mono = new_wall, new_mono
            if jump > WAKE_JUMP_SECONDS:
                log.info("clock jumped %.0f s: woke from sleep", jump)
                await self._woke()

    async def _woke(self) -> None:
        """After sleep: re-arm APScheduler's timer (it counts monotonic time) and catch up."""
        try:
            if self._aps is not None:
                # asyncio's call_later ignores the time asleep: without this the next slot
                # fires that much late, and a daily slot passed in the meantime is lost.
                self._aps.wakeup()
            await self.catch_up("wake")
        except Exception:  # the watcher must survive a failing catch-up
            log.exception("catch-up after wake-up failed")

    async def _power_watch(self) -> None:
        """While runs are deferred, poll the power state and release them when it allows."""
        while True:
            await self._deferred_event.wait()
            await asyncio.sleep(self.power_poll_seconds)
            try:
                await self.release_deferred()
            except Exception:  # the watcher must survive a failing release
                log.exception("releasing deferred runs failed")

    async def release_deferred(self) -> None:
        if not self.deferred:
            self._deferred_event.clear()
            return
        if deferral_reason(self.power.read(), enabled=self.defer_on_battery,
                           threshold=self.battery_threshold) is not None:
            return
        for agent_id in list(self.deferred):
            await self.fire(agent_id, "schedule")
        if not self.deferred:
            self._deferred_event.clear()
