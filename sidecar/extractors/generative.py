"""Generative extraction for capable models: JSON records under a schema, chunk by chunk.

Shared by the local engine (llama.cpp grammar built from the JSON Schema) and the remote
engine (``response_format``). The prompt keeps the seed's rules; the differences are that
documents are chunked instead of truncated, dates are asked for as ``YYYY-MM-DD`` against an
explicit "today", and every item is grounded back to the document.

When the server decodes under the schema, each chunk's schema limits titles to the chunk's own
lines (an ``enum``): measured with SmolLM2-135M, free titles were invented or copied from the
worked example (recall 0 on the contract document), chosen lines were real records. The
example is then left out (the grammar teaches the shape). Parsing, grounding and validation
run in a worker thread: a long document's post-processing never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from sidecar.errors import PermanentError, SidecarError
from sidecar.extractors.base import ExtractedItem, ExtractionProblem, ExtractionRequest
from sidecar.extractors.chunking import Chunk, chunk_text
from sidecar.extractors.grounding import confidence_for, ground
from sidecar.extractors.offload import on_cpu_thread
from sidecar.extractors.postprocess import finalize
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
#: Title enums stay within what strict servers take (OpenAI: 500 values, 7,500 characters).
ENUM_MAX_VALUES = 200
ENUM_MAX_CHARS = 7000
_MARKER = re.compile(r"^\s*(?:>\s*)*(?:#{1,6}\s+|[-*+\u2022]\s+|\d{1,3}[.)]\s+)?"
                     r"(?:\[[ xX]\]\s*)?")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\u00c0-\u00dd])")


#: ``prompt(enforced)`` -> (messages, schema) for a request the server decodes under the
#: schema (``enforced``) or only reads: a completer that steps down a format asks again.
Prompt = Callable[[bool], tuple[list[dict[str, str]], dict[str, Any]]]


class Completer(Protocol):
    """One chat completion that must return JSON text matching the prompt's schema."""

    async def complete(self, prompt: Prompt, max_tokens: int) -> str: ...


def title_choices(text: str) -> list[str]:
    """The chunk's lines (long ones as sentences), markers stripped: what a title may be.

    Headings are left out: they name sections, not records (the 135M model picks them).
    """
    out: list[str] = []
    seen: set[str] = set()
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        line = _MARKER.sub("", raw).strip()
        parts = _SENTENCE.split(line) if len(line) > 200 else [line]
        for part in parts:
            part = part.strip()[:200].strip()
            if len(part) > 3 and part not in seen:
                seen.add(part)
                out.append(part)
    return out


def chunk_schema(schema: dict[str, Any], chunk: Chunk) -> dict[str, Any]:
    """``schema`` with titles limited to the chunk's lines, when they fit an enum.

    The record is then the line itself: free-text ``description``/``content`` are left out
    (SmolLM2-135M spent most of its tokens inventing them).
    """
    choices = title_choices(chunk.text)
    if not choices or len(choices) > ENUM_MAX_VALUES or sum(map(len, choices)) > ENUM_MAX_CHARS:
        return schema
    out = json.loads(json.dumps(schema))
    # a line is at most one record: a model repeating itself stops at the last line
    out["properties"]["items"]["maxItems"] = min(out["properties"]["items"]["maxItems"],
                                                 len(choices))
    item = out["properties"]["items"]["items"]
    for variant in item.get("anyOf", [item]):
        props = variant["properties"]["data"]["properties"]
        for key in ("title", "name"):
            if key in props:
                props[key] = {"type": "string", "enum": choices}
        required = variant["properties"]["data"].get("required", [])
        for key in ("description", "content"):  # where small models ramble
            if key in props and key not in required and "title" in props:
                del props[key]
    return out


def build_messages(request: ExtractionRequest, chunk: Chunk, n_chunks: int,
                   reference: datetime, *, example: bool = True) -> list[dict[str, str]]:
    tables = allowed_tables(request.data_types)
    system = SYSTEM_PROMPT.format(table_schemas=schema_text(tables),
                                  today=reference.strftime("%A %Y-%m-%d"))
    example_tables = [t for t in ("tasks", "notes") if t in tables]
    msgs = [{"role": "system", "content": system}]
    if example and example_tables:
        shown = {"items": [i for i in EXAMPLE_OUT["items"] if i["table"] in example_tables]}
        msgs += [{"role": "user", "content": f"Extract these record types: "
                  f"{', '.join(example_tables)}\n\nDocument:\n{EXAMPLE_DOC}"},
                 {"role": "assistant", "content": json.dumps(shown)}]
    part = f" (part {chunk.index + 1} of {n_chunks})" if n_chunks > 1 else ""
    instructions = request.prompt_template.strip() or "Extract what the user should act on."
    msgs.append({"role": "user", "content": f"User instructions: {instructions}\n\n"
                 f"Extract these record types: {', '.join(tables)}\n\n"
                 f"Document{part}:\n{chunk.text}"})
    return msgs


def parse_items(raw: str) -> list[dict[str, Any]]:
    """``{"items": [...]}`` or a bare list (older servers ignore the schema); else ValueError.

    An answer cut at max_tokens (a small model repeating itself) keeps its complete items.
    """
    text = raw.strip()
    fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.S)
    if fence:
        text = fence.group(1)
    try:
        parsed = json.loads(text)
    except ValueError:
        salvaged = _complete_items(text)
        if not salvaged:
            raise
        return salvaged
    if isinstance(parsed, dict):
        parsed = parsed.get("items", parsed.get("records"))
    if not isinstance(parsed, list):
        raise ValueError("the model's JSON has no items array")
    return [i for i in parsed if isinstance(i, dict)]


def _complete_items(text: str) -> list[dict[str, Any]]:
    """The whole objects at the start of a truncated ``items`` array."""
    m = re.match(r'\s*(?:\{\s*"(?:items|records)"\s*:\s*)?\[', text)
    if not m:
        return []
    decoder = json.JSONDecoder()
    pos, out = m.end(), []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return out
        if isinstance(obj, dict):
            out.append(obj)


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
    """Validated items from every chunk, in document order; chunk failures become problems."""
    if not request.text.strip():  # nothing to ask about
        return [], [], 0
    chunks = chunk_text(request.text, chunk_budget(n_ctx, max_output_tokens))
    schema = json_schema_for(request.data_types, require_project=False)
    allowed = set(allowed_tables(request.data_types))
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(chunk: Chunk) -> tuple[list[ExtractedItem], ExtractionProblem | None]:
        def prompt(enforced: bool) -> tuple[list[dict[str, str]], dict[str, Any]]:
            return (build_messages(request, chunk, len(chunks), reference,
                                   example=not enforced),
                    chunk_schema(schema, chunk) if enforced else schema)

        async with sem:
            try:
                raw = await completer.complete(prompt, max_output_tokens)
            except PermanentError:
                raise
            except SidecarError as exc:
                return [], ExtractionProblem(chunk.index, str(exc), transient=True)
        try:
            return await on_cpu_thread(lambda: to_items(parse_items(raw), chunk, allowed)), None
        except ValueError as exc:
            return [], ExtractionProblem(
                chunk.index, f"the model behind {getattr(completer, 'server', 'the engine')} "
                f"wrote invalid JSON "
                f"({exc}); output began {raw[:120]!r}. A model that follows JSON "
                "instructions (or a server that accepts response_format) avoids this.")

    if not chunks or not allowed:
        return [], [], len(chunks)
    tasks = [asyncio.ensure_future(one(c)) for c in chunks]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:  # a permanent error or a cancel: the other chunks stop too
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    raw_items = [it for its, _ in results for it in its]
    problems = [pr for _, pr in results if pr is not None]
    raw_items.sort(key=lambda it: it.source.span or (len(request.text), 0))
    items = await on_cpu_thread(lambda: finalize(raw_items, request, reference, problems))
    return items, problems, len(chunks)


class LlamaCompleter:
    """Chat completion on the local runtime, decoding under the schema's grammar."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.server = f"the embedded engine ({runtime.model.name})"
        self.calls = 0

    async def complete(self, prompt: Prompt, max_tokens: int) -> str:
        messages, schema = prompt(True)

        def run(llm: Any) -> str:
            out = llm.create_chat_completion(
                messages=messages, temperature=0.0, max_tokens=max_tokens, seed=0,
                response_format={"type": "json_object", "schema": schema})
            self.calls += 1
            # an answer cut at max_tokens keeps its complete items (parse_items)
            return out["choices"][0]["message"]["content"] or ""

        return await self.runtime.call(run)
