"""The seed's table contract: stripping, defaults, enums, dates, required fields, JSON Schema."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from sidecar.extractors.schema import (
    FORBIDDEN_FIELDS,
    InvalidItem,
    allowed_tables,
    json_schema_for,
    normalize_item,
    schema_text,
)

REF = datetime(2026, 11, 25, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))


def test_forbidden_and_unknown_fields_are_stripped() -> None:
    data = {"title": "Send invoice", "id": "x", "createdAt": 1, "updatedAt": 2,
            "isAiSuggested": 0, "isApproved": 1, "color": "red"}
    out = normalize_item("tasks", data, reference=REF)
    assert not set(FORBIDDEN_FIELDS) & set(out)
    assert "color" not in out
    assert out == {"title": "Send invoice", "status": "todo", "priority": "medium"}


@pytest.mark.parametrize(("raw", "status"), [
    ("In Progress", "in_progress"), ("completed", "done"), ("TODO", "todo"),
    ("weird", "todo"), (None, "todo")])
def test_status_is_canonicalised_or_defaulted(raw: str | None, status: str) -> None:
    assert normalize_item("tasks", {"title": "t", "status": raw}, reference=REF)["status"] == status


def test_priority_synonyms() -> None:
    assert normalize_item("tasks", {"title": "t", "priority": "URGENT"},
                          reference=REF)["priority"] == "high"


@pytest.mark.parametrize(("raw", "expected"), [
    (["Ana", "Bo"], ["Ana", "Bo"]), ("Ana, Bo", ["Ana", "Bo"]), ('["Ana"]', ["Ana"]),
    ("Ana and Bo", ["Ana", "Bo"]), ("Ana", ["Ana"])])
def test_assignee_becomes_a_json_array_string(raw: object, expected: list[str]) -> None:
    out = normalize_item("tasks", {"title": "t", "assignee": raw}, reference=REF)
    assert json.loads(out["assignee"]) == expected


def test_dates_become_ms_timestamps() -> None:
    out = normalize_item("tasks", {"title": "t", "dueDate": "2026-12-01"}, reference=REF)
    assert out["dueDate"] == int(datetime(2026, 12, 1, tzinfo=ZoneInfo("Europe/Berlin"))
                                 .timestamp() * 1000)
    out = normalize_item("tasks", {"title": "t", "dueDate": "not a date"}, reference=REF)
    assert "dueDate" not in out


@pytest.mark.parametrize(("table", "data"), [
    ("tasks", {"description": "no title"}), ("tasks", {"title": "   "}),
    ("timelines", {"title": "Launch"}), ("taskComments", {"content": "no task"}),
    ("projects", {"clientId": "c1"}), ("users", {"title": "x"})])
def test_required_fields_and_tables(table: str, data: dict) -> None:
    with pytest.raises(InvalidItem):
        normalize_item(table, data, reference=REF)


def test_project_id_is_filled_from_the_agent() -> None:
    out = normalize_item("timelines", {"title": "Launch", "date": "2026-12-18"},
                         reference=REF, project_id="p1")
    assert out["projectId"] == "p1"


def test_schema_text_follows_the_grammars_schema() -> None:
    text = schema_text(["notes", "tasks", "bogus"])
    assert "tasks: title (str, required)" in text and "notes: title" in text
    assert "projectId" not in text  # the grammar leaves it out unless required
    assert "timelines: title (str, required), projectId (str, required), date (date " \
        "YYYY-MM-DD)" == schema_text(["timelines"], require_project=True).strip()
    assert allowed_tables(["notes", "tasks", "bogus"]) == ["tasks", "notes"]


def test_json_schema_limits_tables() -> None:
    schema = json_schema_for(["tasks"])
    item = schema["properties"]["items"]["items"]
    assert item["properties"]["table"]["enum"] == ["tasks"]
    assert item["properties"]["data"]["required"] == ["title"]
    both = json_schema_for(["tasks", "notes"])
    assert len(both["properties"]["items"]["items"]["anyOf"]) == 2
