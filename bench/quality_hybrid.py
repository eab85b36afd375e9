"""The hybrid strategy measured and tuned without re-running the model for every setting.

    python bench/quality_hybrid.py collect --model NAME [--set all] [--out FILE]
    python bench/quality_hybrid.py tune [--cache FILE]

``collect`` reads every labelled document once with the model, exactly as the hybrid engine
does (``model_reading.read_document`` on the reader's text, hidden parts blanked), and keeps
what it listed, the tokens it evaluated, reused and wrote, and the seconds it took. It also
measures this machine's prompt-evaluation and generation rates for the model (before and after,
averaged: the machine is shared) and derives the hybrid's ceiling in documents a minute: every
document's new prompt tokens at the prompt rate plus its answer tokens at the generation rate.

``tune`` replays the merge (``hybrid.merge``, CPU only) over the cached readings: a grid of
:class:`~sidecar.extractors.hybrid.HybridTuning` scored on the development set only
(``gold.json``); the chosen setting, the default and the rules alone are then reported on
every set, the held-out ones never having been looked at while choosing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quality import DATA, DATA_TYPES, PROJECT_ID, SETS, LoadedDoc, load_set, request_for  # noqa: E402
from bench.quality_gold import schema_problems, to_pred  # noqa: E402
from bench.quality_score import score_doc, summarize  # noqa: E402
from sidecar.extractors.base import ExtractionProblem, ExtractionRequest  # noqa: E402
from sidecar.extractors.candidates import _mask_hidden  # noqa: E402
from sidecar.extractors.extractive import Tuning  # noqa: E402
from sidecar.extractors.hybrid import HybridTuning, merge  # noqa: E402
from sidecar.extractors.llama_runtime import LlamaRuntime  # noqa: E402
from sidecar.extractors.model_reading import Reading, read_document  # noqa: E402
from sidecar.extractors.postprocess import reference_date  # noqa: E402

CACHE = ROOT / "bench" / "hybrid_readings.json"


def _request(d: LoadedDoc) -> ExtractionRequest:
    """The daemon's request for ``d`` (title, sender and kind too), in the benchmark's project."""
    return request_for(d, project_id=PROJECT_ID)


def rates(llm: Any, text: str) -> tuple[float, float]:
    """(prompt tokens/s, generated tokens/s) for this model on this machine, now."""
    tokens = llm.tokenize(text.encode(), add_bos=False)[:400]
    llm.reset()
    t = time.perf_counter()
    llm.eval(tokens)
    pe = len(tokens) / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(48):
        llm.eval([llm.sample(temp=0.0)])
    return pe, 48 / (time.perf_counter() - t)


async def collect(model: str, which: str, out: Path) -> None:
    from sidecar.model_files import resolve
    from sidecar.paths import Paths
    from sidecar.settings import Config

    config = Config.load({"model": model})
    runtime = LlamaRuntime(resolve(config.model, Paths.from_config(config).model_dir),
                           threads=config.model_threads, n_ctx=config.model_context)
    sample = (DATA / "10_q1_retrospective_long.md").read_text()
    t = time.perf_counter()
    before = await runtime.call(lambda llm: rates(llm, sample))
    load = runtime.load_seconds
    docs: dict[str, Any] = {}
    for s in (list(SETS) if which == "all" else [which]):
        for d in load_set(DATA, s):
            started = time.perf_counter()
            reading = await read_document(runtime, _mask_hidden(d.text),
                                          reference_date(_request(d)))
            seconds = time.perf_counter() - started
            docs[d.gold.name] = {"set": s, "seconds": seconds, "lists": reading.lists,
                                 "calls": reading.calls, "prompt": reading.prompt_tokens,
                                 "reused": reading.reused_tokens,
                                 "answer": reading.answer_tokens,
                                 "truncated": reading.truncated, "looped": reading.looped}
            print(f"{d.gold.name}: {seconds:.1f}s {reading.prompt_tokens - reading.reused_tokens}"
                  f" new + {reading.answer_tokens} written tokens", file=sys.stderr)
    after = await runtime.call(lambda llm: rates(llm, sample))
    await runtime.close()
    import resource

    out.write_text(json.dumps({
        "model": runtime.model.name, "threads": runtime.threads, "n_ctx": runtime.n_ctx,
        "load_seconds": load, "wall_seconds": time.perf_counter() - t,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "rates": {"prompt_tok_s": [before[0], after[0]], "gen_tok_s": [before[1], after[1]]},
        "docs": docs}, indent=1))


def speed(cache: dict[str, Any], names: list[str]) -> dict[str, float]:
    """Achieved docs/min, the ceiling from the measured rates, and their ratio."""
    pe = sum(cache["rates"]["prompt_tok_s"]) / 2
    gen = sum(cache["rates"]["gen_tok_s"]) / 2
    docs = [cache["docs"][n] for n in names]
    achieved = sum(d["seconds"] for d in docs)
    ideal = sum((d["prompt"] - d["reused"]) / pe + d["answer"] / gen for d in docs)
    return {"docs_per_min": 60 * len(docs) / achieved, "ceiling_docs_per_min":
            60 * len(docs) / ideal, "of_ceiling": ideal / achieved, "prompt_tok_s": pe,
            "gen_tok_s": gen, "new_prompt_tokens_per_doc": sum(d["prompt"] - d["reused"]
                                                               for d in docs) / len(docs),
            "answer_tokens_per_doc": sum(d["answer"] for d in docs) / len(docs)}


def score(docs: list[LoadedDoc], cache: dict[str, Any], tuning: HybridTuning | None
          ) -> dict[str, Any]:
    """The hybrid's scores with ``tuning`` (None: the rules alone) over cached readings."""
    scores = []
    for d in docs:
        reading = Reading()
        if tuning is not None:
            reading.lists = cache["docs"][d.gold.name]["lists"]
        use = tuning or RULES_ONLY
        request = _request(d)
        problems: list[ExtractionProblem] = []
        items = merge(request, reference_date(request), reading, problems, Tuning(), use)
        pairs = [(it.table, dict(it.data)) for it in items]
        invalid = [m for t, data in pairs for m in schema_problems(t, data, DATA_TYPES)]
        scores.append(score_doc(d.gold, [to_pred(t, data) for t, data in pairs], d.text,
                                invalid))
    return summarize("hybrid", scores, 1.0)


def _line(name: str, r: dict[str, Any]) -> str:
    f = [r["tasks"]["f1"], r["notes"]["f1"], r["timelines"]["f1"]]
    cells = " ".join("  n/a" if x is None else f"{x * 100:5.1f}" for x in f)
    return (f"{name:<28} tasks/notes/timelines F1 {cells}  due {r['due_accuracy_dated']}  "
            f"invalid {r['schema_invalid']} injected {r['injected_records']}")


RULES_ONLY = HybridTuning(listed=0.0, unlisted=0.0, listed_timeline=0.0, unlisted_timeline=0.0,
                          propose_tasks=False, propose_timelines=False, write_note=False)


def objective(r: dict[str, Any]) -> float:
    """The mean F1 of the tables the set labels (the dev set had no timelines until 2026-12)."""
    f = [r[t]["f1"] for t in ("tasks", "notes", "timelines")]
    f = [x for x in f if x is not None] or [0.0]
    return sum(f) / len(f)


def choose(dev: list[LoadedDoc], cache: dict[str, Any]) -> HybridTuning:
    """Grids on the dev set, one after the other: the tasks' and notes' switches, the
    note lines' own weights, the timelines' on top, then grounding reworded listings to
    their clause with the proposals."""
    first = [HybridTuning(listed=a, unlisted=b, propose_tasks=p, write_note=w)
             for a, b, p, w in itertools.product((1.0, 2.0, 3.0), (0.0, -0.5, -1.0, -1.5),
                                                 (True, False), (True, False))]
    best = max(first, key=lambda t: objective(score(dev, cache, t)))
    notes = [replace(best, listed_note=a, unlisted_note=b)
             for a, b in itertools.product((None, 0.0, 1.0, 2.0), (None, 0.0, -0.5, -1.0))]
    best = max(notes, key=lambda t: objective(score(dev, cache, t)))
    second = [replace(best, listed_timeline=a, unlisted_timeline=b, propose_timelines=p,
                      milestone_own_date=o, milestone_beside_task=t)
              for a, b, p, o, t in itertools.product(
                  (None, 0.0, 1.0, 2.0, 3.0), (None, 0.0, -0.5, -1.0, -2.0), (True, False),
                  (True, False), (True, False)) if p or (o and not t)]
    best = max(second, key=lambda t: objective(score(dev, cache, t)))
    third = [replace(best, clause_f1=c, propose_tasks=p, propose_timelines=q)
             for c, p, q in itertools.product((None, 0.6, 0.75), (True, False), (True, False))]
    return max(third, key=lambda t: objective(score(dev, cache, t)))


def tune(cache_path: Path, fixed: HybridTuning | None = None) -> None:
    """Grid on the dev set (or ``fixed``: the shipped default), then every set reported."""
    cache = json.loads(cache_path.read_text())
    sets = {s: [d for d in load_set(DATA, s) if d.gold.name in cache["docs"]] for s in SETS}
    sets["held-out (heldout+third)"] = sets["heldout"] + sets["third"]
    best = fixed or choose(sets["dev"], cache)
    print(f"model {cache['model']}; {'fixed' if fixed else 'chosen on the dev set'}: "
          f"{asdict(best)}")
    summary: dict[str, Any] = {}
    for s, docs in sets.items():
        if not docs:
            continue
        print(f"\n## {s} ({len(docs)} documents)")
        print(_line("rules", score(docs, cache, None)))
        print(_line("hybrid (default tuning)", score(docs, cache, HybridTuning())))
        tuned = score(docs, cache, best)
        print(_line("hybrid (tuned on dev)", tuned))
        print(_line("hybrid, judge only", score(docs, cache, replace(
            best, propose_tasks=False, propose_timelines=False))))
        sp = speed(cache, [d.gold.name for d in docs])
        print("speed: " + ", ".join(f"{k} {v:.2f}" for k, v in sp.items()))
        summary[s] = {"tasks": tuned["tasks"], "notes": tuned["notes"],
                      "timelines": tuned["timelines"], "due": tuned["due_accuracy_dated"],
                      "invalid": tuned["schema_invalid"],
                      "injected": tuned["injected_records"], "speed": sp}
    print(json.dumps(summary, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("collect", "tune"))
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct-q4_k_m")
    ap.add_argument("--set", default="all", choices=("all", *SETS))
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--shipped", action="store_true",
                    help="tune: report the shipped HybridTuning instead of searching")
    args = ap.parse_args()
    if args.mode == "collect":
        asyncio.run(collect(args.model, args.set, args.cache))
    else:
        tune(args.cache, HybridTuning() if args.shipped else None)


if __name__ == "__main__":
    main()
