"""JSON exports read as tables with names for ids, and their rows become tasks with fields."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from sidecar.extractors.base import ExtractionRequest
from sidecar.extractors.candidates import find_candidates, table_priority
from sidecar.extractors.rules import RulesExtractor
from sidecar.readers import read_document
from sidecar.readers.records import render_json

BOARD = {
    "id": "b0ard0000000000000000001", "name": "Site relaunch",
    "members": [{"id": "5f1e00000000000000000aa1", "fullName": "Rae Okafor"},
                {"id": "5f1e00000000000000000aa2", "fullName": "Jonas Weber"}],
    "lists": [{"id": "1157000000000000000000a1", "name": "To Do", "pos": 1},
              {"id": "1157000000000000000000a2", "name": "Done", "pos": 2}],
    "cards": [
        {"id": "c1", "name": "Send the hosting quote to the client", "idList":
         "1157000000000000000000a1", "idMembers": ["5f1e00000000000000000aa1"],
         "due": "2025-09-12T17:00:00.000Z", "closed": False,
         "labels": [{"id": "l1", "name": "Urgent"}], "pos": 16384},
        {"id": "c2", "name": "Design the new logo", "idList": "1157000000000000000000a2",
         "idMembers": ["5f1e00000000000000000aa2"], "due": None, "closed": False,
         "labels": [], "pos": 32768},
        {"id": "c3", "name": "Book the studio for recording", "idList":
         "1157000000000000000000a1", "idMembers": [], "due": None, "closed": True,
         "labels": [], "pos": 49152},
    ],
}


def test_record_arrays_become_tables_with_names_for_ids() -> None:
    text = "\n".join(render_json(BOARD))
    assert "| Send the hosting quote to the client |" in text
    row = next(line for line in text.splitlines() if "hosting quote" in line)
    assert "Rae Okafor" in row and "To Do" in row and "2025-09-12" in row and "Urgent" in row
    assert "5f1e" not in text and "1157" not in text  # ids resolved or hidden
    assert "16384" not in text  # sort keys are bookkeeping
    assert "name: Site relaunch" in text  # scalars stay key: value lines


def test_json_reader_survives_deep_nesting_and_odd_values(tmp_path: Path) -> None:
    f = tmp_path / "odd.json"
    f.write_text(json.dumps({"a": [1, 2.5, None, True], "b": [{}, {}], "c": [[[[1]]]]}))
    assert "a[1]: 2.5" in read_document(f, max_bytes=10_000_000).text
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + '"leaf"' + "]" * 100_000)
    assert "leaf" in read_document(deep, max_bytes=10_000_000).text  # kept as text


async def test_an_exported_board_gives_tasks_with_owner_due_status_priority(
        tmp_path: Path) -> None:
    f = tmp_path / "board.json"
    f.write_text(json.dumps(BOARD))
    text = read_document(f, max_bytes=10_000_000).text
    result = await RulesExtractor().extract(ExtractionRequest(
        text, data_types=("tasks",), document_date=datetime(2025, 9, 8, 9).astimezone()))
    by_title = {it.data["title"]: it.data for it in result.items}
    quote = by_title["Send the hosting quote to the client"]
    assert json.loads(quote["assignee"]) == ["Rae"] or "Rae" in quote["assignee"]
    assert datetime.fromtimestamp(quote["dueDate"] / 1000).date().isoformat() == "2025-09-12"
    assert quote["priority"] == "high" and quote["status"] == "todo"
    assert by_title["Design the new logo"]["status"] == "done"  # in the Done list
    assert "Book the studio for recording" not in by_title  # archived card


def test_table_status_and_priority_columns() -> None:
    text = ("| Task | Owner | Status | Priority |\n|---|---|---|---|\n"
            "| Write the returns policy page | Ana | Done | Low |\n"
            "| Migrate the products from Etsy | Ben | In progress | High |\n")
    cands = {c.text: c for c in find_candidates(text)}
    assert cands["Write the returns policy page"].checked
    assert cands["Write the returns policy page"].priority == "low"
    assert not cands["Migrate the products from Etsy"].checked
    assert cands["Migrate the products from Etsy"].priority == "high"
    assert table_priority("P1 - must") == "high" and table_priority("whatever") is None
