"""Date expressions: what is found, what it resolves to, and what must never match."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.extractors.date_values import to_epoch_ms
from sidecar.extractors.dates import find_date_expressions, resolve_date

BERLIN = ZoneInfo("Europe/Berlin")
REF = datetime(2026, 11, 25, 9, 0, tzinfo=BERLIN)  # a Wednesday


def ms(y: int, m: int, d: int, h: int = 0, mi: int = 0, tz: object = BERLIN) -> int:
    return round(datetime(y, m, d, h, mi, tzinfo=tz).timestamp() * 1000)  # type: ignore[arg-type]


@pytest.mark.parametrize(("expr", "expected"), [
    ("2026-12-01", (2026, 12, 1)),
    ("2026/12/01", (2026, 12, 1)),
    ("12/01/2026", (2026, 12, 1)),
    ("1/12/2026", (2026, 1, 12)),
    ("13/12/2026", (2026, 12, 13)),
    ("12/01/26", (2026, 12, 1)),
    ("1.12.2026", (2026, 12, 1)),
    ("Dec 1", (2026, 12, 1)),
    ("december 1st", (2026, 12, 1)),
    ("1 December", (2026, 12, 1)),
    ("1st of December 2026", (2026, 12, 1)),
    ("Dec. 1, 2026", (2026, 12, 1)),
    ("DEC 1 2027", (2027, 12, 1)),
    ("Friday, Dec 4", (2026, 12, 4)),
    ("May 5", (2027, 5, 5)),
    ("5th of may", (2027, 5, 5)),
    ("Oct 1", (2026, 10, 1)),  # passed 55 days ago: recent past stays this year
    ("Sept 3", (2027, 9, 3)),  # passed 83 days ago: next year
    ("Feb 29", (2028, 2, 29)),
    ("today", (2026, 11, 25)),
    ("Tonight", (2026, 11, 25)),
    ("tomorrow", (2026, 11, 26)),
    ("day after tomorrow", (2026, 11, 27)),
    ("the day after tomorrow", (2026, 11, 27)),
    ("yesterday", (2026, 11, 24)),
    ("Friday", (2026, 11, 27)),
    ("on Friday", (2026, 11, 27)),
    ("by friday", (2026, 11, 27)),
    ("this Friday", (2026, 11, 27)),
    ("Fri", (2026, 11, 27)),
    ("next Friday", (2026, 12, 4)),
    ("Wednesday", (2026, 11, 25)),
    ("next Wednesday", (2026, 12, 2)),
    ("Monday", (2026, 11, 30)),
    ("last Friday", (2026, 11, 20)),
    ("in 3 days", (2026, 11, 28)),
    ("in two weeks", (2026, 12, 9)),
    ("in a week", (2026, 12, 2)),
    ("within 2 months", (2027, 1, 25)),
    ("3 days ago", (2026, 11, 22)),
    ("a week from today", (2026, 12, 2)),
    ("next week", (2026, 11, 30)),
    ("end of week", (2026, 11, 27)),
    ("EOW", (2026, 11, 27)),
    ("end of the month", (2026, 11, 30)),
    ("EOM", (2026, 11, 30)),
    ("end of day", (2026, 11, 25)),
    ("by EOD", (2026, 11, 25)),
    ("end of next month", (2026, 12, 31)),
    ("next month", (2026, 12, 1)),
    ("next year", (2027, 1, 1)),
    ("Friday 3pm", (2026, 11, 27, 15)),
    ("tomorrow at 10:30", (2026, 11, 26, 10, 30)),
    ("Dec 1 at 9am", (2026, 12, 1, 9)),
    ("tomorrow 10:30am", (2026, 11, 26, 10, 30)),
    ("Friday 12 p.m.", (2026, 11, 27, 12)),
    ("Friday 12am", (2026, 11, 27, 0)),
    ("Friday at noon", (2026, 11, 27, 12)),
    ("3pm on Friday", (2026, 11, 27, 15)),
    ("at 9:15 tomorrow", (2026, 11, 26, 9, 15)),
    ("12/01/2026 15:00", (2026, 12, 1, 15)),
])
def test_resolve(expr: str, expected: tuple[int, ...]) -> None:
    assert resolve_date(expr, REF) == ms(*expected)


def test_resolve_iso_datetime() -> None:
    assert resolve_date("2026-12-01T10:00:00Z", REF) == ms(2026, 12, 1, 10, tz=UTC)
    assert resolve_date("2026-12-01T10:00", REF) == ms(2026, 12, 1, 10)


@pytest.mark.parametrize("expr", [
    "", "   ", "May", "we may ship", "the march begins", "3pm", "at 3pm", "15:00", "3 items",
    "version 1.2", "1.2.3", "555-123-4567", "next", "gibberish", "Dec 1 foo", "Feb 30",
    "2026-02-30", "31/31/2026", "Feb 29 2027", "Dec 2026", "sun", "the 2 may conflict",
    "32.1.2026",
])
def test_not_a_date(expr: str) -> None:
    assert resolve_date(expr, REF) is None


def test_naive_reference_is_local_time() -> None:
    ref = datetime(2026, 11, 25, 9, 0)
    assert resolve_date("tomorrow", ref) == round(datetime(2026, 11, 26).timestamp() * 1000)
    assert resolve_date("Friday 3pm", ref) == round(
        datetime(2026, 11, 27, 15).timestamp() * 1000)


def test_utc_reference_uses_its_own_day() -> None:
    ref = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)  # already Nov 26 in Berlin
    assert resolve_date("tomorrow", ref) == ms(2026, 11, 26, tz=UTC)
    assert resolve_date("tomorrow", ref.astimezone(BERLIN)) == ms(2026, 11, 27)


def test_dst_transition() -> None:
    ref = datetime(2026, 3, 27, 12, 0, tzinfo=BERLIN)  # Friday; clocks jump on Sunday 29th
    expected = ms(2026, 3, 29, 22, tz=UTC)  # Monday 2026-03-30 00:00 CEST (UTC+2)
    assert expected == ms(2026, 3, 30)
    assert resolve_date("Monday", ref) == expected
    assert resolve_date("in 3 days", ref) == expected


@pytest.mark.parametrize(("ref", "expr", "expected"), [
    (datetime(2026, 12, 28, tzinfo=BERLIN), "Jan 3", (2027, 1, 3)),
    (datetime(2027, 1, 10, tzinfo=BERLIN), "Dec 20", (2026, 12, 20)),
    (datetime(2026, 12, 28, tzinfo=BERLIN), "next week", (2027, 1, 4)),
    (datetime(2026, 12, 28, tzinfo=BERLIN), "next month", (2027, 1, 1)),
    (datetime(2027, 1, 31, tzinfo=BERLIN), "in 1 month", (2027, 2, 28)),
])
def test_year_rollover(ref: datetime, expr: str, expected: tuple[int, int, int]) -> None:
    assert resolve_date(expr, ref) == ms(*expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("Send the draft by Friday 3pm, review on Dec 1 at 9am and ship 2026-12-15.",
     ["Friday 3pm", "Dec 1 at 9am", "2026-12-15"]),
    ("Meeting moved to tomorrow at 10:30; invoice due end of month (EOM).",
     ["tomorrow at 10:30", "end of month", "EOM"]),
    ("Deadline: the day after tomorrow, otherwise next Friday or in two weeks.",
     ["the day after tomorrow", "next Friday", "in two weeks"]),
    ("Paid on 1.12.2026 and 12/01/2026; due 1st of December 2026.",
     ["1.12.2026", "12/01/2026", "1st of December 2026"]),
    ("Call 555-123-4567 about version 1.2.3; we may ship 3 items at 3pm. March on!", []),
    ("Released 2.1.2026.4 and v1.12.2026 and build 2026-12-01-3", []),
])
def test_find(text: str, expected: list[str]) -> None:
    found = find_date_expressions(text)
    assert [expr for _, _, expr in found] == expected
    for start, end, expr in found:
        assert text[start:end] == expr
        assert resolve_date(expr, REF) is not None
    assert all(a[1] <= b[0] for a, b in pairwise(found))


@pytest.mark.parametrize(("expr", "expected"), [
    ("14 de abril", (2027, 4, 14)),
    ("14 de abril de 2025", (2025, 4, 14)),
    ("1 de diciembre", (2026, 12, 1)),
    ("el viernes", (2026, 11, 27)),
    ("antes del viernes", (2026, 11, 27)),
    ("el lunes", (2026, 11, 30)),
    ("miércoles", (2026, 11, 25)),
    ("hoy", (2026, 11, 25)),
    ("mañana", (2026, 11, 26)),
    ("pasado mañana", (2026, 11, 27)),
    ("la próxima semana", (2026, 11, 30)),
    ("la semana que viene", (2026, 11, 30)),
    ("el mes que viene", (2026, 12, 1)),
    ("fin de mes", (2026, 11, 30)),
    ("a finales de mes", (2026, 11, 30)),
])
def test_resolve_spanish(expr: str, expected: tuple[int, ...]) -> None:
    assert resolve_date(expr, REF) == ms(*expected)


@pytest.mark.parametrize("text", [
    "la sesión es por la mañana",      # "la mañana": the morning, not tomorrow
    "cerramos los lunes en agosto",     # every Monday, not a date
    "mar en calma",                     # the sea, not a month or a weekday
])
def test_spanish_non_dates(text: str) -> None:
    assert find_date_expressions(text) == []


def test_find_spanish_sentence() -> None:
    text = "Marta envía los textos antes del viernes y Jorge hace las fotos el 14 de abril."
    found = [expr for _, _, expr in find_date_expressions(text)]
    assert found == ["viernes", "14 de abril"]


@pytest.mark.parametrize(("value", "expected"), [
    (1764547200, ms(2025, 12, 1, tz=UTC)),
    (1764547200000, ms(2025, 12, 1, tz=UTC)),
    (1764547200.5, ms(2025, 12, 1, tz=UTC) + 500),
    ("1764547200", ms(2025, 12, 1, tz=UTC)),
    ("2026-12-01", ms(2026, 12, 1)),
    ("2026-12-01T10:00:00Z", ms(2026, 12, 1, 10, tz=UTC)),
    ("2026-12-01T10:00:00+01:00", ms(2026, 12, 1, 10)),
    (" tomorrow ", ms(2026, 11, 26)),
    ("Friday 3pm", ms(2026, 11, 27, 15)),
    (datetime(2026, 12, 1, 10, tzinfo=UTC), ms(2026, 12, 1, 10, tz=UTC)),
    (None, None), ("", None), ("   ", None), ("garbage", None), ("2026", None), (True, None),
    ([], None), ({}, None), (float("nan"), None), (float("inf"), None), (10**30, None),
])
def test_to_epoch_ms(value: object, expected: int | None) -> None:
    assert to_epoch_ms(value, REF) == expected


_FRAGMENTS = st.sampled_from([
    "Dec", "1", "1st", "of", "2026", "Friday", "next", "this", "at", "3pm", "10:30", "tomorrow",
    "in", "two", "weeks", "may", "May", "end", "EOD", "12/01/2026", "1.12.2026", "2026-12-01",
    "on", "by", ",", ".", "noon", "the", "day", "after", "Feb", "30", "a.m.", "ago", "Sun",
])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(_FRAGMENTS, max_size=12).map(" ".join)))
def test_never_raises(text: str) -> None:
    found = find_date_expressions(text)
    last_end = 0
    for start, end, expr in found:
        assert text[start:end] == expr
        assert start >= last_end
        last_end = end
        assert isinstance(resolve_date(expr, REF), int)
    resolve_date(text, REF)
    resolve_date(text, datetime(2026, 11, 25))
    to_epoch_ms(text, REF)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()))
def test_to_epoch_ms_never_raises(value: object) -> None:
    result = to_epoch_ms(value, REF)
    assert result is None or isinstance(result, int)


@pytest.mark.parametrize(("expr", "ref", "expected"), [
    # a weekday beside a day and month picks the nearby year in which they agree
    ("Thu 16 Apr", datetime(2026, 12, 5, 9, tzinfo=BERLIN), (2026, 4, 16)),
    ("Thursday, 16 April", datetime(2026, 12, 5, 9, tzinfo=BERLIN), (2026, 4, 16)),
    ("Fri 16 Apr", datetime(2026, 12, 5, 9, tzinfo=BERLIN), (2027, 4, 16)),
    ("Tuesday 8 April", datetime(2026, 12, 5, 9, tzinfo=BERLIN), (2025, 4, 8)),
    ("friday 9 may", datetime(2025, 5, 9, 9, tzinfo=BERLIN), (2025, 5, 9)),
    # "Wednesday the 25th": the nearest month in which the 25th is a Wednesday
    ("Wednesday the 25th", datetime(2026, 12, 5, 9, tzinfo=BERLIN), (2026, 11, 25)),
    ("Wednesday the 25th", datetime(2026, 2, 9, 9, tzinfo=BERLIN), (2026, 2, 25)),
    ("Wed 25th", datetime(2026, 2, 9, 9, tzinfo=BERLIN), (2026, 2, 25)),
    ("el miércoles 9", datetime(2026, 12, 5, 9, tzinfo=BERLIN), (2026, 12, 9)),
])
def test_weekday_and_year_agree(expr: str, ref: datetime, expected: tuple[int, int, int]) -> None:
    assert resolve_date(expr, ref) == ms(*expected)


def test_a_bare_weekday_and_number_is_not_a_date() -> None:
    # "Friday 3" could be a time, a count or a room: only "the 3rd"/"3rd" or Spanish names it
    assert resolve_date("Friday 3", REF) is None
    assert resolve_date("Friday 3pm", REF) == ms(2026, 11, 27, 15)


FR_REF = datetime(2026, 6, 22, 9, tzinfo=BERLIN)  # a Monday


@pytest.mark.parametrize(("expr", "expected"), [
    ("vendredi", (2026, 6, 26)),
    ("le 9 juin", (2026, 6, 9)),  # 13 days ago: the recent past stays this year
    ("3 juillet 2026", (2026, 7, 3)),
    ("mardi 23 juin", (2026, 6, 23)),
    ("2 août", (2026, 8, 2)),
    ("demain", (2026, 6, 23)),
    ("aujourd’hui", (2026, 6, 22)),
    ("après-demain", (2026, 6, 24)),
    ("Freitag", (2026, 6, 26)),
    ("14. Juli", (2026, 7, 14)),
    ("Donnerstag, 25. Juni 2026", (2026, 6, 25)),
    ("bis zum 3. Juli", (2026, 7, 3)),
    ("heute", (2026, 6, 22)),
])
def test_french_and_german_dates(expr: str, expected: tuple[int, int, int]) -> None:
    assert resolve_date(expr, FR_REF) == ms(*expected)


@pytest.mark.parametrize("text", [
    "2. May I ask a question?",  # a numbered list, not 2 May
    "Hier ist die Datei.",  # German "here", not French "yesterday"
    "1. March planning",
])
def test_european_words_that_are_not_dates(text: str) -> None:
    assert find_date_expressions(text) == []


@pytest.mark.parametrize(("text", "expr", "expected"), [
    # a span of days starts on its first day (REF is 25 Nov 2026)
    ("Shoot days: 10–11 March at the studio", "10–11 March", (2027, 3, 10)),
    ("Install: 3-5 December, Hall B", "3-5 December", (2026, 12, 3)),
    ("Festival runs 9 to 11 August", "9 to 11 August", (2027, 8, 9)),
    ("Booth staffed 14th–16th of January", "14th–16th of January", (2027, 1, 14)),
    ("Fair: March 10–11, 2028", "March 10–11, 2028", (2028, 3, 10)),
    ("Retreat 28 — 30 December 2026", "28 — 30 December 2026", (2026, 12, 28)),
])
def test_a_range_of_days_resolves_to_its_first_day(
        text: str, expr: str, expected: tuple[int, int, int]) -> None:
    assert [e for _, _, e in find_date_expressions(text)] == [expr]
    assert resolve_date(expr, REF) == ms(*expected)


def test_a_backwards_pair_of_days_is_not_a_range() -> None:
    # "28–3 March" is no span of days: only "3 March" is a date
    assert [e for _, _, e in find_date_expressions("rooms 28–3 March")] == ["3 March"]
