"""Task and note extraction quality of the engines against the hand-labelled set in bench/data.

    python bench/quality.py [--engine rules,local] [--verbose] [--json] [--check-gold]

Every document named in ``bench/data/gold.json`` is read with the daemon's own reader
(``sidecar.readers.read_document``) and extracted with ``data_types=("tasks", "notes")`` and
the document's reference date at 09:00 local time.

Matching: titles are normalised (case, whitespace, punctuation); a predicted item matches a
gold item when their token-level F1 is ≥ 0.6 or one normalised text contains the other.
Pairs are matched one-to-one, greedily, best score first. A gold task may list ``aliases``
(another mention of the same action in the document); a gold note may be a list of
alternative spans. Predicted tasks with ``status == "done"`` are scored against
``done_tasks`` (checked boxes), all other predicted tasks against ``tasks``.

Gold conventions (bench/data/gold.json):

* a task is something someone still has to do; past/done items, pure questions, ideas and
  conditionals ("if Ben asks…") are not tasks; a checked ``[x]`` box is a ``done_task``;
* ``assignee`` is the person named as responsible (``Tom to…``, ``@maria``, ``(owner: Li)``,
  an Owner column, ``Sam, can you…``); a first-person commitment belongs to the chat speaker
  or the email's sender; otherwise ``null`` (the user);
* ``due`` is the date the task's own sentence states, resolved as a person would ("Friday" is
  the coming Friday, "this week" its Friday, "next week" its Monday), else ``null``;
* notes are decisions, agreements and facts worth keeping (budget, scope, key dates).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.extractors.base import ExtractionRequest, Extractor  # noqa: E402
from sidecar.readers import read_document  # noqa: E402

DATA = ROOT / "bench" / "data"
MAX_BYTES = 20 * 1024 * 1024
MATCH_F1 = 0.6
ENGINES = ("rules", "local")


# ── text matching ───────────────────────────────────────────────────────────

_PUNCT = re.compile(r"[^\w\s]|_", re.UNICODE)


def normalize(text: str) -> str:
    """Lower case, punctuation as spaces, single spaces: what titles are compared on."""
    text = text.replace("’", "'").replace("'", "")
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def token_f1(a: str, b: str) -> float:
    """Token-level F1 of two texts (multiset overlap after normalisation)."""
    ta, tb = normalize(a).split(), normalize(b).split()
    if not ta or not tb:
        return 0.0
    common = sum((Counter(ta) & Counter(tb)).values())
    if common == 0:
        return 0.0
    p, r = common / len(ta), common / len(tb)
    return 2 * p * r / (p + r)


def contains(a: str, b: str) -> bool:
    """One normalised text contains the other on word boundaries."""
    na, nb = normalize(a), normalize(b)
    if not na or not nb:
        return False
    return f" {na} " in f" {nb} " or f" {nb} " in f" {na} "


def similarity(pred: Sequence[str], gold: Sequence[str]) -> float:
    """Best match score over alternative texts; 0.0 when no pair counts as a match."""
    best = 0.0
    for p in pred:
        for g in gold:
            f1 = token_f1(p, g)
            score = max(f1, MATCH_F1) if contains(p, g) else f1
            if score >= MATCH_F1:
                best = max(best, score)
    return best


def greedy_match(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]
                 ) -> list[tuple[int, int, float]]:
    """One-to-one matching, best-scoring pairs first: (pred index, gold index, score)."""
    pairs = [(similarity(p, g), i, j) for i, p in enumerate(preds) for j, g in enumerate(golds)]
    pairs = sorted((s, i, j) for s, i, j in pairs if s > 0.0)
    pairs.reverse()
    used_p: set[int] = set()
    used_g: set[int] = set()
    out = []
    for s, i, j in pairs:
        if i in used_p or j in used_g:
            continue
        used_p.add(i)
        used_g.add(j)
        out.append((i, j, s))
    return out


# ── gold and predictions ────────────────────────────────────────────────────

@dataclass(frozen=True, slots=True)
class GoldTask:
    """One labelled open task: its title, other mentions, owner and due date."""

    title: str
    aliases: tuple[str, ...]
    assignee: str | None
    due: str | None

    @property
    def texts(self) -> tuple[str, ...]:
        return (self.title, *self.aliases)


@dataclass(frozen=True, slots=True)
class GoldDoc:
    """The labels of one document."""

    name: str
    reference: date
    tasks: tuple[GoldTask, ...]
    done: tuple[str, ...]
    notes: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Pred:
    """One predicted record, reduced to what is scored."""

    table: str
    texts: tuple[str, ...]
    status: str
    assignee: tuple[str, ...]
    due: str | None

    @property
    def title(self) -> str:
        return self.texts[0]


def load_gold(path: Path) -> list[GoldDoc]:
    """Parse gold.json (keys starting with ``_`` are comments)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    docs = []
    for name, entry in sorted(raw.items()):
        if name.startswith("_"):
            continue
        tasks = tuple(GoldTask(t["title"], tuple(t.get("aliases") or ()), t.get("assignee"),
                               t.get("due")) for t in entry.get("tasks", []))
        notes = tuple((n,) if isinstance(n, str) else tuple(n) for n in entry.get("notes", []))
        docs.append(GoldDoc(name, date.fromisoformat(entry["reference_date"]), tasks,
                            tuple(entry.get("done_tasks", [])), notes))
    return docs


def _people(value: Any) -> tuple[str, ...]:
    """Assignee as a sorted tuple of lower-case first names ("@Maria", "Li Wei" → li)."""
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = [value]
    if isinstance(value, str):
        value = [value]
    names: set[str] = set()
    for item in value or ():
        for part in re.split(r",|&|\band\b", str(item)):
            words = normalize(part).split()
            if words:
                names.add(words[0])
    return tuple(sorted(names))


def _day(ms: Any) -> str | None:
    if not isinstance(ms, int | float):
        return None
    return datetime.fromtimestamp(ms / 1000).date().isoformat()


def to_pred(table: str, data: dict[str, Any]) -> Pred:
    """A result item as the fields the scorer compares."""
    title = str(data.get("title") or "")
    texts = [title]
    content = data.get("content") or data.get("description")
    if isinstance(content, str) and content.strip() and content.strip() != title:
        texts.append(content)
    return Pred(table, tuple(texts), str(data.get("status") or "todo"),
                _people(data.get("assignee")), _day(data.get("dueDate")))


# ── error kinds ─────────────────────────────────────────────────────────────

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


# ── scoring ─────────────────────────────────────────────────────────────────

@dataclass(slots=True)
class DocScore:
    """Counts and error lines for one document and one engine."""

    name: str
    seconds: float = 0.0
    problems: int = 0
    error: str | None = None
    tp: int = 0
    fp: int = 0
    fn: int = 0
    done_tp: int = 0
    done_fp: int = 0
    done_fn: int = 0
    note_tp: int = 0
    note_fp: int = 0
    note_fn: int = 0
    assignee_ok: int = 0
    assignee_named: int = 0
    assignee_named_ok: int = 0
    due_ok: int = 0
    due_dated: int = 0
    due_dated_ok: int = 0
    misses: list[tuple[str, str]] = field(default_factory=list)
    false_pos: list[tuple[str, str]] = field(default_factory=list)
    field_errors: list[str] = field(default_factory=list)
    note_misses: list[str] = field(default_factory=list)
    note_false_pos: list[str] = field(default_factory=list)


def score_doc(doc: GoldDoc, preds: Sequence[Pred], text: str = "") -> DocScore:
    """Match one document's predictions to its labels."""
    s = DocScore(doc.name)
    open_p = [p for p in preds if p.table == "tasks" and p.status != "done"]
    done_p = [p for p in preds if p.table == "tasks" and p.status == "done"]
    notes_p = [p for p in preds if p.table == "notes"]

    matches = greedy_match([p.texts for p in open_p], [t.texts for t in doc.tasks])
    s.tp = len(matches)
    s.fp = len(open_p) - s.tp
    s.fn = len(doc.tasks) - s.tp
    for i, j, _ in matches:
        p, g = open_p[i], doc.tasks[j]
        gold_people = _people(g.assignee)
        s.assignee_ok += p.assignee == gold_people
        if gold_people:
            s.assignee_named += 1
            s.assignee_named_ok += p.assignee == gold_people
        if p.assignee != gold_people:
            s.field_errors.append(f"assignee {list(p.assignee) or None} ≠ {g.assignee}: "
                                  f"{p.title[:70]}")
        s.due_ok += p.due == g.due
        if g.due:
            s.due_dated += 1
            s.due_dated_ok += p.due == g.due
        if p.due != g.due:
            s.field_errors.append(f"due {p.due} ≠ {g.due}: {p.title[:70]}")
    matched_p = {i for i, _, _ in matches}
    matched_g = {j for _, j, _ in matches}
    unmatched_p = [p for i, p in enumerate(open_p) if i not in matched_p]
    for p in unmatched_p:
        s.false_pos.append((fp_kind(p, doc, matched_g, text), p.title))
    for j, t in enumerate(doc.tasks):
        if j not in matched_g:
            kind = fn_kind(t, unmatched_p, text)
            if any(similarity(p.texts, t.texts) for p in done_p):
                kind = "open task predicted as done"
            s.misses.append((kind, t.title))

    dmatches = greedy_match([p.texts for p in done_p], [(d,) for d in doc.done])
    s.done_tp = len(dmatches)
    s.done_fp = len(done_p) - s.done_tp
    s.done_fn = len(doc.done) - s.done_tp

    nmatches = greedy_match([p.texts for p in notes_p], list(doc.notes))
    s.note_tp = len(nmatches)
    s.note_fp = len(notes_p) - s.note_tp
    s.note_fn = len(doc.notes) - s.note_tp
    nm_p = {i for i, _, _ in nmatches}
    nm_g = {j for _, j, _ in nmatches}
    s.note_false_pos = [p.title for i, p in enumerate(notes_p) if i not in nm_p]
    s.note_misses = [n[0] for j, n in enumerate(doc.notes) if j not in nm_g]
    return s


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None or p + r == 0:
        return None if p is None or r is None else 0.0
    return round(2 * p * r / (p + r), 4)


def summarize(engine: str, scores: Sequence[DocScore], wall: float) -> dict[str, Any]:
    """Totals over all documents for one engine (what ``--json`` prints)."""
    tot = Counter[str]()
    for s in scores:
        for k in ("tp", "fp", "fn", "done_tp", "done_fp", "done_fn", "note_tp", "note_fp",
                  "note_fn", "assignee_ok", "assignee_named", "assignee_named_ok", "due_ok",
                  "due_dated", "due_dated_ok", "problems"):
            tot[k] += getattr(s, k)
    p = _ratio(tot["tp"], tot["tp"] + tot["fp"])
    r = _ratio(tot["tp"], tot["tp"] + tot["fn"])
    np_ = _ratio(tot["note_tp"], tot["note_tp"] + tot["note_fp"])
    nr = _ratio(tot["note_tp"], tot["note_tp"] + tot["note_fn"])
    dp = _ratio(tot["done_tp"], tot["done_tp"] + tot["done_fp"])
    dr = _ratio(tot["done_tp"], tot["done_tp"] + tot["done_fn"])
    extract_s = sum(s.seconds for s in scores)
    ok = [s for s in scores if s.error is None]
    return {
        "engine": engine,
        "documents": len(scores),
        "failed_documents": len(scores) - len(ok),
        "tasks": {"tp": tot["tp"], "fp": tot["fp"], "fn": tot["fn"], "precision": p,
                  "recall": r, "f1": _f1(p, r)},
        "assignee_accuracy": _ratio(tot["assignee_ok"], tot["tp"]),
        "assignee_accuracy_named": _ratio(tot["assignee_named_ok"], tot["assignee_named"]),
        "due_accuracy": _ratio(tot["due_ok"], tot["tp"]),
        "due_accuracy_dated": _ratio(tot["due_dated_ok"], tot["due_dated"]),
        "done_tasks": {"tp": tot["done_tp"], "fp": tot["done_fp"], "fn": tot["done_fn"],
                       "precision": dp, "recall": dr},
        "notes": {"tp": tot["note_tp"], "fp": tot["note_fp"], "fn": tot["note_fn"],
                  "precision": np_, "recall": nr, "f1": _f1(np_, nr)},
        "problems": tot["problems"],
        "extract_seconds": round(extract_s, 3),
        "wall_seconds": round(wall, 3),
        "docs_per_min": round(len(ok) / extract_s * 60, 2) if extract_s else None,
        "first_doc_seconds": round(scores[0].seconds, 3) if scores else None,
        "false_positive_kinds": dict(Counter(k for s in scores for k, _ in s.false_pos)
                                     .most_common()),
        "miss_kinds": dict(Counter(k for s in scores for k, _ in s.misses).most_common()),
        "per_document": [{
            "name": s.name, "tp": s.tp, "fp": s.fp, "fn": s.fn, "note_tp": s.note_tp,
            "note_fp": s.note_fp, "note_fn": s.note_fn, "seconds": round(s.seconds, 3),
            "error": s.error,
            "misses": [{"kind": k, "title": t} for k, t in s.misses],
            "false_positives": [{"kind": k, "title": t} for k, t in s.false_pos],
            "field_errors": s.field_errors,
        } for s in scores],
    }


# ── engines ─────────────────────────────────────────────────────────────────

def make_engine(name: str) -> Extractor:
    """Build an engine the way the daemon would, with default settings."""
    if name == "rules":
        from sidecar.extractors.rules import RulesExtractor

        return RulesExtractor()
    if name == "local":
        from sidecar.extractors.local import LocalExtractor
        from sidecar.paths import Paths
        from sidecar.settings import Config

        config = Config.load({})
        return LocalExtractor.from_config(config, Paths.from_config(config))
    raise SystemExit(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")


@dataclass(frozen=True, slots=True)
class LoadedDoc:
    """A gold document with its extracted text."""

    gold: GoldDoc
    text: str


def load_docs(data: Path, gold: Sequence[GoldDoc]) -> list[LoadedDoc]:
    return [LoadedDoc(g, read_document(data / g.name, max_bytes=MAX_BYTES).text) for g in gold]


async def run_engine(name: str, docs: Sequence[LoadedDoc],
                     progress: Callable[[str], None]) -> dict[str, Any]:
    """Extract every document with one engine and score it."""
    t0 = time.perf_counter()
    scores: list[DocScore] = []
    engine = make_engine(name)
    try:
        for d in docs:
            ref = d.gold.reference
            request = ExtractionRequest(
                d.text, data_types=("tasks", "notes"),
                document_date=datetime(ref.year, ref.month, ref.day, 9, 0).astimezone(),
                label=d.gold.name)
            start = time.perf_counter()
            try:
                result = await engine.extract(request)
            except Exception as exc:  # an unusable engine is a result, not a crash
                s = score_doc(d.gold, [])
                s.error = f"{type(exc).__name__}: {exc}"
                s.seconds = time.perf_counter() - start
                scores.append(s)
                progress(f"{name}: {d.gold.name}: {s.error}")
                continue
            elapsed = time.perf_counter() - start
            preds = [to_pred(it.table, dict(it.data)) for it in result.items]
            s = score_doc(d.gold, preds, d.text)
            s.seconds = elapsed
            s.problems = len(result.problems)
            scores.append(s)
            progress(f"{name}: {d.gold.name} {elapsed:.2f}s tp={s.tp} fp={s.fp} fn={s.fn}")
    finally:
        await engine.aclose()
    return summarize(name, scores, time.perf_counter() - t0)


# ── gold sanity check ───────────────────────────────────────────────────────

def check_gold(docs: Sequence[LoadedDoc]) -> list[str]:
    """Gold spans that are not (near-)substrings of their document's text."""
    out = []
    for d in docs:
        norm_doc = f" {normalize(d.text)} "
        spans = [t for g in d.gold.tasks for t in g.texts] + list(d.gold.done)
        spans += [n for alts in d.gold.notes for n in alts]
        for span in spans:
            if f" {normalize(span)} " not in norm_doc:
                out.append(f"{d.gold.name}: not a substring: {span!r}")
    return out


# ── output ──────────────────────────────────────────────────────────────────

def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{x * 100:5.1f}"


def print_report(results: Sequence[dict[str, Any]], verbose: bool) -> None:
    """Human-readable summary table, error kinds, and (verbose) per-document details."""
    print(f"{'engine':<8} {'task P':>6} {'R':>6} {'F1':>6} {'assg':>6} {'assg*':>6} "
          f"{'due':>6} {'due*':>6} {'note P':>6} {'R':>6} {'done P':>6} {'R':>6} "
          f"{'docs/min':>9}")
    for r in results:
        t, n, d = r["tasks"], r["notes"], r["done_tasks"]
        rate = "n/a" if r["docs_per_min"] is None else f"{r['docs_per_min']:.1f}"
        print(f"{r['engine']:<8} {_pct(t['precision']):>6} {_pct(t['recall']):>6} "
              f"{_pct(t['f1']):>6} {_pct(r['assignee_accuracy']):>6} "
              f"{_pct(r['assignee_accuracy_named']):>6} {_pct(r['due_accuracy']):>6} "
              f"{_pct(r['due_accuracy_dated']):>6} {_pct(n['precision']):>6} "
              f"{_pct(n['recall']):>6} {_pct(d['precision']):>6} {_pct(d['recall']):>6} "
              f"{rate:>9}")
    print("(assg/due: accuracy on matched tasks; assg*/due*: only where gold names a person/"
          "date; percentages)")
    for r in results:
        t, n = r["tasks"], r["notes"]
        print(f"\n== {r['engine']}: tasks tp={t['tp']} fp={t['fp']} fn={t['fn']}; notes "
              f"tp={n['tp']} fp={n['fp']} fn={n['fn']}; {r['documents']} docs, "
              f"{r['failed_documents']} failed, {r['problems']} problems, "
              f"{r['extract_seconds']:.1f}s extracting (first doc {r['first_doc_seconds']}s)")
        print("  false positives by kind:")
        for k, c in r["false_positive_kinds"].items():
            print(f"    {c:4d}  {k}")
        print("  misses by kind:")
        for k, c in r["miss_kinds"].items():
            print(f"    {c:4d}  {k}")
        if not verbose:
            continue
        for doc in r["per_document"]:
            if not (doc["misses"] or doc["false_positives"] or doc["field_errors"]
                    or doc["error"]):
                continue
            print(f"\n  -- {doc['name']}  tp={doc['tp']} fp={doc['fp']} fn={doc['fn']}  "
                  f"notes tp={doc['note_tp']} fp={doc['note_fp']} fn={doc['note_fn']}")
            if doc["error"]:
                print(f"     ERROR {doc['error']}")
            for m in doc["misses"]:
                print(f"     MISS [{m['kind']}] {m['title']}")
            for f in doc["false_positives"]:
                print(f"     FP   [{f['kind']}] {f['title'][:110]}")
            for e in doc["field_errors"]:
                print(f"     FIELD {e}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default=",".join(ENGINES),
                    help="comma-separated engines to score (rules, local)")
    ap.add_argument("--data", type=Path, default=DATA, help="directory holding gold.json")
    ap.add_argument("--verbose", "-v", action="store_true",
                    help="per-document misses, false positives and field errors")
    ap.add_argument("--json", action="store_true", help="print a machine-readable summary")
    ap.add_argument("--check-gold", action="store_true",
                    help="only check that gold spans occur in their documents")
    args = ap.parse_args(argv)

    gold = load_gold(args.data / "gold.json")
    docs = load_docs(args.data, gold)
    bad = check_gold(docs)
    if args.check_gold:
        print("\n".join(bad) or f"gold OK: {len(docs)} documents")
        return 1 if bad else 0
    names = [e.strip() for e in args.engine.split(",") if e.strip()]

    def progress(line: str) -> None:
        if args.verbose and not args.json:
            print(line, file=sys.stderr)

    results = [asyncio.run(run_engine(n, docs, progress)) for n in names]
    if args.json:
        print(json.dumps({"documents": len(docs), "gold_warnings": bad,
                          "engines": {r["engine"]: r for r in results}}, indent=2,
                         ensure_ascii=False))
    else:
        for w in bad:
            print(f"warning: {w}", file=sys.stderr)
        print_report(results, args.verbose)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
