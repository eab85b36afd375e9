"""Extraction throughput on bench/data, three ways in one run, same model, same machine.

    python bench/extract.py [--docs N] [--json]

(a) the seed's way: one fresh prompt per document (its system prompt + schema + the document
    cut at 8,000 characters), KV cache reset, free JSON generation, sequential;
(b) our local engine with the model asked about every unsure span (``--judge-weight 0.6``:
    candidates + the model's yes/no, prefix reuse); (b0) the shipped default for this model
    (judge weight 0 from the manifest, measured by bench/calibrate.py: no model calls);
(c) raw llama-cpp-python replaying exactly the prompts (b) evaluated, with the same prefix
    reuse and nothing else: (b)/(c) is the cost of our pipeline around the model;
(d) the hybrid strategy (``extraction_strategy=hybrid``: the rules plus one reading of each
    document by the model under a reused prefix), with llama.cpp's own milliseconds of
    prompt evaluation and generation for those readings: (d)/(model time) is the share of
    its wall time the model itself takes (the rest is our pipeline and the rules).

Prints documents/minute for each, the ratios b/a (target ≥ 1.5) and b/c (target ≥ 0.95).
``--model`` picks the model (a manifest name or a GGUF path; default: the configured one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.extractors import judge as judge_mod  # noqa: E402
from sidecar.extractors.base import ExtractionRequest  # noqa: E402
from sidecar.extractors.llama_runtime import eval_prompt  # noqa: E402
from sidecar.extractors.local import LocalExtractor  # noqa: E402
from sidecar.paths import Paths  # noqa: E402
from sidecar.readers import read_document  # noqa: E402
from sidecar.settings import Config  # noqa: E402

DATA = ROOT / "bench" / "data"

#: The seed's prompt, verbatim (agent_runner.py ``_EXTRACTION_SYSTEM_PROMPT``).
SEED_SYSTEM = """\
You are a data extraction assistant for a freelance project management tool.
Given a document, extract structured records matching the user's instructions.
Output a JSON array (no markdown fences, no explanation) of objects shaped:
[{{"table": "<table_name>", "data": {{...fields}}}}, ...]
Allowed table names and their fields:
{table_schemas}
Rules:
- Only extract tables listed in the "data_types" instructions.
- Use camelCase field names exactly as shown above.
- Omit optional fields you cannot determine; do not invent data.
- Never include id, createdAt, updatedAt, isAiSuggested, or isApproved.
- If nothing relevant is found, return an empty JSON array: []
- Return ONLY the JSON array.
"""
TYPES = ("tasks", "notes")
#: The seed's field descriptions, verbatim (``_TABLE_SCHEMAS``), for its prompt.
SEED_TABLES = """\
  tasks: title (str, required), description (str), status (todo|in_progress|done, default \
todo), priority (high|medium|low, default medium), assignee (JSON array string), dueDate (ms \
timestamp int), projectId (str)
  notes: title (str, required), content (str, markdown), projectId (str)"""


def documents(limit: int | None) -> list[tuple[str, str]]:
    files = sorted(p for p in DATA.iterdir() if p.suffix in (".md", ".txt", ".eml"))
    docs = [(p.name, read_document(p, max_bytes=10_000_000).text) for p in files]
    return docs[:limit] if limit else docs


def seed_style(engine: LocalExtractor, docs: list[tuple[str, str]]) -> dict[str, Any]:
    """(a): what the old server did per file, with this model."""
    system = SEED_SYSTEM.format(table_schemas=SEED_TABLES)
    parsed = 0
    tokens = 0

    def run(llm: Any) -> None:
        nonlocal parsed, tokens
        for _name, text in docs:
            llm.reset()  # no reuse across files
            out = llm.create_chat_completion(messages=[
                {"role": "system", "content": system},
                {"role": "user", "content": f"User instructions: Extract action items and "
                 f"notes.\n\nExtract these record types: {', '.join(TYPES)}\n\n"
                 f"Document:\n{text[:8000]}"}], temperature=0.0, max_tokens=512, seed=0)
            tokens += out["usage"]["total_tokens"]
            try:
                parsed += isinstance(json.loads(out["choices"][0]["message"]["content"]), list)
            except ValueError:
                pass

    started = time.perf_counter()
    asyncio.run(engine.runtime.call(run))
    took = time.perf_counter() - started
    return {"seconds": took, "docs_per_min": len(docs) / took * 60, "valid_json": parsed,
            "tokens": tokens}


class Recorder:
    """Wraps eval_prompt inside the judge to capture the exact token lists (b) evaluates."""

    def __init__(self) -> None:
        self.prompts: list[list[int]] = []
        self._orig = judge_mod.eval_prompt

    def __enter__(self) -> Recorder:
        def recording(llm: Any, tokens: Any, runtime: Any = None) -> Any:
            self.prompts.append(list(tokens))
            return self._orig(llm, tokens, runtime)

        judge_mod.eval_prompt = recording  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        judge_mod.eval_prompt = self._orig  # type: ignore[assignment]


async def ours(engine: LocalExtractor, docs: list[tuple[str, str]]) -> dict[str, Any]:
    items = 0
    started = time.perf_counter()
    for name, text in docs:
        result = await engine.extract(ExtractionRequest(text=text, data_types=TYPES,
                                                        label=name))
        items += len(result.items)
    took = time.perf_counter() - started
    return {"seconds": took, "docs_per_min": len(docs) / took * 60, "items": items}


async def hybrid(engine: LocalExtractor, docs: list[tuple[str, str]]) -> dict[str, Any]:
    """(d): the hybrid over the same documents, and how much of it is the model's own time."""
    items = calls = 0
    model_ms = 0.0
    started = time.perf_counter()
    for name, text in docs:
        result = await engine.extract(ExtractionRequest(text=text, data_types=TYPES,
                                                        label=name))
        items += len(result.items)
        calls += int(result.stats.get("model_calls", 0))
        model_ms += float(result.stats.get("llama_prompt_ms", 0.0)) + float(
            result.stats.get("llama_answer_ms", 0.0))
    took = time.perf_counter() - started
    return {"seconds": took, "docs_per_min": len(docs) / took * 60, "items": items,
            "model_calls": calls, "model_seconds": model_ms / 1000,
            "model_share": model_ms / 1000 / took if took else 0.0}


def raw_replay(engine: LocalExtractor, prompts: list[list[int]], n_docs: int
               ) -> dict[str, Any]:
    def run(llm: Any) -> None:
        llm.reset()
        for tokens in prompts:
            eval_prompt(llm, tokens)

    started = time.perf_counter()
    asyncio.run(engine.runtime.call(run))
    took = time.perf_counter() - started
    return {"seconds": took, "docs_per_min": n_docs / took * 60, "prompts": len(prompts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=None, help="only the first N documents")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--model", default=None, help="a manifest name or a GGUF path")
    args = ap.parse_args()
    docs = documents(args.docs)
    # 4096: the seed-style prompt (8,000 characters + schema + answer) must fit
    chosen = {"model": args.model} if args.model else {}
    config = Config.load({"extraction_strategy": "extractive", "model_context": 4096,
                          "judge_weight": 0.6, **chosen})
    engine = LocalExtractor.from_config(config, Paths.from_config(config))
    asyncio.run(engine.runtime.call(lambda llm: None))  # load once, outside the timings

    a = seed_style(engine, docs)
    asyncio.run(engine.runtime.call(lambda llm: llm.reset()))
    with Recorder() as rec:
        b = asyncio.run(ours(engine, docs))
    c = raw_replay(engine, rec.prompts, len(docs))
    default = LocalExtractor(engine.runtime, strategy="extractive",
                             tuning=LocalExtractor.from_config(
                                 Config.load({}), Paths.from_config(config)).tuning)
    b0 = asyncio.run(ours(default, docs))
    d = asyncio.run(hybrid(LocalExtractor(engine.runtime, strategy="hybrid",
                                          tuning=engine.tuning), docs))
    out = {"docs": len(docs), "chars": sum(len(t) for _, t in docs), "seed_style": a,
           "ours": b, "ours_default_weight": b0, "raw_llama_same_prompts": c, "hybrid": d,
           "ratio_ours_vs_seed": b["docs_per_min"] / a["docs_per_min"],
           "ratio_ours_vs_raw": b["docs_per_min"] / c["docs_per_min"]}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{len(docs)} documents, {out['chars']:,} characters, model "
          f"{engine.model.path.name}, {engine.runtime.threads} threads")
    print(f"(a) seed-style, fresh prompt per file:   {a['docs_per_min']:7.1f} docs/min "
          f"({a['seconds']:.1f} s; {a['valid_json']}/{len(docs)} answers were a JSON array)")
    print(f"(b) our local engine:                    {b['docs_per_min']:7.1f} docs/min "
          f"({b['seconds']:.1f} s; {b['items']} records)")
    print(f"(b0) shipped default (judge weight {default.tuning.model_weight:g}):"
          f"{b0['docs_per_min']:9.1f} docs/min ({b0['seconds']:.2f} s; {b0['items']} records)")
    print(f"(c) raw llama-cpp-python, same prompts:  {c['docs_per_min']:7.1f} docs/min "
          f"({c['seconds']:.1f} s; {c['prompts']} prompts)")
    print(f"(d) hybrid, one reading per document:   {d['docs_per_min']:7.1f} docs/min "
          f"({d['seconds']:.1f} s; {d['items']} records; {d['model_calls']} readings; "
          f"the model's own time {d['model_share']:.0%} of it)")
    print(f"b/a = {out['ratio_ours_vs_seed']:.2f} (target >= 1.5)   "
          f"b/c = {out['ratio_ours_vs_raw']:.2f} (target >= 0.95)")


if __name__ == "__main__":
    main()
