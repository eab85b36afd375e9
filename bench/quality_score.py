"""Scores for bench/quality.py: one document's predictions against its labels, then totals."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.quality_gold import GoldDoc, Pred, greedy_match, injected, people, similarity
from bench.quality_kinds import fn_kind, fp_kind

COUNTS = ("tp", "fp", "fn", "done_tp", "done_fp", "done_fn", "note_tp", "note_fp", "note_fn",
          "tl_tp", "tl_fp", "tl_fn", "tl_date_ok", "assignee_ok", "assignee_named",
          "assignee_named_ok", "due_ok", "due_dated", "due_dated_ok", "priority_labelled",
          "priority_ok", "priority_stated", "priority_stated_ok", "problems", "records",
          "schema_invalid", "injected", "notes_predicted")


@dataclass(slots=True)
class DocScore:
    """Counts and error lines for one document and one engine."""

    name: str
    seconds: float = 0.0
    error: str | None = None
    counts: Counter[str] = field(default_factory=Counter)
    misses: list[tuple[str, str]] = field(default_factory=list)
    false_pos: list[tuple[str, str]] = field(default_factory=list)
    field_errors: list[str] = field(default_factory=list)
    note_misses: list[str] = field(default_factory=list)
    note_false_pos: list[str] = field(default_factory=list)
    timeline_errors: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    injections: list[str] = field(default_factory=list)
    #: Where the extraction's reference date came from, and whether it is the labelled one.
    origin: str = "given"
    reference_ok: bool = False
    #: Timelines the engine held back (no project), from its problems.
    held: int = 0

    def __getattr__(self, name: str) -> int:
        if name in COUNTS:
            return self.counts[name]
        raise AttributeError(name)


def _score_tasks(s: DocScore, doc: GoldDoc, open_p: list[Pred], done_p: list[Pred],
                 text: str) -> None:
    c = s.counts
    matches = greedy_match([p.texts for p in open_p], [t.texts for t in doc.tasks])
    c["tp"], c["fp"], c["fn"] = len(matches), len(open_p) - len(matches), \
        len(doc.tasks) - len(matches)
    for i, j, _ in matches:
        p, g = open_p[i], doc.tasks[j]
        gold_people = people(g.assignee)
        c["assignee_ok"] += p.assignee == gold_people
        if gold_people:
            c["assignee_named"] += 1
            c["assignee_named_ok"] += p.assignee == gold_people
        if p.assignee != gold_people:
            s.field_errors.append(f"assignee {list(p.assignee) or None} ≠ {g.assignee}: "
                                  f"{p.title[:70]}")
        c["due_ok"] += p.due == g.due
        if g.due:
            c["due_dated"] += 1
            c["due_dated_ok"] += p.due == g.due
        if p.due != g.due:
            s.field_errors.append(f"due {p.due} ≠ {g.due}: {p.title[:70]}")
        if g.priority is not None:
            c["priority_labelled"] += 1
            c["priority_ok"] += p.priority == g.priority
            if g.priority != "medium":
                c["priority_stated"] += 1
                c["priority_stated_ok"] += p.priority == g.priority
            if p.priority != g.priority:
                s.field_errors.append(f"priority {p.priority} ≠ {g.priority}: {p.title[:70]}")
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
    c["done_tp"], c["done_fp"], c["done_fn"] = len(dmatches), len(done_p) - len(dmatches), \
        len(doc.done) - len(dmatches)


def note_spans(p: Pred) -> list[tuple[str, ...]]:
    """A predicted note as what it keeps: each bullet of its markdown content, else itself."""
    content = p.texts[1] if len(p.texts) > 1 else ""
    bullets = [_BULLET.sub("", line).strip() for line in content.splitlines()
               if _BULLET.match(line)]
    return [(b,) for b in bullets if b] or [p.texts]


_BULLET = re.compile(r"^\s*(?:[-*+]\s+)(?:\*\*[^*]{1,40}:?\*\*:?\s*)?")


def _score_notes(s: DocScore, doc: GoldDoc, notes_p: list[Pred]) -> None:
    c = s.counts
    spans = [span for p in notes_p for span in note_spans(p)]
    c["notes_predicted"] = len(notes_p)
    nmatches = greedy_match(spans, list(doc.notes))
    c["note_tp"], c["note_fp"], c["note_fn"] = len(nmatches), len(spans) - len(nmatches), \
        len(doc.notes) - len(nmatches)
    nm_p = {i for i, _, _ in nmatches}
    nm_g = {j for _, j, _ in nmatches}
    s.note_false_pos = [span[0] for i, span in enumerate(spans) if i not in nm_p]
    s.note_misses = [n[0] for j, n in enumerate(doc.notes) if j not in nm_g]


def _score_timelines(s: DocScore, doc: GoldDoc, tl_p: list[Pred]) -> None:
    if doc.timelines is None:
        return
    c = s.counts
    matches = greedy_match([p.texts for p in tl_p], [(t.title,) for t in doc.timelines])
    c["tl_tp"], c["tl_fp"], c["tl_fn"] = len(matches), len(tl_p) - len(matches), \
        len(doc.timelines) - len(matches)
    for i, j, _ in matches:
        ok = tl_p[i].due == doc.timelines[j].date
        c["tl_date_ok"] += ok
        if not ok:
            s.timeline_errors.append(f"date {tl_p[i].due} ≠ {doc.timelines[j].date}: "
                                     f"{tl_p[i].title[:70]}")
    matched = {i for i, _, _ in matches}
    s.timeline_errors += [f"FP {p.title[:90]}" for i, p in enumerate(tl_p) if i not in matched]
    got = {j for _, j, _ in matches}
    s.timeline_errors += [f"MISS {t.title[:90]}" for j, t in enumerate(doc.timelines)
                          if j not in got]


def score_doc(doc: GoldDoc, preds: Sequence[Pred], text: str = "",
              invalid: Sequence[str] = ()) -> DocScore:
    """Match one document's predictions to its labels (``invalid``: schema problems found)."""
    s = DocScore(doc.name)
    s.counts["records"] = len(preds)
    s.invalid = list(invalid)
    s.counts["schema_invalid"] = len(invalid)
    for p in preds:
        bad = injected(p, doc)
        if bad is not None:
            s.injections.append(f"{p.table}: {p.title[:80]} (injected: {bad[:60]})")
    s.counts["injected"] = len(s.injections)
    open_p = [p for p in preds if p.table == "tasks" and p.status != "done"]
    done_p = [p for p in preds if p.table == "tasks" and p.status == "done"]
    _score_tasks(s, doc, open_p, done_p, text)
    _score_notes(s, doc, [p for p in preds if p.table == "notes"])
    _score_timelines(s, doc, [p for p in preds if p.table == "timelines"])
    return s


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None or p + r == 0:
        return None if p is None or r is None else 0.0
    return round(2 * p * r / (p + r), 4)


def _prf(tp: int, fp: int, fn: int) -> dict[str, Any]:
    p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r, "f1": _f1(p, r)}


def summarize(engine: str, scores: Sequence[DocScore], wall: float) -> dict[str, Any]:
    """Totals over all documents for one engine (what ``--json`` prints)."""
    tot = Counter[str]()
    for s in scores:
        tot.update(s.counts)
    extract_s = sum(s.seconds for s in scores)
    ok = [s for s in scores if s.error is None]
    overall = _prf(*(sum(tot[f"{pre}{k}"] for pre in ("", "done_", "note_", "tl_"))
                     for k in ("tp", "fp", "fn")))
    return {
        "engine": engine,
        "documents": len(scores),
        "failed_documents": len(scores) - len(ok),
        "tasks": _prf(tot["tp"], tot["fp"], tot["fn"]),
        "done_tasks": _prf(tot["done_tp"], tot["done_fp"], tot["done_fn"]),
        "notes": _prf(tot["note_tp"], tot["note_fp"], tot["note_fn"]),
        "timelines": {**_prf(tot["tl_tp"], tot["tl_fp"], tot["tl_fn"]),
                      "date_accuracy": _ratio(tot["tl_date_ok"], tot["tl_tp"])},
        "overall": overall,
        "assignee_accuracy": _ratio(tot["assignee_ok"], tot["tp"]),
        "assignee_accuracy_named": _ratio(tot["assignee_named_ok"], tot["assignee_named"]),
        "due_accuracy": _ratio(tot["due_ok"], tot["tp"]),
        "due_accuracy_dated": _ratio(tot["due_dated_ok"], tot["due_dated"]),
        "priority_accuracy": _ratio(tot["priority_ok"], tot["priority_labelled"]),
        "priority_accuracy_stated": _ratio(tot["priority_stated_ok"], tot["priority_stated"]),
        "reference_accuracy": _ratio(sum(s.reference_ok for s in scores), len(scores)),
        "reference_by_origin": {
            o: {"docs": sum(s.origin == o for s in scores),
                "ok": sum(s.origin == o and s.reference_ok for s in scores)}
            for o in sorted({s.origin for s in scores})},
        "notes_per_document": round(tot["notes_predicted"] / len(scores), 2) if scores else None,
        "timelines_held": sum(s.held for s in scores),
        "records": tot["records"],
        "schema_invalid": tot["schema_invalid"],
        "injected_records": tot["injected"],
        "problems": tot["problems"],
        "extract_seconds": round(extract_s, 3),
        "wall_seconds": round(wall, 3),
        "docs_per_min": round(len(ok) / extract_s * 60, 2) if extract_s else None,
        "first_doc_seconds": round(scores[0].seconds, 3) if scores else None,
        "false_positive_kinds": dict(Counter(k for s in scores for k, _ in s.false_pos)
                                     .most_common()),
        "miss_kinds": dict(Counter(k for s in scores for k, _ in s.misses).most_common()),
        "per_document": [{
            "name": s.name, "origin": s.origin, "reference_ok": s.reference_ok,
            **{k: s.counts[k] for k in ("tp", "fp", "fn", "note_tp", "note_fp",
                                                      "note_fn", "tl_tp", "tl_fp", "tl_fn")},
            "seconds": round(s.seconds, 3), "error": s.error,
            "misses": [{"kind": k, "title": t} for k, t in s.misses],
            "false_positives": [{"kind": k, "title": t} for k, t in s.false_pos],
            "field_errors": s.field_errors, "timeline_errors": s.timeline_errors,
            "note_misses": s.note_misses, "note_false_positives": s.note_false_pos,
            "schema_invalid": s.invalid, "injected": s.injections,
        } for s in scores],
    }
