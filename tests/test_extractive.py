"""The extractive pipeline without a model: candidate spans, evidence, and the records built."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.extractors.base import ExtractionRequest
from sidecar.extractors.candidates import find_candidates
from sidecar.extractors.features import task_evidence
from sidecar.extractors.rules import RulesExtractor

REF = datetime(2026, 11, 25, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # a Wednesday


def texts(doc: str) -> list[str]:
    return [c.text for c in find_candidates(doc)]


def test_shapes_owners_and_labels() -> None:
    doc = ("## Action items\n- [x] Book the venue\n- [ ] Priya: set up staging\n"
           "* Send the deck (owner: Li)\nDecision: we keep the blue logo\n"
           "[10:02] Ana: I'll fix the login bug\n")
    cands = find_candidates(doc)
    by_text = {c.text: c for c in cands}
    assert by_text["Book the venue"].checked and by_text["Book the venue"].shape == "checkbox"
    assert by_text["set up staging"].owner == "Priya"
    assert by_text["Send the deck"].owner == "Li"
    assert (by_text["we keep the blue logo"].label or "").lower() == "decision"
    assert by_text["I'll fix the login bug"].speaker == "Ana"
    for c in cands:
        assert doc[c.start:c.end] == c.text  # spans are the document's own text


def test_greetings_and_abbreviations_do_not_glue_sentences() -> None:
    doc = "Hi Priya,\nCould you send the file?\nThanks, Dana\n\nDr. Patel wants e.g. a map."
    assert texts(doc) == ["Hi Priya", "Could you send the file?", "Thanks, Dana",
                          "Dr. Patel wants e.g. a map."]


@pytest.mark.parametrize(("line", "is_task"), [
    ("Send the signed contract to Maria by Friday", True),
    ("Could you please fix the opening hours before Monday?", True),
    ("Would you mind swapping the stock photo on the Services page?", True),
    ("I'll send over the new team bios by Monday.", True),
    ("Sam to refine concept B with the darker green", True),
    ("Thanks everyone for joining today!", False),
    ("We shipped version 2 last week.", False),
    ("The weather was lovely in Lisbon.", False),
])
def test_task_evidence_direction(line: str, is_task: bool) -> None:
    (cand,) = find_candidates(line)
    # emitted when sigmoid(logit) >= the task threshold 0.5, i.e. logit >= 0
    assert (task_evidence(cand).logit >= 0) is is_task, task_evidence(cand).parts


async def test_records_carry_owner_due_priority_and_status() -> None:
    doc = ("From: Dana Whitfield <dana@bakery.example>\nSubject: Launch\n\n"
           "## Action items\n- [ ] Luis to send the mockups by Friday (urgent)\n"
           "- [x] Collect the brand assets\n\nI'll review the copy tomorrow.\n")
    result = await RulesExtractor().extract(ExtractionRequest(
        text=doc, data_types=("tasks",), document_date=REF))
    by_title = {i.data["title"]: i.data for i in result.items}
    luis = by_title["Luis to send the mockups by Friday (urgent)"]
    assert json.loads(luis["assignee"]) == ["Luis"] and luis["priority"] == "high"
    assert luis["dueDate"] == int(datetime(2026, 11, 27, tzinfo=REF.tzinfo).timestamp() * 1000)
    assert by_title["Collect the brand assets"]["status"] == "done"
    mine = by_title["I'll review the copy tomorrow"]
    assert json.loads(mine["assignee"]) == ["Dana"]  # the email's sender said "I'll"


async def test_timelines_need_a_project_and_a_date() -> None:
    doc = "## Milestones\n- Beta release on December 10, 2026\n"
    without = await RulesExtractor().extract(ExtractionRequest(
        text=doc, data_types=("timelines",), document_date=REF))
    assert without.items == ()
    with_project = await RulesExtractor().extract(ExtractionRequest(
        text=doc, data_types=("timelines",), document_date=REF, project_id="p1"))
    (item,) = with_project.items
    assert item.data["projectId"] == "p1" and isinstance(item.data["date"], int)


@given(st.text(max_size=2000))
def test_candidates_never_raise_and_stay_inside(text: str) -> None:
    for c in find_candidates(text):
        assert 0 <= c.start < c.end <= len(text) and text[c.start:c.end] == c.text


async def test_markdown_table_rows_become_tasks_with_owner_and_due() -> None:
    doc = ("## Actions\n\n| # | Action | Owner | Due |\n|---|---|---|---|\n"
           "| 1 | Update the stamp card designs | Sam | 30 May 2027 |\n"
           "| 2 | Submit the build for review | Ana | 10 June 2027 |\n")
    result = await RulesExtractor().extract(ExtractionRequest(
        text=doc, data_types=("tasks",), document_date=REF))
    by_title = {i.data["title"]: i for i in result.items}
    assert set(by_title) == {"Update the stamp card designs", "Submit the build for review"}
    sam = by_title["Update the stamp card designs"]
    assert json.loads(sam.data["assignee"]) == ["Sam"]
    assert sam.data["dueDate"] == int(datetime(2027, 5, 30, tzinfo=REF.tzinfo).timestamp()
                                      * 1000)
    s, e = sam.source.span  # type: ignore[misc]
    assert doc[s:e] == "Update the stamp card designs"


def test_chat_messages_split_into_sentences_even_in_lower_case() -> None:
    doc = ("[09:12] Nora: the photographer is booked for 2 September. budget for the shoot is "
           "capped at €1,500. ok?\n"
           "Meeting notes. the lower case here is a typo, not a new sentence.\n")
    got = texts(doc)
    assert "the photographer is booked for 2 September." in got
    assert "budget for the shoot is capped at €1,500." in got
    assert "Meeting notes. the lower case here is a typo, not a new sentence." in got


async def test_the_judge_is_asked_about_dated_milestones_only_for_timelines() -> None:
    """A judged run over a plan of dated work items must not ask the model, for timelines,
    about every dated line: only milestones can become timelines (186 spans on a 25 KB
    document cost minutes of model time)."""
    from sidecar.extractors.dates import find_date_expressions, resolve_date
    from sidecar.extractors.extractive import Tuning, extract_extractive

    doc = "\n".join(
        [f"- [ ] Send the invoice draft {i} to the client by 3 December" for i in range(30)]
        + ["", "Launch target: 2 June 2027", "Public launch: 9 June 2027"])
    asked: dict[str, list[str]] = {}

    async def judge(table: str, spans: object, context: str) -> list[float]:
        texts_ = [c.text for c in spans]  # type: ignore[attr-defined]
        asked.setdefault(table, []).extend(texts_)
        return [0.0] * len(texts_)

    tuning = Tuning(ask_low=-50.0, ask_high=50.0)  # every candidate is "unsure": all asked
    await extract_extractive(doc, ["tasks", "timelines"], reference=REF, judge=judge,
                             tuning=tuning, resolve_date=resolve_date,
                             find_dates=find_date_expressions)
    assert len(asked.get("tasks", [])) >= 30  # precondition: the judge really was asked
    timeline_spans = asked.get("timelines", [])
    assert timeline_spans, "milestones are still judged"
    assert not any("invoice" in t for t in timeline_spans), timeline_spans


async def test_the_sender_travels_beside_the_text_not_inside_it() -> None:
    """An email's "I'll …" is its sender's: the name comes with the request (from the reader
    or the source), not from a "From:" line read back out of the text."""
    from sidecar.readers import read_bytes

    body = "Hi team,\n\nI'll send the floor plan to the venue by Thursday.\n"
    bare = ExtractionRequest(text="Subject: Venue\n\n" + body, data_types=("tasks",),
                             document_date=REF)
    told = ExtractionRequest(text=bare.text, data_types=("tasks",), document_date=REF,
                             sender='"Victor Hale" <v@hale.example>')
    (nobody,) = (await RulesExtractor().extract(bare)).items
    (victor,) = (await RulesExtractor().extract(told)).items
    assert "assignee" not in nobody.data  # the text names no one
    assert victor.data["assignee"] == '["Victor"]'
    assert victor.source.span == nobody.source.span  # the same text, the same span
    # from a saved email: the reader's Document carries it, the request takes it as it is
    eml = ("From: Victor Hale <v@hale.example>\nTo: team@x.example\nSubject: Venue\n"
           "Date: Wed, 25 Nov 2026 08:00:00 +0100\n\n" + body).encode()
    doc = read_bytes(eml, name="venue.eml", max_bytes=1 << 20)
    assert (doc.sender, doc.title, doc.kind) == ("Victor Hale <v@hale.example>", "Venue", "eml")
    request = ExtractionRequest.for_document(doc, data_types=("tasks",), label="venue.eml")
    assert (request.sender, request.title, request.kind, request.document_date) == (
        doc.sender, "Venue", "eml", doc.date)
    (task,) = (await RulesExtractor().extract(request)).items
    assert task.data["assignee"] == '["Victor"]'
