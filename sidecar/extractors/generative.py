"""Generative extraction for capable models: JSON records under a schema, chunk by chunk.

Shared by the local engine (llama.cpp grammar built from the JSON Schema) and the remote
engine (``response_format``). The prompt keeps the seed's rules; the differences are that
documents are chunked instead of truncated, dates are asked for as ``YYYY-MM-DD`` against an
explicit "today", and every item is grounded back to the document.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sidecar.errors import PermanentError, SidecarError
from sidecar.extractors.base import ExtractedItem, ExtractionProblem, ExtractionRequest
from sidecar.extractors.chunking import Chunk, chunk_text
from sidecar.extractors.grounding import confidence_for, ground
from sidecar.extractors.schema import allowed_tables, json_schema_for, schema_text

SYSTEM_PROMPT = """\
You are a data extraction assistant for a freelance project management tool.
Given a document, extract structured records matching the user's instructions.
Output a JSON object {{"items": [{{"table": "<table_name>", "data": {{...fields}}}}, ...]}}.
Allowed table names and their fields:
{table_schemas}
Rules:
- Only extract tables listed in the "data_types" instructions.
- Use camelCase field names exactly as shown above.
- Write dates as YYYY-MM-DD. Today is {today}.
- Copy titles from the document's own words; omit fields you cannot determine; do not invent.
- Never include id, createdAt, updatedAt, isAiSuggested, or isApproved.
- If nothing relevant is found, return {{"items": []}}.
"""

#: One worked example, deliberately unlike real documents so it is not copied into them.
EXAMPLE_DOC = "Garden club minutes\n- Tom to order 20 tulip bulbs by 2030-04-02\nWe agreed the " \
    "fence stays green."
EXAMPLE_OUT = {"items": [
    {"table": "tasks", "data": {"title": "Order 20 tulip bulbs", "assignee": ["Tom"],
                                "dueDate": "2030-04-02"}},
    {"table": "notes", "data": {"title": "The fence stays green",
                                "content": "We agreed the fence stays green."}}]}

#: Characters per token, conservatively, for budgeting chunks into a context window.
CHARS_PER_TOKEN = 3.2


class Completer(Protocol):
    """One chat completion that must return JSON text matching ``schema``."""

    async def complete(self, messages: list[dict[str, str]], schema: dict[str, Any],
                       max_tokens: int) -> str: ...


def build_messages(request: ExtractionRequest, chunk: Chunk, n_chunks: int,
                   reference: datetime) -> list[dict[str, str]]:
    tables = allowed_tables(request.data_types)
    system = SYSTEM_PROMPT.format(table_schemas=schema_text(tables),
                                  today=reference.strftime("%A %Y-%m-%d"))
    example_tables = [t for t in ("tasks", "notes") if t in tables]
    msgs = [{"role": "system", "content": system}]
    if example_tables:
        example = {"items": [i for i in EXAMPLE_OUT["items"] if i["table"] in example_tables]}
        msgs += [{"role": "user", "content": f"Extract these record types: "
                  f"{', '.join(example_tables)}\n\nDocument:\n{EXAMPLE_DOC}"},
                 {"role": "assistant", "content": json.dumps(example)}]
    part = f" (part {chunk.index + 1} of {n_chunks})" if n_chunks > 1 else ""
    instructions = request.prompt_template.strip() or "Extract what the user should act on."
    msgs.append({"role": "user", "content": f"User instructions: {instructions}\n\n"
                 f"Extract these record types: {', '.join(tables)}\n\n"
                 f"Document{part}:\n{chunk.text}"})
    return msgs


def parse_items(raw: str) -> list[dict[str, Any]]:
    """``{"items": [...]}`` or a bare list (older servers ignore the schema); else ValueError."""
    text = raw.strip()
    fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.S)
    if fence:
        text = fence.group(1)
    parsed = json.loads(text)
    if isinstance(parsed, dict):
        parsed = parsed.get("items", parsed.get("records"))
    if not isinstance(parsed, list):
        raise ValueError("the model's JSON has no items array")
    return [i for i in parsed if isinstance(i, dict)]


def _quote_of(data: dict[str, Any]) -> str:
    for key in ("title", "name", "content"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def to_items(raw_items: Sequence[dict[str, Any]], chunk: Chunk, allowed: set[str]
             ) -> list[ExtractedItem]:
    out = []
    for obj in raw_items:
        table, data = obj.get("table"), obj.get("data")
        if not isinstance(table, str) or table not in allowed or not isinstance(data, dict):
            continue
        g = ground(_quote_of(data), chunk.text, chunk.start)
        out.append(ExtractedItem(table, data, g, confidence_for(g)))
    return out


def chunk_budget(n_ctx: int, max_output_tokens: int) -> int:
    """Characters of document per chunk so prompt + document + answer fit ``n_ctx``."""
    prompt_tokens = 700
    return max(400, int((n_ctx - prompt_tokens - max_output_tokens) * CHARS_PER_TOKEN))


async def extract_generative(completer: Completer, request: ExtractionRequest,
                             reference: datetime, *, n_ctx: int, max_output_tokens: int = 768,
                             concurrency: int = 1
                             ) -> tuple[list[ExtractedItem], list[ExtractionProblem], int]:
    """Items from every chunk, in document order; per-chunk failures become problems."""
    chunks = chunk_text(request.text, chunk_budget(n_ctx, max_output_tokens))
    schema = json_schema_for(request.data_types, require_project=False)
    allowed = set(allowed_tables(request.data_types))
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(chunk: Chunk) -> tuple[list[ExtractedItem], ExtractionProblem | None]:
        async with sem:
            try:
                raw = await completer.complete(
                    build_messages(request, chunk, len(chunks), reference), schema,
                    max_output_tokens)
            except PermanentError:
                raise
            except SidecarError as exc:
                return [], ExtractionProblem(chunk.index, str(exc), transient=True)
        try:
            return to_items(parse_items(raw), chunk, allowed), None
        except ValueError as exc:
            return [], ExtractionProblem(chunk.index, f"invalid JSON from the model: {exc}; "
                                         f"output began {raw[:120]!r}")

    results = await asyncio.gather(*(one(c) for c in chunks))
    items = [it for its, _ in results for it in its]
    problems = [pr for _, pr in results if pr is not None]
    items.sort(key=lambda it: it.source.span or (len(request.text), 0))
    return items, problems, len(chunks)


class LlamaCompleter:
    """Chat completion on the local runtime, decoding under the schema's grammar."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    async def complete(self, messages: list[dict[str, str]], schema: dict[str, Any],
                       max_tokens: int) -> str:
        def run(llm: Any) -> str:
            out = llm.create_chat_completion(
                messages=messages, temperature=0.0, max_tokens=max_tokens, seed=0,
                response_format={"type": "json_object", "schema": schema})
            choice = out["choices"][0]
            text = choice["message"]["content"] or ""
            if choice.get("finish_reason") == "length":
                raise SidecarError(f"the model's answer hit max_tokens ({max_tokens})",
                                   code="truncated")
            return text

        return await self.runtime.call(run)
