"""Extraction quality of the engines against hand-labelled documents in bench/data.

    python bench/quality.py [--engine rules,local,local-judge] [--set all|dev|heldout]
                            [--verbose] [--json] [--check-gold]

Three label files: ``gold.json`` (documents 01–28, the development set the candidate features
were tuned on), ``gold_heldout.json`` (documents 29–40, written and labelled afterwards
without looking at the extractor's output) and ``gold_third.json`` (documents 41–, written
and labelled for issue 14 before the extractor saw them: dated notes months old, multi-day
chats, day-first emails, milestone plans). Every document is read with the daemon's own
reader (``sidecar.readers.read_document``) from a copy whose mtime is its labelled
reference date at 18:00 (a file is saved the day it is written; a git checkout's mtime means
nothing) plus ``--mtime-lag-days``, and extracted with ``data_types=("tasks", "notes",
"timelines")``, a project id (timelines need one) and the reference date the reader found
(``--given-reference``: the labelled date instead, as before issue 14). ``ref`` is the share
of documents whose reader-found reference date is the labelled one, by origin below.

Engines: ``rules`` (no model), ``local`` (the shipped default: the manifest's judge weight,
0 for the embedded model, so it is not asked), ``local-judge`` (the embedded model asked
yes/no about every unsure candidate, weight 0.6), ``local-generative`` (the model writes
the records itself under a JSON-Schema grammar) and ``local-hybrid`` (the rules plus one
reading of each document by the model: ``sidecar/extractors/hybrid.py``). ``--model`` picks
the local engines' model (a manifest name or a GGUF path).

Matching: titles are normalised (case, whitespace, punctuation); a predicted item matches a
gold item when their token-level F1 is ≥ 0.6 or one normalised text contains the other.
Pairs are matched one-to-one, greedily, best score first. A gold task may list ``aliases``
(another mention of the same action in the document); a gold note may be a list of
alternative spans. Predicted tasks with ``status == "done"`` are scored against
``done_tasks`` (checked boxes), all other predicted tasks against ``tasks``. Every record is
also checked against the seed's table schemas (``schema_invalid``) and against the document's
``injected`` instructions (``injected``: a record that repeats one).

Gold conventions:

* a task is something someone still has to do; past/done items, pure questions, ideas and
  conditionals ("if Ben asks…") are not tasks; a checked ``[x]`` box is a ``done_task``;
* ``assignee`` is the person named as responsible (``Tom to…``, ``@maria``, ``(owner: Li)``,
  an Owner column, ``Sam, can you…``); a first-person commitment belongs to the chat speaker
  or the email's sender; otherwise ``null`` (the user);
* ``due`` is the date the task's own sentence states, resolved as a person would ("Friday" is
  the coming Friday, "this week" its Friday, "next week" its Monday), else ``null``;
* ``priority`` (held-out set) is ``high``/``low`` where the text says so, else ``null``;
* notes are decisions, agreements and facts worth keeping (budget, scope, key dates); a
  predicted note is scored by its spans: each bullet of its markdown content (a note without
  bullets is one span), matched one-to-one to the gold notes, so one summary note per
  document is scored on what it keeps;
* timelines (every set; the dev set's labelled by hand from the documents for issue 15) are
  dated milestones and scheduled events, with their date (a range: its first day); a task's
  own due date is not one, an external deadline stated as a date ("the printer needs … by")
  is; a document with none has an empty list (no key: not labelled, not scored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quality_gold import (  # noqa: E402
    GoldDoc,
    load_gold,
    normalize,
    schema_problems,
    to_pred,
)
from bench.quality_score import score_doc, summarize  # noqa: E402
from sidecar.extractors.base import ExtractionRequest, Extractor  # noqa: E402
from sidecar.readers import read_document  # noqa: E402
from sidecar.readers.base import Document  # noqa: E402

DATA = ROOT / "bench" / "data"
SETS = {"dev": "gold.json", "heldout": "gold_heldout.json", "third": "gold_third.json"}
MAX_BYTES = 20 * 1024 * 1024
ENGINES = ("rules", "local", "local-judge", "local-generative", "local-hybrid")
DEFAULT_ENGINES = ("rules", "local", "local-judge")
DATA_TYPES = ("tasks", "notes", "timelines")
PROJECT_ID = "eval-project"
_HELD = re.compile(r"^(\d+) timelines? held\b")


def make_engine(name: str, model: str | None = None) -> Extractor:
    """Build an engine the way the daemon would, with default settings (``model``: a manifest
    name or GGUF path instead of the default model)."""
    if name == "rules":
        from sidecar.extractors.rules import RulesExtractor

        return RulesExtractor()
    if name in ENGINES:
        from sidecar.extractors.local import LocalExtractor
        from sidecar.paths import Paths
        from sidecar.settings import Config

        overrides: dict[str, Any] = {
            "local-judge": {"judge_weight": 0.6, "extraction_strategy": "extractive"},
            "local-generative": {"extraction_strategy": "generative"},
            "local-hybrid": {"extraction_strategy": "hybrid"},
        }.get(name, {})
        if model:
            overrides["model"] = model
        config = Config.load(overrides)
        return LocalExtractor.from_config(config, Paths.from_config(config))
    raise SystemExit(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")


@dataclass(frozen=True, slots=True)
class LoadedDoc:
    """A gold document with its extracted text and the reference date the reader found."""

    gold: GoldDoc
    text: str
    date: datetime | None = None
    origin: str | None = None
    #: The reader's whole document (title, sender, kind …): engines get what the daemon gives.
    doc: Document | None = None


def load_docs(data: Path, gold: Sequence[GoldDoc], mtime_lag_days: float = 0.0
              ) -> list[LoadedDoc]:
    """Read each document from a copy whose mtime is its labelled date (18:00) plus a lag."""
    out = []
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        for g in gold:
            copy = Path(tmp) / g.name
            shutil.copyfile(data / g.name, copy)
            saved = datetime(g.reference.year, g.reference.month, g.reference.day, 18)
            stamp = saved.timestamp() + mtime_lag_days * 86400
            os.utime(copy, (stamp, stamp))
            doc = read_document(copy, max_bytes=MAX_BYTES)
            out.append(LoadedDoc(g, doc.text, doc.date, doc.meta.get("date_origin"), doc))
    return out


def load_set(data: Path, which: str, mtime_lag_days: float = 0.0) -> list[LoadedDoc]:
    """The documents of one label set (``dev``, ``heldout``, ``third``) or of all."""
    names = list(SETS) if which == "all" else [which]
    gold = [g for n in names if (data / SETS[n]).is_file() for g in load_gold(data / SETS[n])]
    return load_docs(data, gold, mtime_lag_days)


def request_for(d: LoadedDoc, **instructions: Any) -> ExtractionRequest:
    """The request the daemon would make for ``d`` (its reader's document whole: text, date,
    title, sender, kind), asking for the benchmark's tables."""
    if d.doc is None:  # a document made up in a test: its text and date only
        return ExtractionRequest(d.text, data_types=DATA_TYPES, document_date=d.date,
                                 date_origin=d.origin, label=d.gold.name, **instructions)
    return ExtractionRequest.for_document(d.doc, data_types=DATA_TYPES, label=d.gold.name,
                                          **instructions)


async def run_engine(name: str, docs: Sequence[LoadedDoc],
                     progress: Callable[[str], None], *, given_reference: bool = False,
                     project_id: str | None = PROJECT_ID,
                     stale_before: datetime | None = None, model: str | None = None
                     ) -> dict[str, Any]:
    """Extract every document with one engine and score it."""
    t0 = time.perf_counter()
    scores = []
    budget: dict[str, float] = {}
    engine = make_engine(name, model)
    try:
        for d in docs:
            ref = d.gold.reference
            when, origin = d.date, d.origin
            if given_reference:
                when, origin = datetime(ref.year, ref.month, ref.day, 9, 0).astimezone(), "given"
            request = replace(request_for(d, project_id=project_id, stale_before=stale_before),
                              document_date=when, date_origin=origin)
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
            for key in ("document_tokens", "answer_tokens", "llama_prompt_ms", "llama_answer_ms",
                        "llama_prompt_tokens", "llama_answer_tokens"):
                budget[key] = budget.get(key, 0.0) + float(result.stats.get(key, 0) or 0)
            budget["seconds"] = budget.get("seconds", 0.0) + elapsed
            items = [(it.table, dict(it.data)) for it in result.items]
            invalid = [msg for t, data in items for msg in schema_problems(t, data, DATA_TYPES)]
            s = score_doc(d.gold, [to_pred(t, data) for t, data in items], d.text, invalid)
            s.origin = origin or "now"
            s.reference_ok = when is not None and when.date() == ref
            s.held = sum(int(m.group(1)) for pr in result.problems
                         if (m := _HELD.match(pr.message)) is not None)
            s.seconds = elapsed
            s.counts["problems"] = len(result.problems)
            scores.append(s)
            progress(f"{name}: {d.gold.name} {elapsed:.2f}s tp={s.tp} fp={s.fp} fn={s.fn}")
    finally:
        runtime = getattr(engine, "runtime", None)
        await engine.close()
    out = summarize(name, scores, time.perf_counter() - t0)
    out["model"] = runtime.model.name if runtime is not None and runtime.loads else None
    out["load_seconds"] = round(runtime.load_seconds, 2) if out["model"] else None
    out["peak_rss_mb"] = round(_peak_rss() / 1e6)
    out["speed"] = ceiling(budget, len(docs))
    return out


def ceiling(b: dict[str, float], docs: int) -> dict[str, float] | None:
    """The model's token budget at this machine's rates, measured by llama.cpp during the run:
    prompt tokens/s and generated tokens/s; the docs/min a pipeline doing nothing but the
    budget (each document's own tokens and its answer; the shared prefix free) would reach;
    and the share of it reached."""
    if not b.get("llama_prompt_ms") or not b.get("llama_answer_ms"):
        return None
    pe = b["llama_prompt_tokens"] / b["llama_prompt_ms"] * 1000
    gen = b["llama_answer_tokens"] / b["llama_answer_ms"] * 1000
    ideal = b["document_tokens"] / pe + b["answer_tokens"] / gen
    return {"prompt_tok_s": round(pe, 1), "gen_tok_s": round(gen, 1),
            "document_tokens_per_doc": round(b["document_tokens"] / docs),
            "answer_tokens_per_doc": round(b["answer_tokens"] / docs),
            "ceiling_docs_per_min": round(60 * docs / ideal, 2),
            "docs_per_min": round(60 * docs / b["seconds"], 2),
            "of_ceiling": round(ideal / b["seconds"], 3)}


def _peak_rss() -> int:
    """This process's peak resident set so far, in bytes (run one model per process)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def check_gold(docs: Sequence[LoadedDoc]) -> list[str]:
    """Gold spans that are not (near-)substrings of their document's text."""
    out = []
    for d in docs:
        norm_doc = f" {normalize(d.text)} "
        g = d.gold
        spans = [t for task in g.tasks for t in task.texts] + list(g.done)
        spans += [n for alts in g.notes for n in alts] + [t.title for t in g.timelines or ()]
        for span in spans:
            if f" {normalize(span)} " not in norm_doc:
                out.append(f"{g.name}: not a substring: {span!r}")
    return out


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{x * 100:5.1f}"


_COLUMNS = (
    ("task P", lambda r: r["tasks"]["precision"]), ("R", lambda r: r["tasks"]["recall"]),
    ("F1", lambda r: r["tasks"]["f1"]), ("assg", lambda r: r["assignee_accuracy"]),
    ("due*", lambda r: r["due_accuracy_dated"]), ("prio*", lambda r: r["priority_accuracy_stated"]),
    ("note P", lambda r: r["notes"]["precision"]), ("R", lambda r: r["notes"]["recall"]),
    ("F1", lambda r: r["notes"]["f1"]), ("tl P", lambda r: r["timelines"]["precision"]),
    ("R", lambda r: r["timelines"]["recall"]), ("F1", lambda r: r["timelines"]["f1"]),
    ("date", lambda r: r["timelines"]["date_accuracy"]),
    ("ref", lambda r: r["reference_accuracy"]), ("all F1", lambda r: r["overall"]["f1"]),
)


def print_report(title: str, results: Sequence[dict[str, Any]], verbose: bool) -> None:
    """Summary table, error kinds, and (verbose) per-document details."""
    docs = results[0]["documents"] if results else 0
    print(f"\n## {title}: {docs} documents")
    print(f"{'engine':<17}" + "".join(f"{c:>7}" for c, _ in _COLUMNS)
          + f"{'invalid':>8}{'inject':>7}{'docs/min':>10}")
    for r in results:
        rate = "n/a" if r["docs_per_min"] is None else f"{r['docs_per_min']:.1f}"
        print(f"{r['engine']:<17}" + "".join(f"{_pct(f(r)):>7}" for _, f in _COLUMNS)
              + f"{r['schema_invalid']:>8}{r['injected_records']:>7}{rate:>10}"
              + f"  {r.get('model') or '-'} load {r.get('load_seconds') or 0:.1f}s "
              f"peak RSS {r.get('peak_rss_mb', 0)} MB")
        if r.get("speed"):
            print(f"  {r['engine']} speed: " + ", ".join(f"{k} {v}" for k, v in
                                                        r["speed"].items()))
    print("(percentages; assg: assignee right on matched tasks; due*/prio*: on matched tasks "
          "whose gold states a date/priority; date: timeline date right; invalid: records "
          "failing the seed's schema; inject: records repeating an injected instruction)")
    for r in results:
        by = ", ".join(f"{o} {v['ok']}/{v['docs']}" for o, v in r["reference_by_origin"].items())
        print(f"{r['engine']}: reference date right by origin: {by}; notes per document "
              f"{r['notes_per_document']}; timelines held without a project: "
              f"{r['timelines_held']}")
    for r in results:
        t, n, tl = r["tasks"], r["notes"], r["timelines"]
        print(f"\n== {r['engine']}: tasks tp={t['tp']} fp={t['fp']} fn={t['fn']}; notes "
              f"tp={n['tp']} fp={n['fp']} fn={n['fn']}; timelines tp={tl['tp']} fp={tl['fp']} "
              f"fn={tl['fn']}; {r['records']} records, {r['failed_documents']} failed docs, "
              f"{r['problems']} problems, {r['extract_seconds']:.1f}s extracting")
        for label, kinds in (("false positives", "false_positive_kinds"),
                             ("misses", "miss_kinds")):
            print(f"  task {label} by kind:")
            for k, c in r[kinds].items():
                print(f"    {c:4d}  {k}")
        for doc in r["per_document"]:
            for line in doc["injected"] + doc["schema_invalid"]:
                print(f"  !! {doc['name']}: {line}")
        if verbose:
            _print_details(r)


def _print_details(r: dict[str, Any]) -> None:
    for doc in r["per_document"]:
        lines = ([f"ERROR {doc['error']}"] if doc["error"] else [])
        lines += [f"MISS [{m['kind']}] {m['title']}" for m in doc["misses"]]
        lines += [f"FP   [{f['kind']}] {f['title'][:110]}" for f in doc["false_positives"]]
        lines += [f"FIELD {e}" for e in doc["field_errors"]]
        lines += [f"NOTE MISS {t[:110]}" for t in doc["note_misses"]]
        lines += [f"NOTE FP   {t[:110]}" for t in doc["note_false_positives"]]
        lines += [f"TL {e}" for e in doc["timeline_errors"]]
        if lines:
            print(f"\n  -- {doc['name']}  tp={doc['tp']} fp={doc['fp']} fn={doc['fn']}  notes "
                  f"tp={doc['note_tp']} fp={doc['note_fp']} fn={doc['note_fn']}  timelines "
                  f"tp={doc['tl_tp']} fp={doc['tl_fp']} fn={doc['tl_fn']}")
            for line in lines:
                print(f"     {line}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default=",".join(DEFAULT_ENGINES),
                    help=f"comma-separated engines to score ({', '.join(ENGINES)})")
    ap.add_argument("--set", default="all", choices=("all", *SETS),
                    help="label set: dev (tuned on), heldout, or all (both, reported apart)")
    ap.add_argument("--data", type=Path, default=DATA, help="directory holding the gold files")
    ap.add_argument("--verbose", "-v", action="store_true",
                    help="per-document misses, false positives and field errors")
    ap.add_argument("--json", action="store_true", help="print a machine-readable summary")
    ap.add_argument("--check-gold", action="store_true",
                    help="only check that gold spans occur in their documents")
    ap.add_argument("--given-reference", action="store_true",
                    help="extract with the labelled reference date, not the one the reader finds")
    ap.add_argument("--no-project", action="store_true",
                    help="extract without a project id (timelines are then held)")
    ap.add_argument("--first-run-at", type=date.fromisoformat, default=None,
                    help="extract as an agent's first run on this day (YYYY-MM-DD) with "
                         "--lookback-days: stale documents give no tasks or timelines")
    ap.add_argument("--lookback-days", type=int, default=30,
                    help="initial_lookback_days for --first-run-at (default 30)")
    ap.add_argument("--model", default=None,
                    help="the local engines' model: a manifest name or a GGUF path (default: "
                         "the manifest's default)")
    ap.add_argument("--mtime-lag-days", type=float, default=0.0,
                    help="each copy's mtime is its labelled date at 18:00 plus this many days")
    args = ap.parse_args(argv)

    sets = list(SETS) if args.set == "all" else [args.set]
    loaded = {s: load_set(args.data, s, args.mtime_lag_days) for s in sets}
    bad = [w for docs in loaded.values() for w in check_gold(docs)]
    if args.check_gold:
        total = sum(len(d) for d in loaded.values())
        print("\n".join(bad) or f"gold OK: {total} documents")
        return 1 if bad else 0
    names = [e.strip() for e in args.engine.split(",") if e.strip()]

    def progress(line: str) -> None:
        if args.verbose:
            print(line, file=sys.stderr)

    stale = None
    if args.first_run_at is not None:
        from sidecar.extractors.postprocess import stale_before

        first = datetime(args.first_run_at.year, args.first_run_at.month, args.first_run_at.day,
                         9).astimezone()
        stale = stale_before(first, args.lookback_days, first_run=True)
    results = {s: [asyncio.run(run_engine(
        n, docs, progress, given_reference=args.given_reference,
        project_id=None if args.no_project else PROJECT_ID, stale_before=stale,
        model=args.model))
        for n in names]
        for s, docs in loaded.items() if docs}
    if args.json:
        print(json.dumps({"gold_warnings": bad, "sets": {
            s: {r["engine"]: r for r in rs} for s, rs in results.items()}}, indent=2,
            ensure_ascii=False))
        return 0
    for w in bad:
        print(f"warning: {w}", file=sys.stderr)
    for s, rs in results.items():
        print_report(f"{s} set ({SETS[s]})", rs, args.verbose)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
