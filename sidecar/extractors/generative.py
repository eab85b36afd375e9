"""Generative extraction for capable models: JSON records under a schema, chunk by chunk.

Shared by the local engine (llama.cpp grammar built from the JSON Schema) and the remote
engine (``response_format``). The prompt keeps the seed's rules; the differences are that
documents are chunked instead of truncated, dates are asked for as ``YYYY-MM-DD`` against an
explicit "today", and every item is grounded back to the document.

When the server decodes under the schema, each chunk's schema limits titles to the chunk's own
lines (an ``enum``): measured with SmolLM2-135M, free titles were invented or copied from the
worked example (recall 0 on the contract document), chosen lines were real records. The
prompt (``gen_prompt``) describes the tables from the same schema the grammar is built from
(``json_grammar``, which lets the model write newlines and indentation), and shows a worked
example with several records of every table. An answer cut at the token cap keeps its
complete records and the rest of its chunk is asked again; a record's date must be stated on
its own line. Parsing, grounding and validation run in a worker thread: a long document's
post-processing never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sidecar.errors import PermanentError, SidecarError
from sidecar.extractors.base import ExtractedRecord, ExtractionProblem, ExtractionRequest
from sidecar.extractors.chunking import Chunk, chunk_text
from sidecar.extractors.date_values import within_horizon
from sidecar.extractors.dates import find_date_expressions, resolve_date
from sidecar.extractors.gen_prompt import build_messages
from sidecar.extractors.grounding import confidence_for, ground
from sidecar.extractors.offload import on_cpu_thread
from sidecar.extractors.postprocess import finalize
from sidecar.extractors.schema import allowed_tables, json_schema_for

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


@dataclass(frozen=True, slots=True)
class Answer:
    """A completion's text, and whether it stopped at ``max_tokens`` (cut off)."""

    text: str
    truncated: bool = False


class Completer(Protocol):
    """One chat completion that must return JSON text matching the prompt's schema."""

    async def complete(self, prompt: Prompt, max_tokens: int) -> Answer: ...


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


def parse_items(raw: str) -> list[dict[str, Any]]:
    """``{"items": [...]}`` or a bare list (older servers ignore the schema); else ValueError.

    An answer cut at max_tokens (a small model repeating itself) keeps its complete items.
    """
    return parse_answer(raw)[0]


def parse_answer(raw: str) -> tuple[list[dict[str, Any]], bool]:
    """(items, whole): ``whole`` is False when the JSON was cut and only its complete items
    at the start were kept."""
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
        return salvaged, False
    if isinstance(parsed, dict):
        parsed = parsed.get("items", parsed.get("records"))
    if not isinstance(parsed, list):
        raise ValueError("the model's JSON has no items array")
    return [i for i in parsed if isinstance(i, dict)], True


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


#: The fields holding a date, per table: checked against the document's own words.
DATE_FIELDS = {"tasks": "dueDate", "timelines": "date"}


def line_around(text: str, start: int, end: int) -> str:
    """The whole line(s) holding ``text[start:end]``: where a record's date is written."""
    a = text.rfind("\n", 0, start) + 1
    b = text.find("\n", end)
    return text[a: b if b != -1 else len(text)]


def sane_date(value: Any, line: str | None, reference: datetime) -> int | None:
    """A record's date only when its own line states one, resolved by the date rules.

    Models write a date for "Friday" by guesswork (weekday arithmetic is where 1.5B models
    fail) and invent dates for undated lines, some decades off ("1898"). The line's own
    expression decides, when it resolves within the document's horizon; a date the line
    does not state is dropped."""
    if line is None or value in (None, ""):
        return None
    for _s, _e, expr in find_date_expressions(line):
        ms = resolve_date(expr, reference)
        if ms is not None and within_horizon(ms, reference):
            return ms
    return None


def to_items(raw_items: Sequence[dict[str, Any]], chunk: Chunk, allowed: set[str],
             reference: datetime | None = None, full_text: str | None = None
             ) -> list[ExtractedRecord]:
    """Grounded items; with ``reference`` each date is checked by :func:`sane_date`."""
    out = []
    for obj in raw_items:
        table, data = obj.get("table"), obj.get("data")
        if not isinstance(table, str) or table not in allowed or not isinstance(data, dict):
            continue
        g = ground(_quote_of(data), chunk.text, chunk.start)
        field = DATE_FIELDS.get(table)
        if reference is not None and field in data:
            data = dict(data)
            line = None
            if g.span is not None and full_text is not None:
                line = line_around(full_text, *g.span)
            elif g.span is not None:
                line = line_around(chunk.text, g.span[0] - chunk.start, g.span[1] - chunk.start)
            ms = sane_date(data.pop(field), line, reference)
            if ms is not None:
                data[field] = ms
            elif table == "timelines":
                continue  # a milestone with no date the document states is not one
        out.append(ExtractedRecord(table, data, g, confidence_for(g)))
    return out


def chunk_budget(n_ctx: int, max_output_tokens: int) -> int:
    """Characters of document per chunk so prompt + document + answer fit ``n_ctx``."""
    prompt_tokens = 950  # system prompt and worked example
    return max(400, int((n_ctx - prompt_tokens - max_output_tokens) * CHARS_PER_TOKEN))


#: A chunk whose answer is cut off is asked again about its unread rest at most this often.
MAX_CONTINUATIONS = 4


def rest_of(chunk: Chunk, items: Sequence[ExtractedRecord]) -> Chunk | None:
    """The part of ``chunk`` after the last line its kept items came from (a cut-off answer
    lists in document order), or its second half when none is grounded; None if no progress
    is possible."""
    ends = [it.source.span[1] for it in items if it.source.span is not None]
    if ends:
        cut = max(ends) - chunk.start
        nl = chunk.text.find("\n", cut)
        cut = len(chunk.text) if nl == -1 else nl + 1
    else:
        half = len(chunk.text) // 2
        nl = chunk.text.find("\n", half)
        cut = nl + 1 if 0 < nl < len(chunk.text) - 1 else half
    rest = chunk.text[cut:]
    if not rest.strip() or cut <= 0:
        return None
    return Chunk(chunk.index, chunk.start + cut, rest)


async def extract_generative(completer: Completer, request: ExtractionRequest,
                             reference: datetime, *, n_ctx: int, max_output_tokens: int = 768,
                             concurrency: int = 1
                             ) -> tuple[list[ExtractedRecord], list[ExtractionProblem], int]:
    """Validated items from every chunk, in document order; chunk failures become problems.

    An answer cut at ``max_output_tokens`` keeps its complete records and the rest of its
    chunk is asked about again (at most :data:`MAX_CONTINUATIONS` times)."""
    if not request.text.strip():  # nothing to ask about
        return [], [], 0
    chunks = chunk_text(request.text, chunk_budget(n_ctx, max_output_tokens))
    schema = json_schema_for(request.data_types, require_project=False)
    allowed = set(allowed_tables(request.data_types))
    sem = asyncio.Semaphore(max(1, concurrency))

    async def ask(chunk: Chunk) -> Answer:
        def prompt(enforced: bool) -> tuple[list[dict[str, str]], dict[str, Any]]:
            shown = chunk_schema(schema, chunk) if enforced else schema
            return build_messages(request, chunk, len(chunks), reference, shown), shown

        async with sem:
            return await completer.complete(prompt, max_output_tokens)

    async def one(chunk: Chunk) -> tuple[list[ExtractedRecord], ExtractionProblem | None]:
        found: list[ExtractedRecord] = []
        part: Chunk | None = chunk
        for _ in range(MAX_CONTINUATIONS + 1):
            if part is None:
                break
            try:
                answer = await ask(part)
            except PermanentError:
                raise
            except SidecarError as exc:
                return found, ExtractionProblem(chunk.index, str(exc), transient=True)
            try:
                raw, whole = await on_cpu_thread(lambda a=answer: parse_answer(a.text))
            except ValueError as exc:
                if answer.truncated:  # cut inside its first record: read the part in halves
                    raw, whole = [], False
                else:
                    return found, ExtractionProblem(
                        chunk.index, f"the model behind "
                        f"{getattr(completer, 'server', 'the engine')} wrote invalid JSON "
                        f"({exc}); output began {answer.text[:120]!r}. A model that follows "
                        "JSON instructions (or a server that accepts response_format) avoids "
                        "this.")
            got = await on_cpu_thread(lambda r=raw, p=part: to_items(
                r, p, allowed, reference, request.text))
            found += got
            if whole and not answer.truncated:
                return found, None
            part = rest_of(part, got)
        if part is None:
            return found, None
        return found, ExtractionProblem(
            chunk.index, f"answers kept hitting the {max_output_tokens}-token cap; the last "
            f"{len(part.text)} characters of this part were not read")

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
    """Chat completion on the local runtime, decoding under the schema's grammar (newlines and
    indentation allowed: see ``json_grammar``)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.server = f"the embedded engine ({runtime.model.name})"
        self.calls = 0

    async def complete(self, prompt: Prompt, max_tokens: int) -> Answer:
        messages, schema = prompt(True)

        def run(llm: Any) -> Answer:
            from sidecar.extractors.json_grammar import grammar_for

            # streamed so that every token passes through here: a cancelled run stops it
            stream = llm.create_chat_completion(
                messages=messages, temperature=0.0, max_tokens=max_tokens, seed=0,
                grammar=grammar_for(schema), stream=True)
            self.calls += 1
            parts: list[str] = []
            finish = None
            try:
                for chunk in stream:
                    if self.runtime.should_stop():
                        break
                    choice = chunk["choices"][0]
                    parts.append(choice["delta"].get("content") or "")
                    finish = choice.get("finish_reason") or finish
            finally:
                stream.close()
            return Answer("".join(parts), truncated=finish == "length")

        return await self.runtime.call(run)
