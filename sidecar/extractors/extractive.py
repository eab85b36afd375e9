"""Extraction for small models: candidate spans + evidence + the model's yes/no, never free text.

Measured with SmolLM2-135M, free generation copies few-shot examples or runs away; asked
per line "is this an action item?" it says yes too often. So the model only refines a
prior built from cheap evidence, on the candidates where the prior is unsure, and every
title is a span of the document.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sidecar.extractors.base import ExtractedItem, Grounding
from sidecar.extractors.candidates import Candidate, find_candidates
from sidecar.extractors.features import (
    Evidence,
    note_evidence,
    priority_of,
    strip_connectors,
    task_evidence,
    timeline_evidence,
)

#: Asks the model about candidates: (table, candidates, doc context) → yes-minus-no log-odds.
Judge = Callable[[str, Sequence[Candidate], str], Awaitable[list[float]]]


@dataclass(frozen=True, slots=True)
class Tuning:
    """Decision parameters; fitted on bench/data (see bench/quality.py), versioned."""

    version: str = "extractive-1"
    #: Ask the model only when the prior's log-odds fall in this band.
    ask_low: float = -2.5
    ask_high: float = 3.0
    #: Weight of the model's yes-minus-no log-odds added to the prior.
    model_weight: float = 0.6
    #: Minimum confidence to emit, per table.
    task_threshold: float = 0.5
    note_threshold: float = 0.6
    timeline_threshold: float = 0.6


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, x))))


def _title(c: Candidate, max_len: int = 200) -> tuple[str, int, int]:
    """The span as a title: connectors and a final period dropped, still a document substring."""
    text = c.text
    start, end = c.start, c.end
    stripped = strip_connectors(text)
    start += len(text) - len(stripped)
    text = stripped
    while text and text[-1] in ".;,":
        text = text[:-1]
        end -= 1
    if len(text) > max_len:
        cut = text.rfind(" ", 0, max_len)
        text = text[: cut if cut > 40 else max_len]
        end = start + len(text)
    if text and text[0].islower():
        text = text[0].upper() + text[1:]
    # a span wrapped over lines (an email paragraph) reads as one line; the span still points
    # at the document's own text
    return " ".join(text.split()), start, end


def _grounding(c: Candidate, start: int, end: int, quote: str) -> Grounding:
    return Grounding(span=(start, end), exact=True, quote=quote)


async def _decide(table: str, scored: list[tuple[Candidate, Evidence]], judge: Judge | None,
                  context: str, tuning: Tuning) -> list[tuple[Candidate, float]]:
    unsure = [c for c, e in scored if tuning.ask_low <= e.logit <= tuning.ask_high]
    model: dict[int, float] = {}
    if judge is not None and unsure:
        for c, logit in zip(unsure, await judge(table, unsure, context), strict=True):
            model[id(c)] = logit
    out = []
    for c, e in scored:
        logit = e.logit + tuning.model_weight * model.get(id(c), 0.0)
        out.append((c, sigmoid(logit)))
    return out


def _context(text: str) -> str:
    """The document's first meaningful line (title/subject): what the model sees besides a line."""
    for line in text.splitlines()[:8]:
        line = line.strip(" #*-\t")
        if len(line) > 3:
            return line[:120]
    return ""


async def extract_extractive(
    text: str,
    data_types: Sequence[str],
    *,
    reference: datetime,
    judge: Judge | None,
    tuning: Tuning = Tuning(),
    resolve_date: Callable[[str, datetime], int | None],
    find_dates: Callable[[str], list[tuple[int, int, str]]],
    project_id: str | None = None,
) -> list[ExtractedItem]:
    """Items for ``data_types`` chosen among the document's candidate spans."""
    cands = find_candidates(text)
    context = _context(text)
    items: list[ExtractedItem] = []
    dates = {id(c): find_dates(c.text) or find_dates(c.date_text or "") for c in cands}

    def due(c: Candidate) -> int | None:
        for _s, _e, expr in dates[id(c)]:
            ms = resolve_date(expr, reference)
            if ms is not None:
                return ms
        return None

    sender = _sender(text)
    claimed: set[int] = set()
    if "tasks" in data_types:
        scored = [(c, task_evidence(c)) for c in cands]
        for c, conf in await _decide("tasks", scored, judge, context, tuning):
            if conf < tuning.task_threshold:
                continue
            title, s, e = _title(c)
            data: dict[str, object] = {
                "title": title, "status": "done" if c.checked else "todo",
                "priority": c.priority or priority_of(_line_of(text, c), c.section)}
            ms = due(c)
            if ms is not None:
                data["dueDate"] = ms
            owner = c.owner or _assignee(c.text) or _first_person_owner(c, sender)
            if owner:
                data["assignee"] = json.dumps([owner], ensure_ascii=False)
            if project_id:
                data["projectId"] = project_id
            items.append(ExtractedItem("tasks", data, _grounding(c, s, e, title), conf))
            claimed.add(id(c))
    if "notes" in data_types:
        scored = [(c, note_evidence(c)) for c in cands if id(c) not in claimed]
        for c, conf in await _decide("notes", scored, judge, context, tuning):
            if conf < tuning.note_threshold:
                continue
            title, s, e = _title(c, max_len=120)
            data = {"title": title, "content": c.text}
            if project_id:
                data["projectId"] = project_id
            items.append(ExtractedItem("notes", data, _grounding(c, s, e, title), conf))
            claimed.add(id(c))
    if "timelines" in data_types and project_id:
        scored = [(c, timeline_evidence(c, bool(dates[id(c)]))) for c in cands
                  if id(c) not in claimed]
        for c, conf in await _decide("timelines", scored, judge, context, tuning):
            ms = due(c)
            if conf < tuning.timeline_threshold or ms is None:
                continue
            title, s, e = _title(c, max_len=120)
            items.append(ExtractedItem(
                "timelines", {"title": title, "projectId": project_id, "date": ms},
                _grounding(c, s, e, title), conf))
    items.sort(key=lambda it: it.source.span or (0, 0))
    return items


_ASSIGNEE = re.compile(
    r"^([A-ZÀ-Ý][\wÀ-ÿ'-]+)\s+(?:to|will|should|must|needs to|has to"
    r"|se encarga(?:rá)? de|tiene que|debe|va a|\w+(?:ará|erá|irá))\s")


_NOT_NAMES = frozenset({"we", "i", "you", "they", "he", "she", "it", "this", "that", "someone",
                        "everyone", "nobody", "yo", "nosotros", "alguien", "todos", "esto",
                        "eso"})


def _assignee(text: str) -> str | None:
    m = _ASSIGNEE.match(strip_connectors(text))
    if m and m.group(1).lower() not in _NOT_NAMES:
        return m.group(1)
    return None


_I_WILL = re.compile(r"\b(?:i'?ll|i will|i'?m going to|i am going to|let me|i can)\s", re.I)
_FROM = re.compile(r"^From:\s*\"?([^<\"\n@]+?)\"?\s*(?:<[^>]*>)?\s*$", re.M)


def _sender(text: str) -> str | None:
    """An email's sender's name (the reader's "From:" header line), for "I'll …" tasks."""
    m = _FROM.search(text[:2000])
    if not m:
        return None
    name = m.group(1).strip()
    return name.split()[0] if name else None


def _first_person_owner(c: Candidate, sender: str | None) -> str | None:
    """"I'll send it" belongs to whoever says it: the chat speaker, else the email's sender."""
    if not _I_WILL.search(c.text):
        return None
    return (c.speaker.split()[0] if c.speaker else None) or sender


def _line_of(text: str, c: Candidate) -> str:
    """The whole line around a candidate: "…by EOD? It's urgent." carries the priority."""
    start = text.rfind("\n", 0, c.start) + 1
    end = text.find("\n", c.end)
    return text[start: end if end != -1 else len(text)]
