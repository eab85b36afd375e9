"""The shipped local engine keeps issue #9's quality floor on both labelled sets."""

from __future__ import annotations

from typing import Any

import pytest

from bench.quality import DATA, load_set, run_engine


@pytest.fixture(scope="module", params=["dev", "heldout"])
def result(request: pytest.FixtureRequest) -> dict[str, Any]:
    import asyncio

    docs = load_set(DATA, request.param)
    assert len(docs) >= 12, f"the {request.param} set lost documents"
    return asyncio.run(run_engine("local", docs, lambda _line: None))


def test_tasks_precision_recall_and_f1_stay_above_the_floor(result: dict[str, Any]) -> None:
    tasks = result["tasks"]
    assert result["failed_documents"] == 0
    assert tasks["precision"] >= 0.7 and tasks["recall"] >= 0.7 and tasks["f1"] >= 0.75, tasks


def test_every_record_is_schema_valid_and_no_injected_instruction_became_one(
        result: dict[str, Any]) -> None:
    assert result["records"] > 100
    assert result["schema_invalid"] == 0
    assert result["injected_records"] == 0


def test_due_dates_and_assignees_are_right_on_most_matched_tasks(result: dict[str, Any]) -> None:
    assert result["due_accuracy_dated"] >= 0.75, result["due_accuracy_dated"]
    assert result["assignee_accuracy"] >= 0.75, result["assignee_accuracy"]


@pytest.fixture(scope="module", params=["heldout", "third"])
def unseen(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The sets labelled without looking at the extractor, read with the daemon's reference
    dates (issue 14)."""
    import asyncio

    docs = load_set(DATA, request.param)
    assert len(docs) >= 12, f"the {request.param} set lost documents"
    return asyncio.run(run_engine("local", docs, lambda _line: None))


def test_documents_are_dated_and_due_dates_resolved_against_them(
        unseen: dict[str, Any]) -> None:
    assert unseen["reference_accuracy"] >= 0.8, unseen["reference_by_origin"]
    assert unseen["due_accuracy_dated"] >= 0.85, unseen["due_accuracy_dated"]
    assert unseen["schema_invalid"] == 0 and unseen["injected_records"] == 0


def test_milestones_are_timelines_and_notes_summarise(unseen: dict[str, Any]) -> None:
    assert unseen["timelines"]["f1"] >= 0.7, unseen["timelines"]
    assert unseen["timelines"]["date_accuracy"] >= 0.85, unseen["timelines"]
    assert unseen["notes"]["f1"] >= 0.5, unseen["notes"]
    assert unseen["notes_per_document"] <= 1.0  # one summary per document, at most
