"""Extraction for small models: candidate spans + evidence + the model's yes/no, never free text.

Measured with SmolLM2-135M, free generation copies few-shot examples or runs away; asked
per line "is this an action item?" it says yes too often. So the model only refines a
prior built from cheap evidence, on the candidates where the prior is unsure, and every
title is a span of the document.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sidecar.extractors.base import ExtractedRecord, Grounding
from sidecar.extractors.candidates import Candidate, find_candidates
from sidecar.extractors.date_values import within_horizon
from sidecar.extractors.dates import year_is_inferred
from sidecar.extractors.features import (
    IMPERATIVE_VERBS,
    Evidence,
    is_milestone,
    is_plan,
    note_evidence,
    priority_of,
    reports_past,
    split_events,
    strip_connectors,
    task_evidence,
    timeline_evidence,
)
from sidecar.readers.docdate import day_first_for, message_references

#: Asks the model about candidates: (table, candidates, doc context) → yes-minus-no log-odds.
Judge = Callable[[str, Sequence[Candidate], str], Awaitable[list[float]]]


@dataclass(frozen=True, slots=True)
class Tuning:
    """Decision parameters; fitted on bench/data (see bench/quality.py), versioned."""

    version: str = "extractive-2"
    #: Ask the model only when the prior's log-odds fall in this band.
    ask_low: float = -2.5
    ask_high: float = 3.0
    #: Weight of the model's yes-minus-no log-odds added to the prior.
    model_weight: float = 0.6
    #: Minimum confidence to emit, per table.
    task_threshold: float = 0.5
    note_threshold: float = 0.5
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
    resolve_date: Callable[..., int | None],
    find_dates: Callable[[str], list[tuple[int, int, str]]],
    project_id: str | None = None,
    sender: str | None = None,
) -> list[ExtractedRecord]:
    """Items for ``data_types`` chosen among the document's candidate spans.

    Dated milestones that ask nothing of anyone ("Launch target: 2 June") are timelines, not
    tasks (emitted without a project too: ``finalize`` holds them and says so); a sentence
    with two actions gives two tasks; the notes are one summary of the document (see
    :func:`summary_note`). Dates resolve against the document's reference, or a chat
    message's own time, in the document's day/month order, and a date outside the
    document's horizon is dropped.
    """
    cands = find_candidates(text)
    context = _context(text)
    items: list[ExtractedRecord] = []
    day_first = day_first_for(text)
    local = message_references(text, reference, day_first)
    starts = [pos for pos, _, _ in local]
    dates = {id(c): find_dates(c.text) or find_dates(c.date_text or "") for c in cands}
    plan = is_plan(document_title(text)[0])

    def ref_of(c: Candidate) -> tuple[datetime, Mapping[str, str] | None]:
        i = bisect.bisect_right(starts, c.start) - 1
        if i < 0:
            return reference, None
        _, when, origin = local[i]
        return when, {"date": when.isoformat(timespec="minutes"), "origin": origin}

    def due(c: Candidate, *, event: bool = False,
            found: list[tuple[int, int, str]] | None = None) -> int | None:
        ref = ref_of(c)[0]
        for _s, _e, expr in dates[id(c)] if found is None else found:
            ms = resolve_date(expr, ref, day_first=day_first)
            if (ms is not None and ms > ref.timestamp() * 1000 + _DAY_MS
                    and event and reports_past(c, plan) and not _YEAR.search(expr)):
                if not year_is_inferred(expr):
                    # "delivered in a week" in a report: how long it took, not a day to come
                    continue
                # "the charter was signed on 3 March" (in October): this year's, not next
                earlier = resolve_date(expr, ref - timedelta(days=365), day_first=day_first)
                if earlier is not None and earlier <= ref.timestamp() * 1000 + _DAY_MS:
                    ms = earlier
            if ms is not None and within_horizon(ms, ref):
                return ms
        return None

    # the message's own sender; text that merely looks like an email (a pasted or saved
    # message read as plain text) still names its sender in a "From:" line
    sender = _sender_name(sender) or _sender(text)
    claimed: set[int] = set()
    # only dated milestones can become timelines: the judge is not asked about the rest
    scored_tl = [(c, timeline_evidence(c, True)) for c in cands
                 if dates[id(c)] and is_milestone(c)]
    for c, conf in await _decide("timelines", scored_tl, judge, context, tuning):
        if conf < tuning.timeline_threshold or not is_milestone(c):
            continue
        # "submission on 10 June, public launch for 17 June": two events, each its own date;
        # "sent on 3 Feb, re-sent on 24 Feb": one thing's history, told in the past
        parts = ([(c, dates[id(c)])] if reports_past(c, plan)
                 else split_events(c, find_dates(c.text)))
        events = [(part, ms) for part, found in parts
                  if (ms := due(part, event=True, found=found or dates[id(c)])) is not None
                  and is_milestone(part)]
        if events and not _task_row(c):
            claimed.add(id(c))  # events, not something to do
        if "timelines" not in data_types:
            continue
        for part, ms in events:
            title, s, e = _title(part, max_len=120)
            data: dict[str, object] = {"title": title, "date": ms}
            if project_id:
                data["projectId"] = project_id
            items.append(ExtractedRecord("timelines", data, _grounding(part, s, e, title), conf,
                                       ref_of(c)[1]))
    tasks: set[int] = set()
    if "tasks" in data_types:
        scored = [(c, task_evidence(c)) for c in cands if id(c) not in claimed]
        for c, conf in await _decide("tasks", scored, judge, context, tuning):
            if conf < tuning.task_threshold:
                continue
            base: dict[str, object] = {
                "status": "done" if c.checked else "todo",
                "priority": c.priority or priority_of(_line_of(text, c), c.section)}
            ms = due(c)
            if ms is not None:
                base["dueDate"] = ms
            owner = c.owner or _assignee(c.text) or _first_person_owner(c, sender)
            if owner:
                base["assignee"] = json.dumps([owner], ensure_ascii=False)
            if project_id:
                base["projectId"] = project_id
            for title, s, e in split_actions(text, *_title(c)):
                items.append(ExtractedRecord("tasks", {"title": title, **base},
                                           _grounding(c, s, e, title), conf, ref_of(c)[1]))
            tasks.add(id(c))
    if "notes" in data_types:
        scored = [(c, note_evidence(c)) for c in cands if id(c) not in tasks]
        kept = [(c, conf) for c, conf in await _decide("notes", scored, judge, context, tuning)
                if conf >= tuning.note_threshold]
        note = summary_note(text, kept, project_id)
        if note is not None:
            items.append(note)
    items.sort(key=lambda it: it.source.span or (0, 0))
    return items


_DAY_MS = 86_400_000
_YEAR = re.compile(r"\b(?:19|20|21)\d\d\b|\d{1,2}[/.]\d{1,2}[/.]\d{2}")


def _task_row(c: Candidate) -> bool:
    """A row of a task table (it has an owner or a status): a task even when it is dated."""
    return c.shape == "cell" and (c.owner is not None or c.checked)


#: "and update the tracker", ", then send it", "; chase Tom": where a second action starts.
_JOIN = re.compile(r"(?:\s*,\s*|\s*;\s*|\s+)(?:(?:and|&)(?:\s+then|\s+also)?|then|y)\s+"
                   r"|\s*;\s+", re.I)
_NOT_AN_ACTION = re.compile(r"^(?:let (?:me|us|me and \w+) know|keep (?:me|us) posted|tell me)\b",
                            re.I)


_PRONOUNS = frozenset({"it", "them", "this", "that", "these", "those", "him", "her", "lo", "la",
                       "los", "las", "everything", "all"})


def split_actions(text: str, title: str, start: int, end: int) -> list[tuple[str, int, int]]:
    """"Send the invoice and update the tracker": two actions, each a span of the document.

    A part is an action when it starts with an imperative verb (the first part: holds one)
    followed by its own object: "Review and approve the copy" and "Write the brief and share
    it" stay one task."""
    seg = text[start:end]
    cuts = []
    for m in _JOIN.finditer(seg):
        rest = seg[m.end():]
        verb = re.match(r"[\wÀ-ÿ'’-]+", rest)
        if verb and verb.group(0).lower() in IMPERATIVE_VERBS and not _NOT_AN_ACTION.match(rest):
            cuts.append((m.start(), m.end()))
    if not cuts:
        return [(title, start, end)]
    parts: list[tuple[int, int]] = []
    pos = 0
    for a, b in cuts:
        parts.append((pos, a))
        pos = b
    parts.append((pos, len(seg)))
    words = [[w.lower().strip(",.;:") for w in seg[a:b].split()] for a, b in parts]
    verb = next((i for i, w in enumerate(words[0]) if w in IMPERATIVE_VERBS), None)
    if verb is None or verb == len(words[0]) - 1 or any(
            len(w) < 2 or w[1] in _PRONOUNS for w in words[1:]):
        return [(title, start, end)]  # "sign and return it": one thing done twice
    out = []
    for a, b in parts:
        piece = seg[a:b].strip(" ,;")
        a = seg.index(piece, a)
        piece = piece.rstrip(".;,")
        shown = " ".join(piece.split())
        out.append((shown[0].upper() + shown[1:], start + a, start + a + len(piece)))
    return out


_SUMMARY_BULLETS = 12
_SUMMARY_CHARS = 2500
_NOTE_LABELS = {"decision": "Decision", "decisions": "Decision", "decided": "Decision",
                "agreed": "Agreed", "note": "Note", "notes": "Note", "nb": "NB",
                "important": "Important", "budget": "Budget", "decisión": "Decisión",
                "acuerdo": "Acuerdo", "nota": "Nota"}


def summary_note(text: str, kept: Sequence[tuple[Candidate, float]],
                 project_id: str | None) -> ExtractedRecord | None:
    """One note for the document: its title, and what matters in it as markdown bullets.

    The bullets are the spans judged worth keeping (decisions, facts, figures, marked notes),
    in document order, at most ``_SUMMARY_BULLETS`` and ``_SUMMARY_CHARS``; a marked span
    keeps its label ("**Decision:** …"). No span worth keeping: no note."""
    if not kept:
        return None
    ordered = sorted(kept, key=lambda pair: pair[0].start)
    lines: list[str] = []
    size = 0
    for c, _conf in ordered:
        body = " ".join(c.text.split()).rstrip(";,")
        label = _NOTE_LABELS.get((c.label or "").lower())
        line = f"- **{label}:** {body}" if label else f"- {body}"
        if len(lines) >= _SUMMARY_BULLETS or size + len(line) > _SUMMARY_CHARS:
            break
        lines.append(line)
        size += len(line) + 1
    title, span = document_title(text)
    if span is None:
        span = (ordered[0][0].start, ordered[0][0].end)
    data: dict[str, object] = {"title": title, "content": "\n".join(lines)}
    if project_id:
        data["projectId"] = project_id
    conf = max(conf for _, conf in ordered)
    return ExtractedRecord("notes", data, Grounding(span=span, exact=False, quote=title), conf)


_SUBJECT = re.compile(r"^Subject:[ \t]*(?P<t>\S.*?)\s*$", re.M)
_HEADING = re.compile(r"^#{1,3}[ \t]+(?P<t>\S.*?)[ \t#]*$", re.M)


def document_title(text: str) -> tuple[str, tuple[int, int] | None]:
    """The document's title (an email's subject, its first heading, else its first short
    line) and where it is; ``""`` when it has none (a table: the caller names it)."""
    head = text[:3000]
    for rx in (_SUBJECT, _HEADING):
        m = rx.search(head)
        if m is not None and (rx is _SUBJECT or m.start() < 400):
            return m["t"].strip(" *_")[:200], (m.start("t"), m.end("t"))
    pos = 0
    for line in head.splitlines(keepends=True):
        body = line.strip()
        if body and not body.startswith(("|", "{", "[", "<")) and len(body) <= 120:
            start = pos + line.index(body)
            title = body.strip(" *_=#-")
            return title, (start, start + len(body))
        if body:
            break
        pos += len(line)
    return "", None


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
    """The first name in a "From:" line near the top of a text that is not known to be a
    message (a pasted email), for "I'll …" tasks."""
    m = _FROM.search(text[:2000])
    if not m:
        return None
    name = m.group(1).strip()
    return name.split()[0] if name else None


def _sender_name(sender: str | None) -> str | None:
    """A message's sender's first name ("Ana Lopez <ana@x.example>" → "Ana"); None for a
    bare address."""
    return _sender(f"From: {sender}") if sender else None


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
