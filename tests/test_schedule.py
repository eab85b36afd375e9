"""Table tests of the pure cron math: next runs, DST in real zones, bad input, the overdue rule."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sidecar.schedule import cron_error, is_overdue, next_run

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(tz: ZoneInfo, *parts: int, fold: int = 0) -> datetime:
    """An aware local time in ``tz`` (``fold=1`` picks a repeated wall time's second pass)."""
    return datetime(*parts, tzinfo=tz, fold=fold)  # type: ignore[misc]


def runs_on(cron: str, tz: ZoneInfo, day: date) -> list[datetime]:
    """Every fire time whose local date is ``day``, walking next_run from the day before."""
    cur = datetime(day.year, day.month, day.day, tzinfo=tz) - timedelta(days=1)
    out: list[datetime] = []
    for _ in range(500):
        nxt = next_run(cur, cron, tz)
        assert nxt is not None
        local = nxt.astimezone(tz)
        if local.date() > day:
            return out
        if local.date() == day:
            out.append(local)
        assert nxt.astimezone(UTC) > cur.astimezone(UTC), "next_run must move forward"
        cur = nxt
    raise AssertionError("too many runs")


# -- ordinary next runs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "prev", "expected"),
    [
        ("0 * * * *", datetime(2025, 6, 4, 10, 15, tzinfo=UTC), datetime(2025, 6, 4, 11, 0)),
        ("0 * * * *", datetime(2025, 6, 4, 11, 0, tzinfo=UTC), datetime(2025, 6, 4, 12, 0)),
        ("30 8 * * *", datetime(2025, 6, 4, 9, 0, tzinfo=UTC), datetime(2025, 6, 5, 8, 30)),
        ("30 8 * * *", datetime(2025, 6, 4, 8, 29, 59, 900000, tzinfo=UTC),
         datetime(2025, 6, 4, 8, 30)),
        ("0 0 1 * *", datetime(2025, 1, 31, 12, 0, tzinfo=UTC), datetime(2025, 2, 1, 0, 0)),
        ("0 12 29 2 *", datetime(2025, 3, 1, tzinfo=UTC), datetime(2028, 2, 29, 12, 0)),
        ("@hourly", datetime(2025, 6, 4, 10, 15, tzinfo=UTC), datetime(2025, 6, 4, 11, 0)),
        ("@daily", datetime(2025, 6, 4, 10, 15, tzinfo=UTC), datetime(2025, 6, 5, 0, 0)),
        # crontab weekdays: 0 and 7 are Sunday, 1-5 Monday..Friday (2025-06-06 is a Friday)
        ("0 9 * * 1-5", datetime(2025, 6, 6, 10, 0, tzinfo=UTC), datetime(2025, 6, 9, 9, 0)),
        ("0 9 * * 0", datetime(2025, 6, 6, 10, 0, tzinfo=UTC), datetime(2025, 6, 8, 9, 0)),
        ("0 9 * * 7", datetime(2025, 6, 6, 10, 0, tzinfo=UTC), datetime(2025, 6, 8, 9, 0)),
        # day-of-month and day-of-week both restricted: either matches (crontab's OR)
        ("0 9 13 * 5", datetime(2025, 6, 7, tzinfo=UTC), datetime(2025, 6, 13, 9, 0)),
        ("0 9 15 * 1", datetime(2025, 6, 7, tzinfo=UTC), datetime(2025, 6, 9, 9, 0)),
    ],
)
def test_next_run_ordinary(cron: str, prev: datetime, expected: datetime) -> None:
    assert next_run(prev, cron, UTC) == expected.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("tz", "prev_utc", "expected_local"),
    [
        # 07:30 UTC is 09:30 in Berlin (summer): 09:00 today has passed, so tomorrow's
        (BERLIN, datetime(2025, 6, 4, 7, 30, tzinfo=UTC), datetime(2025, 6, 5, 9, 0)),
        # 06:30 UTC is 08:30 in Berlin: today's 09:00 is still ahead
        (BERLIN, datetime(2025, 6, 4, 6, 30, tzinfo=UTC), datetime(2025, 6, 4, 9, 0)),
        # 02:00 UTC is 22:00 the previous evening in New York (EDT)
        (NEW_YORK, datetime(2025, 6, 4, 2, 0, tzinfo=UTC), datetime(2025, 6, 4, 9, 0)),
        (NEW_YORK, datetime(2025, 1, 15, 15, 0, tzinfo=UTC), datetime(2025, 1, 16, 9, 0)),
    ],
)
def test_next_run_is_evaluated_in_the_users_zone(tz: ZoneInfo, prev_utc: datetime,
                                                 expected_local: datetime) -> None:
    nxt = next_run(prev_utc, "0 9 * * *", tz)
    assert nxt is not None
    assert nxt.replace(tzinfo=None) == expected_local and nxt.utcoffset() == (
        expected_local.replace(tzinfo=tz).utcoffset())


@pytest.mark.parametrize(
    ("prev", "expected"),
    [
        (datetime(2025, 6, 4, 10, 0, tzinfo=UTC), datetime(2025, 6, 4, 10, 15, tzinfo=UTC)),
        (datetime(2025, 6, 4, 10, 7, 30, tzinfo=UTC), datetime(2025, 6, 4, 10, 15, tzinfo=UTC)),
        (datetime(2025, 6, 4, 10, 14, 59, tzinfo=UTC), datetime(2025, 6, 4, 10, 15, tzinfo=UTC)),
        (datetime(2025, 6, 4, 10, 45, tzinfo=UTC), datetime(2025, 6, 4, 11, 0, tzinfo=UTC)),
        (datetime(2025, 6, 4, 23, 50, tzinfo=UTC), datetime(2025, 6, 5, 0, 0, tzinfo=UTC)),
    ],
)
def test_every_15_minutes(prev: datetime, expected: datetime) -> None:
    assert next_run(prev, "*/15 * * * *", UTC) == expected


def test_every_15_minutes_makes_96_runs_a_day() -> None:
    runs = runs_on("*/15 * * * *", BERLIN, date(2025, 6, 4))
    assert len(runs) == 96 and runs[0].hour == 0 and runs[-1].strftime("%H:%M") == "23:45"


def test_naive_prev_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_run(datetime(2025, 6, 4, 10, 0), "0 * * * *", UTC)


# -- DST ------------------------------------------------------------------------------------
# Spring forward (02:00 → 03:00 local) skips the wall time 02:30 that day. croniter moves
# such a slot to the first instant after the gap (03:00 new time); the sidecar keeps that:
# the job runs exactly once that day, at 03:00, and at 02:30 again from the next day.
# Fall back repeats an hour (01:00-02:00 in New York, 02:00-03:00 in Berlin). croniter and
# APScheduler's CronTrigger both return the repeated wall time twice; the sidecar skips the
# second pass for a fixed-hour job, so it runs once, at the first pass.

SPRING = [(BERLIN, date(2025, 3, 30)), (NEW_YORK, date(2025, 3, 9)),
          (BERLIN, date(2026, 3, 29)), (NEW_YORK, date(2026, 3, 8))]
FALL = [(BERLIN, date(2025, 10, 26)), (NEW_YORK, date(2025, 11, 2)),
        (BERLIN, date(2026, 10, 25)), (NEW_YORK, date(2026, 11, 1))]


@pytest.mark.parametrize(("tz", "day"), SPRING, ids=lambda v: str(v))
def test_spring_forward_skipped_slot_runs_exactly_once(tz: ZoneInfo, day: date) -> None:
    runs = runs_on("30 2 * * *", tz, day)
    assert len(runs) == 1, runs
    assert runs[0].strftime("%H:%M") == "03:00"  # croniter's shift past the gap
    assert runs[0].utcoffset() == at(tz, day.year, day.month, day.day, 12).utcoffset()
    nxt = next_run(runs[0], "30 2 * * *", tz)
    assert nxt is not None and nxt.date() == day + timedelta(days=1)
    assert nxt.strftime("%H:%M") == "02:30"
    # the day before is untouched
    before = runs_on("30 2 * * *", tz, day - timedelta(days=1))
    assert [r.strftime("%H:%M") for r in before] == ["02:30"]


@pytest.mark.parametrize(("tz", "day"), SPRING, ids=lambda v: str(v))
def test_spring_forward_hourly_job_loses_only_the_missing_hour(tz: ZoneInfo, day: date) -> None:
    runs = runs_on("30 * * * *", tz, day)
    assert len(runs) == 23  # a 23-hour day; no 03:00 shift duplicating 03:30
    assert [r.strftime("%H:%M") for r in runs[:3]] == ["00:30", "01:30", "03:30"]


@pytest.mark.parametrize(("tz", "day"), FALL, ids=lambda v: str(v))
@pytest.mark.parametrize("cron", ["30 1 * * *", "30 2 * * *", "0 1 * * *", "15,45 1,2 * * *"])
def test_fall_back_repeated_slot_runs_once(tz: ZoneInfo, day: date, cron: str) -> None:
    runs = runs_on(cron, tz, day)
    wall_times = [r.strftime("%H:%M") for r in runs]
    assert len(wall_times) == len(set(wall_times)), runs  # never the same wall time twice
    expected = runs_on(cron, tz, day - timedelta(days=7))  # an ordinary day: same slots
    assert wall_times == [r.strftime("%H:%M") for r in expected]
    for r in runs:  # each slot fires at its first pass (the summer offset)
        first = at(tz, day.year, day.month, day.day, r.hour, r.minute, fold=0)
        assert r == first and r.utcoffset() == first.utcoffset()


def test_fall_back_new_york_0130_first_pass_then_next_day() -> None:
    first = next_run(at(NEW_YORK, 2025, 11, 1, 12), "30 1 * * *", NEW_YORK)
    assert first is not None and first.isoformat() == "2025-11-02T01:30:00-04:00"
    again = next_run(first, "30 1 * * *", NEW_YORK)
    assert again is not None and again.isoformat() == "2025-11-03T01:30:00-05:00"
    # asked during the repeated hour's second pass, it is tomorrow's slot, not 01:30 EST
    during = next_run(at(NEW_YORK, 2025, 11, 2, 1, 10, fold=1), "30 1 * * *", NEW_YORK)
    assert during is not None and during.isoformat() == "2025-11-03T01:30:00-05:00"


@pytest.mark.parametrize(("tz", "day"), FALL, ids=lambda v: str(v))
def test_fall_back_interval_jobs_keep_real_time(tz: ZoneInfo, day: date) -> None:
    """Every-15-minutes means real minutes: both passes of the repeated hour run (100/day)."""
    runs = runs_on("*/15 * * * *", tz, day)
    assert len(runs) == 100  # a 25-hour day
    utc = [r.astimezone(UTC) for r in runs]
    gaps = {b - a for a, b in itertools.pairwise(utc)}
    assert gaps == {timedelta(minutes=15)}
    assert len(runs_on("0 * * * *", tz, day)) == 25


@pytest.mark.parametrize(
    ("tz", "cron", "last", "now", "overdue"),
    [
        # ran at the first 01:30; during the repeated hour it is not due again
        (NEW_YORK, "30 1 * * *", at(NEW_YORK, 2025, 11, 2, 1, 30),
         at(NEW_YORK, 2025, 11, 2, 1, 45, fold=1), False),
        (BERLIN, "30 2 * * *", at(BERLIN, 2025, 10, 26, 2, 30),
         at(BERLIN, 2025, 10, 26, 2, 50, fold=1), False),
        # spring forward: yesterday's run, woke at 03:10 → the 02:30 slot (moved to 03:00) is due
        (BERLIN, "30 2 * * *", at(BERLIN, 2025, 3, 29, 2, 30), at(BERLIN, 2025, 3, 30, 3, 10),
         True),
        (NEW_YORK, "30 2 * * *", at(NEW_YORK, 2025, 3, 8, 2, 30),
         at(NEW_YORK, 2025, 3, 9, 3, 0), True),
        (NEW_YORK, "30 2 * * *", at(NEW_YORK, 2025, 3, 8, 2, 30),
         at(NEW_YORK, 2025, 3, 9, 1, 59), False),
        # fall back, asleep over the first 02:30, woke in the second pass: due (instants
        # compare, not wall times: 02:10 CET is after 02:30 CEST)
        (BERLIN, "30 2 * * *", at(BERLIN, 2025, 10, 26, 2, 20),
         at(BERLIN, 2025, 10, 26, 2, 10, fold=1), True),
        (NEW_YORK, "30 1 * * *", at(NEW_YORK, 2025, 11, 2, 1, 20),
         at(NEW_YORK, 2025, 11, 2, 1, 5, fold=1), True),
        # …and once it ran at 03:00 it is not due again that day
        (BERLIN, "30 2 * * *", at(BERLIN, 2025, 3, 30, 3, 0), at(BERLIN, 2025, 3, 30, 23, 0),
         False),
    ],
)
def test_overdue_across_dst(tz: ZoneInfo, cron: str, last: datetime, now: datetime,
                            overdue: bool) -> None:
    assert is_overdue(cron, last, now, tz) is overdue


# -- invalid expressions: fail-safe ---------------------------------------------------------


@pytest.mark.parametrize("cron", ["61 * * * *", "not cron", "", "   ", "* * * *",
                                  "* * * * * *", "0 25 * * *", "0 0 32 * *", "@reboot",
                                  "*/0 * * * *"])
@pytest.mark.parametrize("last_run", [None, datetime(2020, 1, 1, tzinfo=UTC)])
def test_invalid_cron_never_runs(cron: str, last_run: datetime | None) -> None:
    now = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)
    assert cron_error(cron) is not None
    assert next_run(now, cron, BERLIN) is None
    assert is_overdue(cron, last_run, now, BERLIN) is False


@pytest.mark.parametrize("cron", ["* * * * *", "*/15 * * * *", "0 9 * * 1-5", "@hourly",
                                  "0 9 1,15 * *", "0 9 * * mon-fri", "0 0 * jan *"])
def test_valid_cron_has_no_error(cron: str) -> None:
    assert cron_error(cron) is None


# -- the seed's overdue rule ----------------------------------------------------------------

NOW = datetime(2025, 6, 4, 12, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "last_run", "overdue"),
    [
        ("0 * * * *", None, True),  # never run
        ("0 3 * * *", None, True),  # never run, even far from the slot
        ("0 * * * *", datetime(2025, 6, 4, 10, 30, tzinfo=UTC), True),  # before 11:00 and 12:00
        ("0 * * * *", datetime(2025, 6, 4, 11, 59, tzinfo=UTC), True),  # before 12:00
        ("0 * * * *", datetime(2025, 6, 4, 12, 0, tzinfo=UTC), False),  # at the latest slot
        ("0 * * * *", datetime(2025, 6, 4, 12, 5, tzinfo=UTC), False),  # after the latest slot
        ("0 * * * *", datetime(2025, 6, 1, 12, 5, tzinfo=UTC), True),  # days ago
        ("*/15 * * * *", datetime(2025, 6, 4, 12, 14, tzinfo=UTC), True),  # 12:15 passed
        ("*/15 * * * *", datetime(2025, 6, 4, 12, 16, tzinfo=UTC), False),  # 12:30 ahead
        ("0 3 * * *", datetime(2025, 6, 4, 3, 0, 5, tzinfo=UTC), False),  # today's run done
        ("0 3 * * *", datetime(2025, 6, 3, 3, 0, 5, tzinfo=UTC), True),  # missed today's
        ("0 9 * * 1-5", datetime(2025, 6, 6, 9, 0, 1, tzinfo=UTC), False),  # Fri; next is Mon
        ("0 12 * * *", datetime(2025, 6, 3, 12, 0, tzinfo=UTC), True),  # next slot == 12:00 ≤ now
    ],
)
def test_overdue_rule(cron: str, last_run: datetime | None, overdue: bool) -> None:
    assert is_overdue(cron, last_run, NOW, UTC) is overdue


def test_overdue_exactly_at_the_slot() -> None:
    last = datetime(2025, 6, 4, 11, 0, tzinfo=UTC)
    assert is_overdue("0 * * * *", last, datetime(2025, 6, 4, 12, 0, tzinfo=UTC), UTC)
    assert not is_overdue("0 * * * *", last, datetime(2025, 6, 4, 11, 59, 59, tzinfo=UTC), UTC)


def test_overdue_in_zone_differs_from_utc() -> None:
    """A daily 09:00 job is judged in the user's zone, not UTC."""
    last = datetime(2025, 6, 3, 13, 0, tzinfo=UTC)  # 15:00 Berlin, 09:00 New York
    now = datetime(2025, 6, 4, 8, 0, tzinfo=UTC)  # 10:00 Berlin, 04:00 New York
    assert is_overdue("0 9 * * *", last, now, BERLIN) is True
    assert is_overdue("0 9 * * *", last, now, NEW_YORK) is False
