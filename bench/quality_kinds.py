"""Why a predicted task is wrong or a gold task was missed, as short labels for the report."""

from __future__ import annotations

import re
from collections.abc import Sequence

from bench.quality_gold import GoldDoc, GoldTask, Pred, normalize, similarity, token_f1

_GREETING = re.compile(
    r"^(hi|hello|hey|dear|morning|good morning|thanks|thank you|many thanks|cheers|best|"
    r"regards|kind regards|warm regards|looking forward|hope|welcome|takk|ciao|a presto)\b", re.I)
_PAST = re.compile(
    r"\b(was|were|did|went|had|got|sent|shipped|finished|completed|delivered|launched|fixed|"
    r"merged|approved|signed|paid|received|exported|uploaded|pushed|ran|met|discussed|"
    r"walked|found|spent|saved|billed|won|lost|moved|tried|presented|logged|"
    r"already|yesterday|last (?:week|month|night|thursday|friday))\b", re.I)
_CONDITIONAL = re.compile(r"^(if|maybe|what if|perhaps|probably|could feel|idea)\b", re.I)
_METADATA = re.compile(
    r"^(date|attendees|present|apologies|subject|from|to|cc|meeting|location|photographer|"
    r"prepared by|period|version|order|payment|customer|delivery|estimated|written up)\b"
    r"|^\W*\d|@\w+\.\w+|\b\d{1,2}:\d{2}\b|£\d|€\d", re.I)
_POLITE = re.compile(r"\b(could you|would you|can you|would you mind|is it possible|"
                     r"let me know|please)\b", re.I)


_BULLET_LINE = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+\S")
_LABEL_VALUE = re.compile(r"^[\w' -]{2,25}:\s+\S")


def _where(title: str, text: str) -> tuple[str, str] | None:
    """The document line holding ``title`` and the line before it, or None if not found."""
    words = title.split()[:6]
    if not words:
        return None
    m = re.search(r"\s+".join(re.escape(w) for w in words), text, re.I)
    if m is None:
        return None
    start = text.rfind("\n", 0, m.start()) + 1
    end = text.find("\n", m.start())
    prev_start = text.rfind("\n", 0, max(0, start - 1)) + 1
    return text[start: end if end != -1 else len(text)], text[prev_start: max(0, start - 1)]


def fp_kind(p: Pred, doc: GoldDoc, matched_gold: set[int], text: str = "") -> str:
    """Why a predicted task is wrong, as one short label."""
    where = _where(p.title, text)
    if where is not None and where[0].lstrip().startswith(">"):
        return "quoted reply text taken as task"
    if (where is not None and _BULLET_LINE.match(where[1])
            and not _BULLET_LINE.match(where[0]) and where[0][:1].isspace()):
        return "fragment of a wrapped bullet line"
    if any(similarity(p.texts, (d,)) for d in doc.done):
        return "done [x] item taken as open task"
    if any(similarity(p.texts, t.texts) for j, t in enumerate(doc.tasks) if j in matched_gold):
        return "duplicate of a matched task"
    if any(similarity(p.texts, n) for n in doc.notes):
        return "decision/fact (gold note) taken as task"
    title = p.title
    if not doc.tasks and not doc.done:
        return "task in a document with no tasks (newsletter/receipt)"
    if _GREETING.match(title):
        return "greeting/sign-off taken as task"
    if title.rstrip().endswith("?"):
        return "question taken as task"
    if _CONDITIONAL.match(title):
        return "idea/conditional taken as task"
    if _METADATA.search(title) or _LABEL_VALUE.match(title):
        return "header/metadata/schedule line taken as task"
    if _PAST.search(title):
        return "past-tense/report line taken as task"
    if any(token_f1(title, g) >= 0.3 for t in doc.tasks for g in t.texts):
        return "span boundary off (overlaps a gold task)"
    return "other statement taken as task"


_FIRST_PERSON = re.compile(r"\b(i'?ll|i will|i'?d|we will|we'?ll|i'?m doing|i need to)\b", re.I)
_THIRD_PERSON = re.compile(r"^(?:[A-Z][\w.]+(?: and [A-Z]\w+)? (?:to|will|needs to)|"
                           r"[Hh]e'?ll|[Ss]he'?ll)\b")
_NEED = re.compile(r"\b(needs?|would like|'d like|want)\b", re.I)


def fn_kind(t: GoldTask, unmatched_preds: Sequence[Pred], text: str = "") -> str:
    """What kind of task was missed, as one short label."""
    if any(token_f1(p.title, g) >= 0.3 for p in unmatched_preds for g in t.texts):
        return "span boundary off (overlapping prediction)"
    title = t.title
    where = _where(title, text)
    line = where[0] if where else ""
    if line.lstrip().startswith("|"):
        return "missed markdown table row"
    m = re.search(r"\s+".join(re.escape(w) for w in title.split()[:5]), text, re.I)
    if m and re.search(r"\band\s+$", text[max(0, m.start() - 6): m.start()]):
        return "missed second action joined by 'and'"
    prev = where[1] if where else ""
    if (line.strip() and prev.strip() and not _BULLET_LINE.match(line) and len(line) < 85
            and normalize(line).startswith(" ".join(normalize(title).split()[:3]))
            and not re.match(r"\s*(\[|\d)", line)
            and not line.rstrip().endswith((".", "!", "?", ":"))
            and not prev.rstrip().endswith((".", "!", "?", ":"))):
        return "missed line in a run of unpunctuated lines"
    if _POLITE.search(title):
        return "missed polite request"
    if _FIRST_PERSON.search(title):
        return "missed first-person commitment (I'll/we will)"
    if _THIRD_PERSON.match(title):
        return "missed named assignment/commitment (X to/will…)"
    if _NEED.search(title):
        return "missed need/want statement"
    return "missed bare imperative/problem statement"
