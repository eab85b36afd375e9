"""Pure schedule math: when an agent runs next and whether it is overdue (the seed's rule)."""

# DST, evaluated in the user's IANA zone:
# * spring forward: a slot whose wall time does not exist that day (02:30 in the skipped
#   hour) runs once, at the first instant after the gap (croniter moves it to 03:00);
# * fall back: a slot at a fixed hour whose wall time happens twice (01:30 in New York,
#   02:30 in Berlin) runs once, at the first occurrence; croniter (and APScheduler's
#   CronTrigger) return both, so the second is skipped here. Jobs that run every hour
#   (hour field "*") keep running through the repeated hour: their interval is real time.

from __future__ import annotations

import logging
from datetime import UTC, datetime, tzinfo

log = logging.getLogger(__name__)

#: Upper bound on repeated-hour slots skipped in a row (``* 1 * * *`` has 60 of them).
_MAX_SKIPS = 24 * 60


def local_tz() -> tzinfo:
    """The user's IANA zone (DST-aware; cron is evaluated in it, as a user reads it).

    ``TZ`` wins (tests, users who set it); a fixed offset is the last resort.
    """
    try:
        import tzlocal

        return tzlocal.get_localzone()
    except Exception:  # no zone information at all
        tz = datetime.now().astimezone().tzinfo
        assert tz is not None
        return tz


def cron_error(cron: str) -> str | None:
    """Why ``cron`` cannot be scheduled, or ``None``: five crontab fields (or an @macro) only."""
    from croniter import croniter

    if not isinstance(cron, str) or not cron.strip():
        return "empty expression"
    fields = cron.split()
    if not (len(fields) == 5 or (len(fields) == 1 and fields[0].startswith("@"))):
        return (f"expected five fields (minute hour day-of-month month day-of-week), "
                f"got {len(fields)}")
    try:
        croniter(cron)
    except Exception as exc:  # croniter raises several types for bad input
        return str(exc) or type(exc).__name__
    return None


def _repeated_wall_time(dt: datetime) -> bool:
    """True when ``dt`` is the second occurrence of a wall time repeated by a fall-back."""
    first = dt.replace(tzinfo=None).replace(tzinfo=dt.tzinfo, fold=0)
    return (first.utcoffset() != dt.utcoffset()
            and first.astimezone(UTC) < dt.astimezone(UTC))


def next_run(prev: datetime, cron: str, tz: tzinfo | None = None) -> datetime | None:
    """First fire time strictly after ``prev`` (aware), in ``tz``; ``None`` for a bad expression."""
    from croniter import croniter

    if prev.tzinfo is None:
        raise ValueError("prev must be timezone-aware")
    problem = cron_error(cron)
    if problem is not None:
        log.warning("cannot evaluate cron %r: %s", cron, problem)
        return None
    zone = tz or local_tz()
    try:
        it = croniter(cron, prev.astimezone(zone))
        hours = it.expanded[1]
        every_hour = hours == ["*"] or len(hours) == 24
        for _ in range(_MAX_SKIPS):
            nxt: datetime = it.get_next(datetime)
            if every_hour or not _repeated_wall_time(nxt):
                return nxt
    except Exception as exc:  # croniter raises several types for bad input
        log.warning("cannot evaluate cron %r: %s", cron, exc)
    return None


def is_overdue(cron: str, last_run_at: datetime | None, now: datetime,
               tz: tzinfo | None = None) -> bool:
    """The seed's rule: never run → overdue; else overdue once the next slot has passed.

    An invalid expression is never overdue (fail-safe: an unparseable schedule never fires).
    """
    if cron_error(cron) is not None:
        return False
    if last_run_at is None:
        return True
    nxt = next_run(last_run_at, cron, tz)
    # compare instants: same-zone aware datetimes compare by wall time, ignoring DST fold
    return nxt is not None and now.astimezone(UTC) >= nxt.astimezone(UTC)


def upcoming(cron: str, last_run_at: datetime | None, now: datetime,
             tz: tzinfo | None = None) -> datetime | None:
    """The slot after the last run (after ``now`` if it never ran); None if unschedulable."""
    if cron_error(cron) is not None:
        return None
    return next_run(last_run_at or now, cron, tz)
