"""Candidate spans for extractive extraction: a small model chooses among these, never invents.

Every record the embedded model produces starts as a span of the document found here
(a bullet, a checkbox, a chat line, a sentence), so titles are copied from the document
and grounded by construction. Each candidate carries cheap features (imperative verb,
request phrase, deadline, section heading, past tense, …) that a scorer turns into a
prior; the model's yes/no log-probabilities refine it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

# ── line structure ──────────────────────────────────────────────────────────
_CHECKBOX = re.compile(r"^\s*(?:[-*+•]\s*)?\[( |x|X|✓|✔)\]\s*(?P<body>.+)$")
_BULLET = re.compile(r"^\s*(?:[-*+•▪◦‣·–]|\d{1,3}[.)]|[a-hA-H][.)]|\(\d{1,3}\))\s+(?P<body>.+)$")
_HEADING_MD = re.compile(r"^\s*#{1,6}\s+(?P<body>.+?)\s*#*\s*$")
_HEADING_COLON = re.compile(r"^\s*(?P<body>[A-Za-zÀ-ÿ][^.!?]{1,60}):\s*$")
_CHAT = re.compile(
    r"^\s*(?:\[?(?:(?:\d{1,2}[/.]\d{1,2}[/.]\d{2,4}|\d{4}-\d{2}-\d{2}),?\s+)?"
    r"\d{1,2}:\d{2}(?::\d{2})?\s*(?:[AaPp][Mm])?\]?\s*[-–]?\s*)"
    r"(?P<who>[A-ZÀ-Ý][\w.'À-ÿ -]{0,30}?):\s+(?P<body>.+)$")
_SPEAKER = re.compile(r"^\s*(?P<who>[A-ZÀ-Ý][\w.'À-ÿ-]{0,20}(?: [A-ZÀ-Ý][\w.'À-ÿ-]{0,20})?):\s+"
                      r"(?P<body>.+)$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-ZÀ-Ý0-9¿¡])")
_LABEL_PREFIX = re.compile(
    r"^\s*(?:action(?: item)?s?|todo|to-do|to do|task|next step|ai|follow[- ]up|"
    r"decision|note|milestone|tarea|acción|pendiente)\s*[:\-–]\s*", re.I)
_MENTION_PREFIX = re.compile(r"^\s*@(?P<who>[\w.-]{1,30})\s*[:,-]?\s*")
#: "Priya: set up the server" inside a bullet: Priya owns it.
_OWNER_PREFIX = re.compile(r"^\s*(?P<who>[A-ZÀ-Ý][\w'À-ÿ-]{1,20}(?: [A-ZÀ-Ý][\w'À-ÿ-]{1,20})?)"
                           r"\s*:\s+(?=\S)")
#: Greetings and sign-offs stand alone: "Hi Priya," must not glue onto the request after it.
_SALUTATION = re.compile(r"^\s*(?:(?:hi|hello|hey|dear|good (?:morning|afternoon|evening)|"
                         r"morning|hola|thanks|thank you|many thanks|best|best regards|"
                         r"kind regards|regards|cheers|warm regards|saludos|gracias)\b"
                         r"[^.!?\n]{0,40}|[^.!?\n]{1,40},)\s*$", re.I)
_BOLD_LABEL = re.compile(r"^\s*(?:[-*+]\s+)?(?:\*\*|__)(?P<who>[^*_\n]{1,40}?):?(?:\*\*|__):?"
                         r"\s+(?P<body>\S.*)$")
_OWNER_SUFFIX = re.compile(r"\s*[\(\[](?:owner|assignee|who|resp)\s*:?\s*(?P<who>[^)\]]{1,40})"
                           r"[\)\]]\s*$", re.I)
#: "Decision: …" is a label, not a speaker.
LABEL_WORDS = frozenset({
    "decision", "decisions", "decided", "agreed", "note", "notes", "fyi", "action", "actions",
    "todo", "to do", "to-do", "task", "tasks", "next step", "next steps", "milestone",
    "deadline", "due", "attendees", "present", "date", "subject", "from", "to", "cc",
    "re", "status", "summary", "agenda", "owner", "budget", "update", "reminder", "important",
    "ps", "p.s", "nb", "question", "answer", "risk", "blocker", "follow-up", "follow up",
    "decisión", "acuerdo", "nota", "tarea", "pendiente", "asistentes", "fecha",
})


@dataclass(frozen=True, slots=True)
class Candidate:
    """A span that might be a record; ``text`` is the cleaned span (a substring of the doc)."""

    start: int
    end: int
    text: str
    shape: str  # checkbox | bullet | chat | sentence | cell
    section: str | None
    checked: bool = False
    speaker: str | None = None
    owner: str | None = None
    label: str | None = None
    line_no: int = 0
    features: dict[str, float] = field(default_factory=dict)
    #: Text beside the span that may carry its date (a table's "Due" cell).
    date_text: str | None = None
    #: A table's Priority cell, as the schema's value (high | medium | low).
    priority: str | None = None


@dataclass(frozen=True, slots=True)
class _Line:
    start: int
    end: int
    text: str
    no: int


def _lines(text: str) -> list[_Line]:
    out, pos = [], 0
    for no, raw in enumerate(text.splitlines(keepends=True)):
        body = raw.rstrip("\r\n")
        out.append(_Line(pos, pos + len(body), body, no))
        pos += len(raw)
    return out


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink [start, end) past whitespace and trailing separators."""
    while start < end and text[start] in " \t*_`\"'“”>":
        start += 1
    while end > start and text[end - 1] in " \t*_`\"'“”,;:":
        end -= 1
    return start, end


def _heading(line: str) -> str | None:
    m = _HEADING_MD.match(line)
    if m:
        return m.group("body").strip(" *_:")
    m = _HEADING_COLON.match(line)
    if m and len(m.group("body").split()) <= 7:
        return m.group("body").strip(" *_")
    stripped = line.strip().strip("*_")
    if stripped and stripped.isupper() and 1 <= len(stripped.split()) <= 6 and len(stripped) > 3:
        return stripped
    return None


def _clean(text: str, start: int, end: int) -> tuple[int, int, str | None, str | None]:
    """Drop label prefixes ("Action:", "@ana:", "Priya:") and owner suffixes; offsets exact.

    Returns (start, end, owner, label).
    """
    owner = label = None
    seg = text[start:end]
    m = _LABEL_PREFIX.match(seg)
    if m:
        label = m.group(0).strip(" \t:-–").lower()
        start += m.end()
        seg = text[start:end]
    m = _MENTION_PREFIX.match(seg) or _OWNER_PREFIX.match(seg)
    if m and m.group("who").strip().lower() not in LABEL_WORDS:
        owner = m.group("who").strip()
        start += m.end()
        seg = text[start:end]
    m = _OWNER_SUFFIX.search(seg)
    if m:
        owner = owner or m.group("who").strip()
        end = start + m.start()
    start, end = _strip_span(text, start, end)
    return start, end, owner, label


_ABBREV = re.compile(r"(?:\b(?:dr|mr|mrs|ms|prof|st|sr|jr|vs|etc|approx|no|e\.g|i\.e|"
                     r"inc|ltd|co)|\b[A-Z])\.$", re.I)


#: Chat messages are written in lower case: any ". " ends a sentence there.
_CHAT_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[\wÀ-ÿ¿¡])")


def _sentences(text: str, start: int, end: int, *, casual: bool = False
               ) -> list[tuple[int, int]]:
    seg = text[start:end]
    spans, pos = [], 0
    for m in (_CHAT_SENTENCE_END if casual else _SENTENCE_END).finditer(seg):
        if _ABBREV.search(seg[pos:m.start()]):
            continue  # "Dr. Patel", "e.g. the logo": not a sentence end
        spans.append((start + pos, start + m.start()))
        pos = m.end()
    spans.append((start + pos, end))
    return spans


_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
#: "Milestone | Date | Status": an HTML or Word table as the readers render it.
_BARE_ROW = re.compile(r"^[^|\n]*\S[^|\n]*(?: \| [^|\n]*)+$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")
_TEXT_HEAD = re.compile(r"^(?:action|actions|task|tasks|item|to ?do|what|description|"
                        r"deliverable|next steps?|activity|tarea|acción|name|title|card|"
                        r"summary|milestone)$", re.I)
_OWNER_HEAD = re.compile(r"^(?:owner|who|assignee|assignees|responsible|resp\.?|assigned to|"
                         r"members?|responsable)$", re.I)
_DUE_HEAD = re.compile(r"^(?:due|due ?date|due_?on|due_?at|deadline|date|when|by|fecha|plazo)$",
                       re.I)
#: Columns that say whether a row is finished, and the values that mean it is.
_STATUS_HEAD = re.compile(r"^(?:status|state|stage|list|column|estado|done|completed?|"
                          r"is_?done|is_?completed|duecomplete)$", re.I)
_DONE_VALUE = re.compile(r"^(?:done|complete|completed|closed|finished|resolved|shipped|true|"
                         r"yes|x|✓|✔|✅|hecho|terminado|listo|hecha|terminada)$", re.I)
_ARCHIVED_HEAD = re.compile(r"^(?:closed|archived|deleted|trashed)$", re.I)
_PRIORITY_HEAD = re.compile(r"^(?:priority|prio|importance|urgency|prioridad)$", re.I)
_PRIORITY_VALUE = (
    (re.compile(r"^(?:high|highest|urgent|critical|blocker|p[01]|alta|urgente|must)\b", re.I),
     "high"),
    (re.compile(r"^(?:low|lowest|minor|trivial|p[34]|baja|nice to have|could)\b", re.I), "low"),
    (re.compile(r"^(?:medium|normal|p2|media|should)\b", re.I), "medium"),
)


def table_priority(cell: str) -> str | None:
    """A Priority column's value as the schema's high | medium | low (None: unrecognised)."""
    cell = cell.strip(" *_")
    return next((value for pattern, value in _PRIORITY_VALUE if pattern.match(cell)), None)


def _cells(line: _Line) -> list[tuple[int, int]]:
    """Offsets of a markdown table row's cells (stripped), in the document."""
    body = line.text
    out = []
    bars = [i for i, ch in enumerate(body) if ch == "|"]
    if not body.lstrip().startswith("|"):  # "a | b | c": a table row without outer bars
        bars = [-1, *bars, len(body)]
    for a, b in itertools.pairwise(bars):
        s, e = a + 1, b
        while s < e and body[s] == " ":
            s += 1
        while e > s and body[e - 1] == " ":
            e -= 1
        out.append((line.start + s, line.start + e))
    return out


_FIGURE_CELL = re.compile(
    r"^[*_ ]*[-+]?[£$€¥]?\s?[\d.,]+\s?(?:%|[kKmM]|[A-Za-z]{3})?[*_ ]*$|^[-–—]?$")


def _figures_table(text: str, rows: list[_Line], text_col: int | None, *others: object) -> bool:
    """A table whose every other column holds amounts (a budget, a price list), with no
    owner, due or status column."""
    if any(o not in (None, []) for o in others):
        return False
    seen = 0
    for row in rows:
        cells = _cells(row)
        for i, (s, e) in enumerate(cells):
            if i == (text_col if text_col is not None else 0):
                continue
            if not _FIGURE_CELL.match(text[s:e]):
                return False
            seen += 1
    return seen > 0


def _table(out: list[Candidate], text: str, rows: list[_Line], section: str | None,
           max_words: int) -> None:
    """A markdown table: one candidate per data row, from its task column, with owner/due."""
    ruled = len(rows) >= 3 and bool(_TABLE_RULE.match(rows[1].text))
    bare = len(rows) >= 2 and not rows[0].text.lstrip().startswith("|")
    if not (ruled or bare):
        return
    head = [text[s:e].strip(" *_").lower() for s, e in _cells(rows[0])]

    def col(pattern: re.Pattern[str]) -> int | None:
        return next((i for i, h in enumerate(head) if pattern.match(h)), None)

    text_col, owner_col, due_col = col(_TEXT_HEAD), col(_OWNER_HEAD), col(_DUE_HEAD)
    status_cols = [i for i, h in enumerate(head) if _STATUS_HEAD.match(h)]
    archived_cols = [i for i, h in enumerate(head) if _ARCHIVED_HEAD.match(h)]
    prio_col = col(_PRIORITY_HEAD)
    label = head[text_col] if text_col is not None else None
    body_rows = rows[2 if ruled else 1:]
    if _figures_table(text, body_rows, text_col, owner_col, due_col, status_cols):
        label = "figures"  # "Item | Budget | Spent": what things cost, not what to do
    for row in body_rows:
        cells = _cells(row)
        if not cells:
            continue

        def cell(i: int | None, cells: list[tuple[int, int]] = cells) -> str:
            return text[slice(*cells[i])].strip() if i is not None and i < len(cells) else ""

        if any(cell(i).lower() in {"true", "yes"} for i in archived_cols):
            continue  # an archived card is not a suggestion
        done = any(_DONE_VALUE.match(cell(i).strip(" *_")) for i in status_cols)
        i = text_col
        if i is None or i >= len(cells):  # no named column: the row's longest cell
            i = max(range(len(cells)), key=lambda k: cells[k][1] - cells[k][0])
        s, e = cells[i]
        owner, due = cell(owner_col), cell(due_col)
        before = len(out)
        _add(out, text, s, e, "cell", section, label=label, line_no=row.no,
             max_words=max_words)
        if len(out) > before:
            c = out[-1]
            out[-1] = Candidate(c.start, c.end, c.text, c.shape, c.section, checked=done,
                                owner=owner or None, label=c.label, line_no=c.line_no,
                                date_text=due or None, priority=table_priority(cell(prio_col)))


_HIDDEN = re.compile(r"<!--.*?(?:-->|\Z)", re.S)


def _mask_hidden(text: str) -> str:
    """HTML comments (what a mail client never shows, where injected instructions hide)
    blanked out, newlines kept, so every offset still points at the document's text."""
    return _HIDDEN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def find_candidates(text: str, *, max_words: int = 60) -> list[Candidate]:
    """All bullet/checkbox/chat/sentence spans of ``text`` in document order (none inside an
    HTML comment)."""
    text = _mask_hidden(text)
    out: list[Candidate] = []
    section: str | None = None
    paragraph: list[_Line] = []
    table: list[_Line] = []

    def flush_paragraph() -> None:
        if not paragraph:
            return
        first, last = paragraph[0], paragraph[-1]
        for s, e in _sentences(text, first.start, last.end):
            _add(out, text, s, e, "sentence", section, line_no=first.no, max_words=max_words)
        paragraph.clear()

    lines = _lines(text)
    bare = _bare_table_lines(lines)
    for line in lines:
        body = line.text
        if _TABLE_ROW.match(body) or line.no in bare:
            flush_paragraph()
            if table and line.no in bare and bare[line.no] != bare.get(table[0].no):
                _table(out, text, table, section, max_words)  # the next table starts
                table.clear()
            table.append(line)
            continue
        if table:
            _table(out, text, table, section, max_words)
            table.clear()
        if not body.strip():
            flush_paragraph()
            continue
        head = _heading(body)
        if head is not None:
            flush_paragraph()
            section = head
            continue
        m = _CHECKBOX.match(body)
        if m:
            flush_paragraph()
            checked = m.group(1).strip() != ""
            _add(out, text, line.start + m.start("body"), line.end, "checkbox", section,
                 checked=checked, line_no=line.no, max_words=max_words)
            continue
        m = _BULLET.match(body)
        if m:
            flush_paragraph()
            for s, e in _sentences(text, line.start + m.start("body"), line.end):
                _add(out, text, s, e, "bullet", section, line_no=line.no, max_words=max_words)
            continue
        m = _BOLD_LABEL.match(body)
        if m:  # "**Report date:** 30 September": a field of the document, not a speaker
            flush_paragraph()
            for s, e in _sentences(text, line.start + m.start("body"), line.end):
                _add(out, text, s, e, "labeled", section, label=m.group("who").strip(),
                     line_no=line.no, max_words=max_words)
            continue
        m = _CHAT.match(body) or _SPEAKER.match(body)
        if m and m.group("who").strip().lower() in LABEL_WORDS:
            flush_paragraph()
            for s, e in _sentences(text, line.start + m.start("body"), line.end):
                _add(out, text, s, e, "labeled", section, label=m.group("who").strip(),
                     line_no=line.no, max_words=max_words)
            continue
        if m and len(m.group("who").split()) <= 3:
            flush_paragraph()
            for s, e in _sentences(text, line.start + m.start("body"), line.end, casual=True):
                _add(out, text, s, e, "chat", section, speaker=m.group("who").strip(),
                     line_no=line.no, max_words=max_words)
            continue
        if _SALUTATION.match(body) and len(body.split()) <= 6:
            flush_paragraph()
            _add(out, text, line.start, line.end, "sentence", section, line_no=line.no,
                 max_words=max_words)
            continue
        paragraph.append(line)
        if body.rstrip().endswith((".", "!", "?")) and len(paragraph) == 1 and len(body) < 200:
            flush_paragraph()
    flush_paragraph()
    if table:
        _table(out, text, table, section, max_words)
    return out


def _bare_table_lines(lines: list[_Line]) -> dict[int, int]:
    """Line number → table id for runs of two or more "a | b | c" lines with as many cells."""
    out: dict[int, int] = {}
    run: list[_Line] = []

    def close() -> None:
        if len(run) >= 2:
            out.update((ln.no, run[0].no) for ln in run)
        run.clear()

    for line in lines:
        if _BARE_ROW.match(line.text) and not _TABLE_ROW.match(line.text):
            if run and run[0].text.count(" | ") != line.text.count(" | "):
                close()
            run.append(line)
        else:
            close()
    close()
    return out


def _add(out: list[Candidate], text: str, start: int, end: int, shape: str,
         section: str | None, *, checked: bool = False, speaker: str | None = None,
         label: str | None = None, line_no: int = 0, max_words: int = 60) -> None:
    start, end, owner, cleaned_label = _clean(text, start, end)
    label = label or cleaned_label
    span = text[start:end]
    words = span.split()
    if len(words) < 2 or len(words) > max_words or not any(ch.isalpha() for ch in span):
        return
    out.append(Candidate(start=start, end=end, text=span, shape=shape, section=section,
                         checked=checked, speaker=speaker, owner=owner, label=label,
                         line_no=line_no))


__all__ = ["Candidate", "find_candidates"]
