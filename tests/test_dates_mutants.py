"""Date resolution, edge by edge (issue 19): every unit of "end of …", "next …", "in N …",
weekday arithmetic, numeric orders, the horizon and epoch bounds, each where a one-character
slip would show. Expected dates are written by hand from a calendar; the reference is
Wednesday 2026-06-10 12:00 UTC unless a test says otherwise."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from sidecar.extractors.date_values import to_epoch_ms, within_horizon
from sidecar.extractors.dates import (
    find_date_expressions,
    numeric_dates,
    resolve_date,
)

REF = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)  # a Wednesday
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def d(y: int, m: int, day: int, h: int = 0, mi: int = 0) -> int:
    """Epoch ms of a UTC wall-clock time (datetime arithmetic, not the code under test)."""
    return int(datetime(y, m, day, h, mi, tzinfo=UTC).timestamp()) * 1000


@pytest.mark.parametrize(("expr", "expected"), [
    # end of …
    ("end of day", d(2026, 6, 10)),
    ("COB", d(2026, 6, 10)),
    ("close of business", d(2026, 6, 10)),
    ("end of next day", d(2026, 6, 11)),
    ("end of the week", d(2026, 6, 12)),
    ("end of next week", d(2026, 6, 19)),
    ("end of month", d(2026, 6, 30)),
    ("end of next month", d(2026, 7, 31)),
    ("end of year", d(2026, 12, 31)),
    ("EOY", d(2026, 12, 31)),
    ("end of next year", d(2027, 12, 31)),
    ("fin de mes", d(2026, 6, 30)),
    ("fin de año", d(2026, 12, 31)),
    # next / last …
    ("next week", d(2026, 6, 15)),
    ("last week", d(2026, 6, 1)),
    ("next month", d(2026, 7, 1)),
    ("last month", d(2026, 5, 1)),
    ("next year", d(2027, 1, 1)),
    ("last year", d(2025, 1, 1)),
    ("la próxima semana", d(2026, 6, 15)),
    ("el mes que viene", d(2026, 7, 1)),
    ("el año que viene", d(2027, 1, 1)),
    ("el próximo año", d(2027, 1, 1)),
    # in N … / N … ago
    ("in 3 days", d(2026, 6, 13)),
    ("in two weeks", d(2026, 6, 24)),
    ("in a couple of days", d(2026, 6, 12)),
    ("in 2 months", d(2026, 8, 10)),
    ("in 2 years", d(2028, 6, 10)),
    ("in a year", d(2027, 6, 10)),
    ("3 months ago", d(2026, 3, 10)),
    ("2 years ago", d(2024, 6, 10)),
    ("5 days ago", d(2026, 6, 5)),
    # relative days
    ("apres-demain", d(2026, 6, 12)),
    ("après-demain", d(2026, 6, 12)),
    ("aujourd’hui", d(2026, 6, 10)),
    # weekdays
    ("Friday", d(2026, 6, 12)),
    ("Wednesday", d(2026, 6, 10)),
    ("next Friday", d(2026, 6, 19)),
    ("this coming Friday", d(2026, 6, 12)),
    ("last Monday", d(2026, 6, 8)),
    ("past Monday", d(2026, 6, 8)),
    ("last Wednesday", d(2026, 6, 3)),
    ("past Wednesday", d(2026, 6, 3)),
    ("last Thursday", d(2026, 6, 4)),
    ("next Sun", d(2026, 6, 21)),
    ("last Sun", d(2026, 6, 7)),
    ("Fri", d(2026, 6, 12)),
])
def test_resolve(expr: str, expected: int) -> None:
    assert resolve_date(expr, REF) == expected


@pytest.mark.parametrize("text", ["Sun", "sun", "fri", "los lunes", "2026-13-01",
                                  "2026-00-10", "2026-02-30", "2026-06-31", "2026-04-00"])
def test_not_a_date(text: str) -> None:
    assert find_date_expressions(text) == []
    assert resolve_date(text, REF) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("0001-01-01", int(datetime(1, 1, 1, tzinfo=UTC).timestamp()) * 1000),
    ("9999-12-31", d(9999, 12, 31)),
    ("2026-06-30", d(2026, 6, 30)),
    ("2028-02-29", d(2028, 2, 29)),
    ("31.12.2026", d(2026, 12, 31)),
])
def test_first_and_last_valid_days(text: str, expected: int) -> None:
    assert find_date_expressions(f"on {text}.") == [(3, 3 + len(text), text)]
    assert resolve_date(text, REF) == expected


def test_the_day_after_the_weekdays_dates_spans_whole_text() -> None:
    assert find_date_expressions("los lunes y el viernes") == [(15, 22, "viernes")]


# -- numeric orders ----------------------------------------------------------------------

def test_numeric_dates_lists_both_numbers_of_each_slash_date() -> None:
    assert numeric_dates("3/4/2026, then 13/02/25 and 2026-05-06 and 1.2.2026") == [
        (3, 4), (13, 2)]
    assert numeric_dates("nothing here") == []


@pytest.mark.parametrize(("expr", "day_first", "expected"), [
    ("3/4/2026", None, d(2026, 3, 4)),
    ("3/4/2026", False, d(2026, 3, 4)),
    ("3/4/2026", True, d(2026, 4, 3)),
    ("3/12/2026", True, d(2026, 12, 3)),
    ("12/3/2026", True, d(2026, 3, 12)),
    ("3/13/2026", True, d(2026, 3, 13)),
    ("13/4/2026", None, d(2026, 4, 13)),
    ("13/4/2026", False, d(2026, 4, 13)),
    ("25/12/26", None, d(2026, 12, 25)),
    ("2/29/2028", None, d(2028, 2, 29)),
])
def test_numeric_order(expr: str, day_first: bool | None, expected: int) -> None:
    assert resolve_date(expr, REF, day_first=day_first) == expected


@pytest.mark.parametrize("expr", ["2/30/2026", "13/13/2026", "31/4/2026", "0/5/2026"])
def test_impossible_numeric_dates(expr: str) -> None:
    assert find_date_expressions(expr) == []
    for day_first in (None, True, False):
        assert resolve_date(expr, REF, day_first=day_first) is None


# -- a day and month without a year --------------------------------------------------------

@pytest.mark.parametrize(("expr", "expected"), [
    ("Apr 11", d(2026, 4, 11)),       # exactly 60 days back: still this year
    ("Apr 10", d(2027, 4, 10)),       # 61 days back: next year's
    ("Dec 1", d(2026, 12, 1)),
    ("Thu 16 Apr", d(2026, 4, 16)),   # already a Thursday
    ("Wed 16 Apr", d(2025, 4, 16)),   # a year back
    ("Fri 16 Apr", d(2027, 4, 16)),   # a year ahead
    ("Tue 16 Apr", d(2024, 4, 16)),   # two back
    ("Sun 16 Apr", d(2028, 4, 16)),   # two ahead
    ("Mon 16 Apr", d(2026, 4, 16)),   # never a Monday nearby: the plain rule
    ("Tue 29 Feb", d(2028, 2, 29)),
])
def test_year_inference(expr: str, expected: int) -> None:
    assert resolve_date(expr, REF) == expected


@pytest.mark.parametrize(("expr", "ref", "expected"), [
    # a past match counts three times its distance
    ("Wednesday the 25th", datetime(2026, 5, 19, tzinfo=UTC), d(2026, 3, 25)),
    ("Wednesday the 25th", datetime(2026, 5, 30, tzinfo=UTC), d(2026, 11, 25)),
    # the window: two months back to twelve ahead
    ("Wednesday the 31st", datetime(2026, 3, 5, tzinfo=UTC), d(2027, 3, 31)),
    ("Thursday the 31st", datetime(2026, 11, 10, tzinfo=UTC), d(2026, 12, 31)),
    ("Thursday the 31st", datetime(2025, 10, 5, tzinfo=UTC), None),
    ("Thursday the 31st", datetime(2025, 11, 5, tzinfo=UTC), None),
])
def test_weekday_the_nth(expr: str, ref: datetime, expected: int | None) -> None:
    assert resolve_date(expr, ref) == expected


# -- the horizon ----------------------------------------------------------------------------

@pytest.mark.parametrize(("ms", "expected"), [
    (None, False),
    (d(2026, 6, 10, 12), True),
    (d(2025, 6, 9, 12), True),          # exactly 366 days before
    (d(2025, 6, 9, 12) - 1, False),
    (d(2029, 6, 12, 12), True),         # exactly 3 * 366 days after
    (d(2029, 6, 12, 12) + 1, False),
    (d(2026, 6, 11), True),
    (0, False),
])
def test_within_horizon(ms: int | None, expected: bool) -> None:
    assert within_horizon(ms, REF) is expected


# -- to_epoch_ms -----------------------------------------------------------------------------

PLUS2 = datetime(2026, 6, 10, 12, 0, tzinfo=timezone(timedelta(hours=2)))


@pytest.mark.parametrize(("value", "ref", "expected"), [
    (100_000_000_000, REF, 100_000_000_000_000),      # 1e11 exactly: seconds
    (100_000_000_001, REF, 100_000_000_001),          # above: milliseconds
    (1_780_000_000, REF, 1_780_000_000_000),
    ("123456789", REF, 123_456_789_000),              # nine digits: epoch seconds
    ("12345678", REF, None),                          # eight: not a date
    ("2026", REF, None),
    (MAX_MS, REF, MAX_MS),
    (MAX_MS + 1, REF, None),
    (-MAX_MS, REF, -MAX_MS),
    (str(MAX_MS), REF, MAX_MS),
    (date(2026, 6, 10), REF, d(2026, 6, 10)),
    (date(2026, 6, 10), PLUS2, d(2026, 6, 9, 22)),
    (datetime(2026, 6, 10, 9, 0), PLUS2, d(2026, 6, 10, 7)),
    (datetime(2026, 6, 10, 9, 0, tzinfo=UTC), PLUS2, d(2026, 6, 10, 9)),
    (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC), REF, MAX_MS),
    ("2026-06-10T09:00:00+02:00", REF, d(2026, 6, 10, 7)),
    ("2026-06-12", PLUS2, d(2026, 6, 11, 22)),
    ("Friday", PLUS2, d(2026, 6, 11, 22)),
    (True, REF, None),
    (None, REF, None),
    ("   ", REF, None),
    ([2026], REF, None),
    (float("nan"), REF, None),
])
def test_to_epoch_ms(value: object, ref: datetime, expected: int | None) -> None:
    assert to_epoch_ms(value, ref) == expected


def test_resolve_date_refuses_what_is_not_a_string_and_a_datetime() -> None:
    assert resolve_date(None, REF) is None  # type: ignore[arg-type]
    assert resolve_date("Friday", None) is None  # type: ignore[arg-type]
    assert resolve_date("Friday", date(2026, 6, 10)) is None  # type: ignore[arg-type]


def test_find_date_expressions_of_nothing() -> None:
    assert find_date_expressions("") == []
    assert find_date_expressions(None) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(("expr", "expected"), [
    ("by Friday.", d(2026, 6, 12)),
    ("Friday!!", d(2026, 6, 12)),
    ("(Friday)", None),
    ("due 3/4/2026;", d(2026, 3, 4)),
])
def test_trailing_punctuation_is_ignored_leading_is_not(expr: str, expected: int | None
                                                         ) -> None:
    assert resolve_date(expr, REF) == expected


def test_a_day_first_document_resolves_through_resolve_date() -> None:
    assert resolve_date("on 3/4/2026", REF, day_first=True) == d(2026, 4, 3)
    assert resolve_date("3/4/2026 at 3pm", REF, day_first=True) == d(2026, 4, 3, 15)


# -- what is not a date, and what is (plausibility) ----------------------------------------

@pytest.mark.parametrize("text", [
    "31.02.2026", "2027-02-29", "29.02.2027", "Feb 30", "30 Feb", "Feb 29, 2027",
    "29 February 2027", "we 2 may go", "the 3 march on",
    "the 3 mar on"])
def test_implausible_dates_are_not_found(text: str) -> None:
    assert find_date_expressions(text) == []


@pytest.mark.parametrize(("expr", "expected"), [
    ("Monday the 1st", d(2026, 6, 1)),
    ("2 of may", d(2026, 5, 2)),   # 39 days back: recent, stays in the past
    ("2nd may", d(2026, 5, 2)),
    ("3 march 2027", d(2027, 3, 3)),
    ("Tue 3 mar", d(2026, 3, 3)),
    ("may 5", d(2026, 5, 5)),
    ("march 3", d(2027, 3, 3)),
    ("29 Feb 2028", d(2028, 2, 29)),
    ("Feb 28", d(2027, 2, 28)),
])
def test_plausible_day_and_month(expr: str, expected: int) -> None:
    assert resolve_date(expr, REF) == expected


@pytest.mark.parametrize("text", ["Friday the 32nd", "Friday the 0th"])
def test_a_day_number_out_of_range_leaves_the_weekday_alone(text: str) -> None:
    assert find_date_expressions(text) == [(0, 6, "Friday")]


def test_find_date_expressions_of_what_is_not_text() -> None:
    assert find_date_expressions(12345) == []  # type: ignore[arg-type]


def test_an_iso_time_of_day_is_not_extended_by_another_time() -> None:
    assert find_date_expressions("2026-06-12T10:00 at 3pm") == [(0, 16, "2026-06-12T10:00")]
    assert find_date_expressions("at 3pm 2026-06-12T10:00") == [(7, 23, "2026-06-12T10:00")]
    assert find_date_expressions("2026-06-12 at 3pm") == [(0, 17, "2026-06-12 at 3pm")]


def test_a_leading_time_is_looked_for_up_to_40_characters_back() -> None:
    near = "3pm" + " " * 37 + "Friday"   # the time starts 40 characters before the date
    assert find_date_expressions(near) == [(0, 46, near)]
    far = "3pm" + " " * 38 + "Friday"    # 41: too far
    assert find_date_expressions(far) == [(41, 47, "Friday")]
