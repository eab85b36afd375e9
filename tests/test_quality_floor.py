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
