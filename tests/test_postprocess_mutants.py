"""Postprocess, edge by edge (issue 19): thresholds, horizon bounds, stale cut-offs, held
timelines and de-duplication, each with its boundary on both sides. Expected values are
written by hand from a calendar; none is computed by the code under test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from sidecar.extractors.base import (
    ExtractedRecord,
    ExtractionProblem,
    ExtractionRequest,
    Grounding,
)
from sidecar.extractors.postprocess import (
    finalize,
    held_message,
    reference_date,
    reference_meta,
    stale_before,
)

REF = datetime(2026, 6, 1, tzinfo=UTC)  # a Monday
ALL = ("tasks", "notes", "timelines", "projects", "taskComments")
NOWHERE = Grounding(span=None)


def ms(*ymd_hms: int) -> int:
    """Epoch ms of a UTC wall-clock time (datetime arithmetic, not the code under test)."""
    return int(datetime(*ymd_hms, tzinfo=UTC).timestamp()) * 1000  # type: ignore[misc]


def item(table: str, confidence: float = 0.9, reference: dict[str, str] | None = None,
         **data: Any) -> ExtractedRecord:
    return ExtractedRecord(table, data, NOWHERE, confidence, reference)


def run(items: list[ExtractedRecord], **request: Any
        ) -> tuple[list[ExtractedRecord], list[ExtractionProblem]]:
    req = ExtractionRequest(text="x", data_types=request.pop("data_types", ALL), **request)
    problems: list[ExtractionProblem] = []
    return finalize(items, req, REF, problems), problems


# -- reference date and its meta ----------------------------------------------------------

def test_a_naive_document_date_becomes_that_local_wall_clock_time() -> None:
    naive = datetime(2026, 3, 10, 9, 30)
    got = reference_date(ExtractionRequest(text="", data_types=(), document_date=naive))
    assert got.tzinfo is not None
    assert got.replace(tzinfo=None) == naive


def test_an_aware_document_date_keeps_its_own_offset() -> None:
    plus5 = datetime(2026, 3, 10, 9, 30, tzinfo=timezone(timedelta(hours=5)))
    got = reference_date(ExtractionRequest(text="", data_types=(), document_date=plus5))
    assert got.utcoffset() == timedelta(hours=5)
    assert (got.hour, got.minute) == (9, 30)


def test_no_document_date_means_now_in_local_time() -> None:
    before = datetime.now(UTC)
    got = reference_date(ExtractionRequest(text="", data_types=()))
    after = datetime.now(UTC)
    assert got.tzinfo is not None
    assert before <= got <= after


@pytest.mark.parametrize(("document_date", "origin", "expected"), [
    (None, None, "now"),
    (REF, None, "document"),
    (REF, "email", "email"),
    (None, "mtime", "mtime"),
])
def test_reference_meta_says_where_the_date_came_from(
        document_date: datetime | None, origin: str | None, expected: str) -> None:
    req = ExtractionRequest(text="", data_types=(), document_date=document_date,
                            date_origin=origin)
    at = datetime(2026, 3, 10, 9, 30, 45, tzinfo=UTC)
    assert reference_meta(req, at) == {"date": "2026-03-10T09:30+00:00", "origin": expected}


# -- stale_before and held_message ---------------------------------------------------------

@pytest.mark.parametrize(("days", "first_run", "expected"), [
    (30, True, datetime(2026, 5, 2, tzinfo=UTC)),
    (1, True, datetime(2026, 5, 31, tzinfo=UTC)),
    (0, True, None),
    (-5, True, None),
    (30, False, None),
])
def test_stale_before_is_the_lookback_start_on_a_first_run_only(
        days: int, first_run: bool, expected: datetime | None) -> None:
    assert stale_before(REF, days, first_run=first_run) == expected


def test_held_message_for_one_timeline_is_singular() -> None:
    assert held_message(["Launch"]) == (
        "1 timeline held: no project (set the agent's project to receive them): Launch")


def test_held_message_for_five_lists_all_without_an_ellipsis() -> None:
    assert held_message(["a", "b", "c", "d", "e"]) == (
        "5 timelines held: no project (set the agent's project to receive them): "
        "a; b; c; d; e")


def test_held_message_for_six_lists_five_then_an_ellipsis_and_clips_titles() -> None:
    long = "x" * 61
    assert held_message([long, "b", "c", "d", "e", "f"]) == (
        "6 timelines held: no project (set the agent's project to receive them): "
        + "x" * 60 + "; b; c; d; e; …")


# -- finalize: tables, thresholds and clamping ---------------------------------------------

def test_only_the_agents_data_types_pass() -> None:
    out, _ = run([item("tasks", title="Ship"), item("notes", title="Minutes")],
                 data_types=("notes",))
    assert [(i.table, i.data["title"]) for i in out] == [("notes", "Minutes")]


def test_confidence_equal_to_the_threshold_passes_and_below_does_not() -> None:
    out, _ = run([item("tasks", 0.5, title="At"), item("tasks", 0.49, title="Below")],
                 min_confidence=0.5)
    assert [i.data["title"] for i in out] == ["At"]


def test_confidence_is_clamped_into_zero_to_one() -> None:
    out, _ = run([item("tasks", 1.5, title="High"), item("tasks", -0.5, title="Low"),
                  item("tasks", 0.25, title="Mid")], min_confidence=-1.0)
    assert [(i.data["title"], i.confidence) for i in out] == [
        ("High", 1.0), ("Low", 0.0), ("Mid", 0.25)]


def test_an_item_keeps_its_own_reference_else_gets_the_documents() -> None:
    own = {"date": "2026-01-02T00:00+00:00", "origin": "email"}
    out, _ = run([item("tasks", reference=own, title="Own"), item("tasks", title="Doc")],
                 document_date=REF)
    assert [dict(i.reference or {}) for i in out] == [
        own, {"date": "2026-06-01T00:00+00:00", "origin": "document"}]


def test_an_invalid_item_is_reported_and_the_rest_pass() -> None:
    out, problems = run([item("tasks", description="no title"), item("tasks", title="Ok")])
    assert [i.data["title"] for i in out] == ["Ok"]
    assert problems == [ExtractionProblem(
        chunk=None, message="tasks: required field 'title' is missing or invalid")]


def test_normalised_data_is_what_comes_out() -> None:
    out, _ = run([item("tasks", title="  Ship  ", status="completed", projectId="p9",
                       dueDate="2026-06-05")])
    assert [dict(i.data) for i in out] == [{
        "title": "Ship", "status": "done", "priority": "medium", "dueDate": ms(2026, 6, 5),
        "projectId": "p9"}]
    assert out[0].source is NOWHERE


# -- notes without a title ------------------------------------------------------------------

@pytest.mark.parametrize(("label", "title"), [
    ("/docs/weekly_sync notes.md", "weekly sync notes"),
    ("", "Notes"),
    ("/docs/__.md", "Notes"),
])
@pytest.mark.parametrize("given", [None, "", "   "])
def test_a_note_without_a_title_is_named_for_its_file(label: str, title: str,
                                                      given: str | None) -> None:
    out, _ = run([item("notes", title=given, content="body")], label=label)
    assert [dict(i.data) for i in out] == [{"title": title, "content": "body"}]


def test_a_note_with_a_title_keeps_it() -> None:
    out, _ = run([item("notes", title="Retro", content="body")], label="/docs/x_y.md")
    assert [i.data["title"] for i in out] == ["Retro"]


def test_a_task_without_a_title_is_not_given_the_file_name() -> None:
    out, problems = run([item("tasks", description="d")], label="/docs/plan.md")
    assert out == [] and len(problems) == 1


# -- the horizon: a year back, three ahead ------------------------------------------------

@pytest.mark.parametrize(("due", "kept"), [
    ("2025-05-31T00:00:00Z", True),   # exactly 366 days before
    ("2025-05-30T23:59:59Z", False),
    ("2029-06-03T00:00:00Z", True),   # exactly 3 * 366 days after
    ("2029-06-03T00:00:01Z", False),
])
def test_a_task_due_outside_the_horizon_loses_its_due_date_only(due: str, kept: bool) -> None:
    out, _ = run([item("tasks", title="Ship", dueDate=due)])
    assert len(out) == 1
    assert ("dueDate" in out[0].data) is kept


@pytest.mark.parametrize(("when", "kept"), [
    ("2025-05-31T00:00:00Z", True),
    ("2025-05-30T23:59:59Z", False),
    ("2029-06-03T00:00:00Z", True),
    ("2029-06-03T00:00:01Z", False),
])
def test_a_timeline_outside_the_horizon_is_dropped(when: str, kept: bool) -> None:
    out, problems = run([item("timelines", title="Launch", date=when)], project_id="p1")
    assert [i.data["title"] for i in out] == (["Launch"] if kept else [])
    assert problems == []


def test_a_timeline_without_a_date_is_kept() -> None:
    out, _ = run([item("timelines", title="Launch")], project_id="p1")
    assert [dict(i.data) for i in out] == [{"title": "Launch", "projectId": "p1"}]


# -- timelines held for want of a project --------------------------------------------------

def test_timelines_without_a_project_are_held_and_reported_once() -> None:
    out, problems = run([item("timelines", title="Launch", date="2026-07-01"),
                         item("timelines", title="Beta", date="2026-08-01"),
                         item("tasks", title="Ship")])
    assert [i.table for i in out] == ["tasks"]
    assert problems == [ExtractionProblem(chunk=None, message=(
        "2 timelines held: no project (set the agent's project to receive them): "
        "Launch; Beta"))]


def test_a_timeline_naming_its_own_project_is_not_held() -> None:
    out, problems = run([item("timelines", title="Launch", projectId="p7")])
    assert [dict(i.data) for i in out] == [{"title": "Launch", "projectId": "p7"}]
    assert problems == []


def test_the_agents_project_fills_a_timeline() -> None:
    out, problems = run([item("timelines", title="Launch")], project_id="p2")
    assert [dict(i.data) for i in out] == [{"title": "Launch", "projectId": "p2"}]
    assert problems == []


def test_a_held_timeline_outside_the_horizon_is_dropped_not_held() -> None:
    out, problems = run([item("timelines", title="Old", date="2020-01-01")])
    assert out == [] and problems == []


def test_an_invalid_held_timeline_is_reported_as_invalid_not_held() -> None:
    out, problems = run([item("timelines", date="2026-07-01")])
    assert out == []
    assert [p.message for p in problems] == [
        "timelines: required field 'title' is missing or invalid"]


def test_only_timelines_are_held() -> None:
    out, problems = run([item("notes", title="Minutes"), item("tasks", title="Ship")])
    assert [dict(i.data) for i in out] == [
        {"title": "Minutes"}, {"title": "Ship", "status": "todo", "priority": "medium"}]
    assert problems == []


# -- a first run's stale cut-off -----------------------------------------------------------

def test_a_document_older_than_the_cutoff_gives_no_tasks_or_timelines() -> None:
    out, _ = run([item("tasks", title="Ship"), item("timelines", title="Launch"),
                  item("notes", title="Minutes")], project_id="p1",
                 stale_before=REF + timedelta(seconds=1))
    assert [i.table for i in out] == ["notes"]


def test_a_document_dated_at_the_cutoff_counts() -> None:
    out, _ = run([item("tasks", title="Ship"), item("timelines", title="Launch")],
                 project_id="p1", stale_before=REF)
    assert [i.table for i in out] == ["tasks", "timelines"]


@pytest.mark.parametrize(("due", "kept"), [
    ("2026-05-01T00:00:00Z", True),   # exactly at the cut-off
    ("2026-04-30T23:59:59Z", False),
    (None, True),                     # no due date: nothing says it is stale
])
def test_a_task_due_before_the_cutoff_is_dropped(due: str | None, kept: bool) -> None:
    out, _ = run([item("tasks", title="Ship", dueDate=due)],
                 stale_before=datetime(2026, 5, 1, tzinfo=UTC))
    assert [i.data["title"] for i in out] == (["Ship"] if kept else [])


def test_the_cutoff_does_not_apply_to_timelines_dates() -> None:
    out, _ = run([item("timelines", title="Launch", date="2026-04-01")], project_id="p1",
                 stale_before=datetime(2026, 5, 1, tzinfo=UTC))
    assert [i.data["title"] for i in out] == ["Launch"]


def test_without_a_cutoff_an_old_due_date_in_the_horizon_counts() -> None:
    out, _ = run([item("tasks", title="Ship", dueDate="2025-07-01")])
    assert [dict(i.data)["dueDate"] for i in out] == [ms(2025, 7, 1)]


# -- de-duplication --------------------------------------------------------------------------

def test_duplicates_differ_only_in_case_and_spacing() -> None:
    out, _ = run([item("tasks", title="Send the  deck"), item("tasks", title="send THE deck"),
                  item("tasks", title="Send the deck now")])
    assert [i.data["title"] for i in out] == ["Send the  deck", "Send the deck now"]


def test_the_same_title_in_two_tables_is_two_records() -> None:
    out, _ = run([item("tasks", title="Launch"), item("notes", title="Launch")])
    assert [i.table for i in out] == ["tasks", "notes"]


def test_projects_are_told_apart_by_name_and_comments_by_content() -> None:
    out, _ = run([item("projects", name="Apollo"), item("projects", name="apollo"),
                  item("projects", name="Gemini"),
                  item("taskComments", taskId="t1", content="Looks good"),
                  item("taskComments", taskId="t2", content="LOOKS good"),
                  item("taskComments", taskId="t1", content="Ship it")])
    assert [(i.table, i.data.get("name") or i.data.get("content")) for i in out] == [
        ("projects", "Apollo"), ("projects", "Gemini"),
        ("taskComments", "Looks good"), ("taskComments", "Ship it")]


def test_dedup_folds_case_the_lower_case_way() -> None:
    """"Straße" and "Strasse" are two words (upper-casing would fold both to STRASSE)."""
    out, _ = run([item("tasks", title="Straße"), item("tasks", title="Strasse")])
    assert [i.data["title"] for i in out] == ["Straße", "Strasse"]


# -- a dropped item never stops the ones after it ----------------------------------------

def test_items_after_a_dropped_one_are_still_read() -> None:
    out, problems = run([
        item("tasks", 0.1, title="Unsure"),                        # below the threshold
        item("projects", name="Apollo"),                           # not an agent data type
        item("tasks", title="Bad", dueDate="2026-04-30"),          # stale on a first run
        item("timelines", title="Old", date="2020-01-01"),         # outside the horizon
        item("timelines", title="Launch", date="2026-07-01"),
        item("timelines", date="2026-07-01"),                      # invalid
        item("tasks", title="Ship"),
        item("tasks", title="ship"),                               # duplicate
        item("notes", title="Minutes")],
        data_types=("tasks", "timelines", "notes"), min_confidence=0.5, project_id="p1",
        stale_before=datetime(2026, 5, 1, tzinfo=UTC))
    assert [(i.table, i.data["title"]) for i in out] == [
        ("timelines", "Launch"), ("tasks", "Ship"), ("notes", "Minutes")]
    assert [p.message for p in problems] == [
        "timelines: required field 'title' is missing or invalid"]
