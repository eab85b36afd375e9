"""What a generative model is told: the system prompt, a worked example, the document turn.

The table descriptions are rendered from the very schema the grammar is built from
(:func:`sidecar.extractors.schema.describe_schema`), so prompt and grammar cannot disagree.
The worked example holds several records of every table (one task and one note taught the
models to stop after one of each, and no timeline taught them to write none); it is about a
garden club, unlike the user's documents, so copying it shows up as ungrounded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sidecar.extractors.base import ExtractionRequest
from sidecar.extractors.chunking import Chunk
from sidecar.extractors.schema import describe_schema, schema_tables

SYSTEM_PROMPT = """\
You are a data extraction assistant for a freelance project management tool.
Given a document, extract structured records matching the user's instructions.
Output a JSON object {{"items": [{{"table": "<table_name>", "data": {{...fields}}}}, ...]}}.
Allowed table names and their fields:
{table_schemas}
Rules:
- Only extract tables listed in the "data_types" instructions.
- Use camelCase field names exactly as shown above.
- List every record the document holds, in document order: one item per task, note or
  milestone.
- A task is what someone still has to do; a note a decision or fact worth keeping; a
  timeline a dated milestone or scheduled event.
- Write dates as YYYY-MM-DD. Today is {today}.
- Copy titles from the document's own words; omit fields you cannot determine; do not invent.
- Never include id, createdAt, updatedAt, isAiSuggested, or isApproved.
- If nothing relevant is found, return {{"items": []}}.
"""

EXAMPLE_TODAY = "Monday 2030-03-18"
EXAMPLE_DOC = """\
Garden club minutes, 18 March 2030
- Tom to order 20 tulip bulbs by Friday
- Priya will repaint the shed door
- Ask the council about the water meter
We agreed the fence stays green. Membership is now 42 households.
Spring fair on 2030-04-27; seed swap on 2030-05-11.
"""
EXAMPLE_ITEMS: tuple[dict[str, Any], ...] = (
    {"table": "tasks", "data": {"title": "Order 20 tulip bulbs", "assignee": ["Tom"],
                                "dueDate": "2030-03-22"}},
    {"table": "tasks", "data": {"title": "Repaint the shed door", "assignee": ["Priya"]}},
    {"table": "tasks", "data": {"title": "Ask the council about the water meter"}},
    {"table": "notes", "data": {"title": "The fence stays green",
                                "content": "We agreed the fence stays green."}},
    {"table": "notes", "data": {"title": "Membership is now 42 households",
                                "content": "Membership is now 42 households."}},
    {"table": "timelines", "data": {"title": "Spring fair", "date": "2030-04-27"}},
    {"table": "timelines", "data": {"title": "Seed swap", "date": "2030-05-11"}},
)


def example_answer(tables: list[str], schema: Mapping[str, Any]) -> str:
    """The example's records for ``tables``, with only the fields ``schema`` allows, laid out
    the way chat models write JSON (indented: the grammar allows it)."""
    allowed = {table: set(data["properties"]) for table, data in schema_tables(schema).items()}
    shown = [{"table": it["table"],
              "data": {k: v for k, v in it["data"].items() if k in allowed[it["table"]]}}
             for it in EXAMPLE_ITEMS if it["table"] in tables and it["table"] in allowed]
    return json.dumps({"items": shown}, indent=2)


def build_messages(request: ExtractionRequest, chunk: Chunk, n_chunks: int,
                   reference: datetime, schema: Mapping[str, Any], *, example: bool = True
                   ) -> list[dict[str, str]]:
    """System prompt (from ``schema``), the worked example, then this chunk."""
    tables = list(schema_tables(schema))
    msgs = [{"role": "system", "content": SYSTEM_PROMPT.format(
        table_schemas=describe_schema(schema), today=reference.strftime("%A %Y-%m-%d"))}]
    if example:
        msgs += [{"role": "user", "content": f"Extract these record types: {', '.join(tables)}"
                  f"\n\nDocument (dated {EXAMPLE_TODAY}):\n{EXAMPLE_DOC}"},
                 {"role": "assistant", "content": example_answer(tables, schema)}]
    part = f" (part {chunk.index + 1} of {n_chunks})" if n_chunks > 1 else ""
    instructions = request.prompt_template.strip() or "Extract what the user should act on."
    msgs.append({"role": "user", "content": f"User instructions: {instructions}\n\n"
                 f"Extract these record types: {', '.join(tables)}\n\n"
                 f"Document{part}:\n{chunk.text}"})
    return msgs
