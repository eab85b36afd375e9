"""Long documents are covered, not truncated; generated items are traced back to their text."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from sidecar.extractors.chunking import chunk_text
from sidecar.extractors.generative import parse_items
from sidecar.extractors.grounding import ground


def test_short_text_is_one_chunk() -> None:
    assert [c.text for c in chunk_text("hello", 100)] == ["hello"]
    assert chunk_text("", 100) == []


def test_long_text_is_fully_covered_at_line_boundaries() -> None:
    lines = [f"Line {i}: send report number {i} to the client." for i in range(2000)]
    text = "\n".join(lines)
    chunks = chunk_text(text, 4000, overlap_chars=200)
    assert len(chunks) > 10
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for a, b in itertools.pairwise(chunks):
        assert b.start <= a.end, "gap between chunks"
        assert text[b.start - 1] == "\n", "chunks start at a line"
    for c in chunks:
        assert text[c.start:c.end] == c.text and len(c.text) <= 4000
    assert "Line 1999" in chunks[-1].text


@given(st.text(min_size=0, max_size=3000), st.integers(min_value=50, max_value=500))
def test_chunks_cover_any_text(text: str, size: int) -> None:
    chunks = chunk_text(text, size, overlap_chars=30)
    covered = 0
    for c in chunks:
        assert c.start <= covered and len(c.text) <= size
        covered = max(covered, c.end)
    assert covered == len(text)


def test_exact_grounding_ignores_case_and_whitespace() -> None:
    text = "Intro\n- Send  the Contract to Maria\n"
    g = ground("send the contract to maria", text, offset=100)
    assert g.exact and g.span is not None
    assert text[g.span[0] - 100:g.span[1] - 100] == "Send  the Contract to Maria"


def test_fuzzy_grounding_and_no_grounding() -> None:
    text = "Agenda\nPlease send the signed contract to Maria by Friday.\nThanks"
    g = ground("Send signed contract to Maria", text)
    assert g.span is not None and not g.exact
    assert "signed contract" in (g.quote or "")
    assert ground("Buy a boat", text).span is None


def test_parse_items_accepts_object_list_and_fences() -> None:
    assert parse_items('{"items": [{"table": "tasks", "data": {}}]}')[0]["table"] == "tasks"
    assert parse_items('[{"table": "notes", "data": {}}]')[0]["table"] == "notes"
    assert parse_items('```json\n{"items": []}\n```') == []
    for bad in ('{"items": 3}', "not json", '{"items": [1, 2'):
        try:
            parse_items(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_title_choices_are_the_lines_without_markers_or_headings() -> None:
    from sidecar.extractors.generative import title_choices

    text = ("# Kickoff\n## Action items\n- [ ] Lena to send the quote\n* [x] Book the room\n"
            "1. Call the printer\n> - Quoted line here\n\n- ok\n- [ ] Lena to send the quote\n")
    assert title_choices(text) == ["Lena to send the quote", "Book the room",
                                   "Call the printer", "Quoted line here"]
    long = "We met for an hour. " * 12 + "Lena will send the quote by Friday."
    assert "Lena will send the quote by Friday." in title_choices(long)


def test_chunk_schema_limits_titles_to_the_chunk_when_they_fit() -> None:
    from sidecar.extractors.chunking import Chunk
    from sidecar.extractors.generative import chunk_schema
    from sidecar.extractors.schema import json_schema_for

    schema = json_schema_for(("tasks", "notes"))
    small = chunk_schema(schema, Chunk(0, 0, "- Send the quote\n- The fence stays green\n"))
    for variant in small["properties"]["items"]["items"]["anyOf"]:
        assert variant["properties"]["data"]["properties"]["title"]["enum"] == [
            "Send the quote", "The fence stays green"]
    assert small["properties"]["items"]["maxItems"] == 2
    for variant in schema["properties"]["items"]["items"]["anyOf"]:  # the shared one is intact
        assert "enum" not in variant["properties"]["data"]["properties"]["title"]
    many = "\n".join(f"Line number {i} of a long export" for i in range(300))
    assert chunk_schema(schema, Chunk(0, 0, many)) == schema  # past what servers take


def test_a_truncated_answer_keeps_its_complete_items() -> None:
    whole = '{"table": "tasks", "data": {"title": "Send the quote"}}'
    assert parse_items('{"items": [' + whole + ", " + whole[:20]) == [
        {"table": "tasks", "data": {"title": "Send the quote"}}]
    assert parse_items("[" + whole + "," + whole + ', {"ta') == [
        {"table": "tasks", "data": {"title": "Send the quote"}}] * 2
    for hopeless in ('{"items": [{"table": "tas', "Sure! Here are the items:"):
        try:
            parse_items(hopeless)
        except ValueError:
            continue
        raise AssertionError(hopeless)
