"""Pure schedule math: when an agent runs next and whether it is overdue (the seed's rule)."""

from __future__ import annotations

import logging
from datetime import datetime, tzinfo

log = logging.getLogger(__name__)


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


def next_run(prev: datetime, cron: str, tz: tzinfo | None = None) -> datetime | None:
    """First fire time strictly after ``prev`` (aware), in ``tz``; ``None`` for a bad expression."""
    from croniter import croniter

    if prev.tzinfo is None:
        raise ValueError("prev must be timezone-aware")
    zone = tz or local_tz()
    try:
        it = croniter(cron, prev.astimezone(zone))
        return it.get_next(datetime)
    except Exception as exc:  # croniter raises several types for bad input
        log.warning("cannot evaluate cron %r: %s", cron, exc)
        return None


def is_overdue(cron: str, last_run_at: datetime | None, now: datetime,
               tz: tzinfo | None = None) -> bool:
    """The seed's rule: never run → overdue; else overdue once the next slot has passed.

    An invalid expression is never overdue (fail-safe: an unparseable schedule never fires).
    """
    from croniter import croniter

    if not croniter.is_valid(cron):
        return False
    if last_run_at is None:
        return True
    nxt = next_run(last_run_at, cron, tz)
    return nxt is not None and now >= nxt
