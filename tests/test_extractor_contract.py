"""One contract, every engine: the reference rules engine, the embedded model, a remote server.

No check here may pass on an engine that extracts nothing: each engine first has to find the
obvious records of a small labelled document (a minimum recall per engine, from measurement),
every "all items obey X" check also asserts there were items, and the model-backed engines
must show that the model was asked.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sidecar.extractors.base import (
    ALLOWED_TABLES,
    ExtractionRequest,
    ExtractionResult,
    Extractor,
)
from sidecar.extractors.rules import RulesExtractor
from sidecar.extractors.schema import FORBIDDEN_FIELDS, normalize_item

REF = datetime(2026, 11, 25, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))

MEETING = """# Weekly sync: Atlas launch

## Notes
- Decision: the launch moves to December 10.
- The client prefers weekly email updates.
- Budget review with finance happens next quarter.
- Printer quotes came in higher than last year.

## Action items
- [ ] Maria to send the revised quote by Friday
- [ ] Book the venue for the launch party (urgent)
- [x] Share the design files with the printer
- Follow up on the catering options
- Ask Tom about the guest list
Thanks everyone for joining!
"""

#: MEETING labelled by hand (table, words the record's title must contain).
GOLD: tuple[tuple[str, str], ...] = (
    ("tasks", "revised quote"), ("tasks", "book the venue"), ("tasks", "design files"),
    ("tasks", "catering options"), ("tasks", "guest list"),
    ("notes", "launch moves to december 10"), ("notes", "weekly email updates"),
    ("notes", "budget review"), ("notes", "printer quotes"),
)

#: Measured on MEETING (table and words must match), then floored. Extractive engines find
#: 9/9 (notes as one summary note); SmolLM2-135M writing JSON under a grammar finds 1/9 on
#: the embedded runtime and 3/9 through llama_cpp.server (0/9 before titles were limited to
#: the document's lines; 1/9 since the worked example with several records of every table is
#: shown under the grammar too, issue 15: the 1.5B lists them all, the 135M model one); the
#: scripted fast server 7/9; the hybrid with SmolLM2 and its shipped tuning 9/9 (8/9 with
#: proposals and the model-written note on).
MIN_RECALL = {"rules": 1.0, "local-shipped": 1.0, "local-judge": 1.0,
              "local-generative": 1 / 9, "local-hybrid": 1.0, "remote": 1 / 9,
              "remote-fast": 7 / 9}
#: Engines whose stall is measured on big documents (the real model on 178 KB takes minutes;
#: the generative code path is covered at that size by remote-fast).
BIG_DOCS = {"rules", "local-shipped", "local-judge", "remote-fast"}


def fast_answer(body: dict[str, Any]) -> str:
    """A fast, capable-looking server: checkbox lines are tasks, other bullets notes, 1 invented."""
    from tests.fakes.openai_server import document_of

    items: list[dict[str, Any]] = []
    for line in document_of(body).splitlines():
        m = re.match(r"^\s*-\s+(\[[ xX]\]\s+)?(.+)$", line)
        if m:
            table = "tasks" if m.group(1) else "notes"
            items.append({"table": table, "data": {"title": m.group(2).strip()}})
    items.append({"table": "notes", "data": {"title": "A record the document never mentions"}})
    return json.dumps({"items": items})


ENGINES = ["rules", "local-shipped", "local-judge", "local-generative", "local-hybrid", "remote",
           "remote-fast"]


@pytest.fixture(params=ENGINES)
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Extractor]:
    from dataclasses import replace

    from sidecar.extractors.extractive import Tuning
    from sidecar.extractors.local import LocalExtractor
    from sidecar.extractors.remote import RemoteExtractor

    name = request.param
    built: Extractor
    if name == "rules":
        built = RulesExtractor()
    elif name == "local-shipped":  # what users get: the manifest's measured judge weight
        built = request.getfixturevalue("local_engine")
    elif name == "local-judge":  # the model asked about every unsure span
        built = LocalExtractor(request.getfixturevalue("local_engine").runtime,
                               strategy="extractive", tuning=replace(Tuning(), model_weight=0.6))
    elif name == "local-generative":  # JSON written by the model under a grammar
        built = LocalExtractor(request.getfixturevalue("local_engine").runtime,
                               strategy="generative")
    elif name == "local-hybrid":  # the rules, judged and completed by one reading per document
        built = LocalExtractor(request.getfixturevalue("local_engine").runtime,
                               strategy="hybrid")
    elif name == "remote":  # the real llama_cpp.server on loopback
        built = RemoteExtractor(request.getfixturevalue("llama_server"), "default", n_ctx=2048,
                                concurrency=1, timeout=300)
    else:  # a fast scripted server: the engine's own work at sizes the 135M model cannot do
        from tests.fakes.openai_server import FakeOpenAI

        fast = FakeOpenAI(fast_answer).start_in_thread()
        built = RemoteExtractor(fast.url, "fake", n_ctx=8192)
    built.contract_name = name  # type: ignore[attr-defined]
    yield built
    if name.startswith("remote"):
        await built.close()
    if name == "remote-fast":
        fast.stop_thread()


_results: dict[tuple[str, ExtractionRequest], ExtractionResult] = {}


async def extract(engine: Extractor, request: ExtractionRequest) -> ExtractionResult:
    """Engines are deterministic (temperature 0, seed 0): each request runs once per engine."""
    key = (engine.contract_name, request)  # type: ignore[attr-defined]
    if key not in _results:
        _results[key] = await engine.extract(request)
    return _results[key]


def _req(text: str, types: tuple[str, ...] = ("tasks", "notes"), **kw: object
         ) -> ExtractionRequest:
    return ExtractionRequest(text=text, data_types=types, document_date=REF, label="doc",
                             **kw)  # type: ignore[arg-type]


def _title(data: Any) -> str:
    return " ".join(str(data.get("title") or data.get("name") or "").lower().split())


def recall(result: ExtractionResult) -> float:
    # a note may be the document's summary: its words are in its title or its content
    found = sum(any(it.table == table and words in _title(it.data) + " " + " ".join(
        str(it.data.get("content") or "").lower().split()) for it in result.items)
                for table, words in GOLD)
    return found / len(GOLD)


async def test_finds_the_obvious_records(engine: Extractor) -> None:
    result = await extract(engine, _req(MEETING))
    name = engine.contract_name  # type: ignore[attr-defined]
    got = recall(result)
    print(f"recall {name}: {got:.2f} ({[(i.table, _title(i.data)) for i in result.items]})")
    assert got >= MIN_RECALL[name], (name, got, [(i.table, _title(i.data))
                                                 for i in result.items])


async def test_model_backed_engines_ask_the_model(engine: Extractor) -> None:
    from sidecar.model_files import load_manifest

    name = engine.contract_name  # type: ignore[attr-defined]
    stats = (await extract(engine, _req(MEETING))).stats
    if name == "rules":
        assert "model_calls" not in stats and not hasattr(engine, "runtime")
    elif name == "local-shipped":  # the manifest's weight 0 means: not asked (measured)
        weight = load_manifest().models[0].judge_weight
        assert (stats["model_calls"] > 0) == bool(weight), (weight, stats)
    elif name == "local-judge":
        assert stats["model_calls"] >= 3 and stats["tokens_evaluated"] > 0, stats
    elif name == "local-generative":
        assert stats["model_calls"] >= 1, stats
    elif name == "local-hybrid":  # one reading of the document, its tokens evaluated
        assert stats["model_calls"] == 1 and stats["tokens_evaluated"] > 0, stats
    else:
        assert stats["requests"] >= 1, stats


async def test_items_obey_the_table_contract(engine: Extractor) -> None:
    result = await extract(engine, _req(MEETING))
    assert result.items, "nothing extracted: the checks below would hold vacuously"
    for item in result.items:
        assert item.table in {"tasks", "notes"} and item.table in ALLOWED_TABLES
        assert not set(FORBIDDEN_FIELDS) & set(item.data)
        assert normalize_item(item.table, item.data, reference=REF) == dict(item.data)
        assert 0.0 <= item.confidence <= 1.0
        if item.source.span is not None:
            s, e = item.source.span
            assert 0 <= s < e <= len(MEETING)
    assert any(it.source.span is not None for it in result.items)


async def test_only_requested_types(engine: Extractor) -> None:
    tasks_only = await extract(engine, _req(MEETING, ("tasks",)))
    assert tasks_only.items and all(i.table == "tasks" for i in tasks_only.items)
    nothing = await extract(engine, _req(MEETING, ("users",)))
    assert nothing.items == ()


async def test_empty_document_gives_nothing(engine: Extractor) -> None:
    assert (await extract(engine, _req(MEETING))).items  # it does extract from a real one
    assert (await extract(engine, _req("   \n"))).items == ()


async def test_min_confidence_is_respected(engine: Extractor) -> None:
    everything = await extract(engine, _req(MEETING))
    assert everything.items
    confs = sorted({round(i.confidence, 4) for i in everything.items})
    # between the lowest and highest confidence if they differ, else above all of them
    cut = (confs[0] + confs[-1]) / 2 if len(confs) > 1 else confs[-1] + 0.01
    kept = await extract(engine, _req(MEETING, min_confidence=cut))
    expected = {(i.table, _title(i.data)) for i in everything.items if i.confidence >= cut}
    assert len(expected) < len(everything.items), "the cut must remove something"
    assert {(i.table, _title(i.data)) for i in kept.items} == expected
    assert all(i.confidence >= cut for i in kept.items)


async def test_fingerprint_is_stable(engine: Extractor) -> None:
    assert engine.fingerprint() == engine.fingerprint() and ":" in engine.fingerprint()


# -- the event loop keeps turning -------------------------------------------------------------


def big_markdown(size: int) -> str:
    """Meeting minutes of ``size`` characters: sections of decisions, tasks and prose.

    Only the first section has lines the evidence is unsure about (what the judge asks the
    model; a dated line is a timeline question): asked about every section's, the 135M
    model would take minutes at 178 KB.
    """
    parts: list[str] = ["## Open points\n\n- Follow up on the catering options\n"
                        "- Ask Tom about the guest list\n\n"]
    total, i = len(parts[0]), 0
    while total < size:
        part = (f"## Sync {i}: workstream {i % 13}\n\n"
                f"- Decision: the supplier list for segment {i} stays as it is.\n"
                f"- [ ] Person{i % 7} to send status report {i} to the client\n"
                f"The team discussed segment {i}, its history, the suppliers involved and the "
                f"open questions about pricing, which will come back later.\n\n")
        parts.append(part)
        total += len(part)
        i += 1
    return "".join(parts)


async def loop_stall(work: Awaitable[Any], interval: float = 0.002) -> tuple[float, int]:
    """(longest gap between ticks of a coroutine sleeping ``interval``, ticks) during ``work``."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    longest, ticks = 0.0, 0

    async def ticker() -> None:
        nonlocal longest, ticks
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(interval)
            longest = max(longest, loop.time() - before)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        await work
    finally:
        stop.set()
        await task
    return longest, ticks


async def baseline_stall() -> float:
    """The gap a loop sees on this (shared) machine while a thread does Python CPU work."""

    def busy(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            sum(range(1000))

    gap, _ = await loop_stall(asyncio.to_thread(busy, 0.3))
    return gap


@pytest.mark.parametrize("size", [25_000, 178_000])
async def test_event_loop_keeps_turning_during_extraction(engine: Extractor, size: int) -> None:
    name = engine.contract_name  # type: ignore[attr-defined]
    # the real model writing JSON takes tens of seconds a chunk on shared cores: one line
    text = big_markdown(size) if name in BIG_DOCS else "- [ ] Maria to send the quote\n"
    # a blocking engine stalls the loop for its whole CPU time on every try; a load spike on
    # the shared machine (105 ms of 0.39 s seen once in CI, baseline 9 ms) does not repeat, so
    # the run is measured again, at most three times, before the test fails
    tries = []
    for _ in range(3 if name in BIG_DOCS else 1):
        gap, baseline, took, ticks = await _stall_of_one_run(engine, text)
        tries.append((round(gap, 3), round(baseline, 3), round(took, 3), ticks))
        # a blocking engine stalls the loop for its whole CPU time: 145 ms at 25 KB, 1.35 s
        # at 178 KB for rules before its work moved to a thread (9-12 ms and 30-80 ms after);
        # never stalled for a quarter of the run: the worker thread holding the GIL on a
        # loaded 2-core machine may pause it briefly (117 ms of 0.8 s seen under a full suite
        # plus a mutation run), as any thread may
        if ticks >= 3 and gap <= max(4 * baseline, took / 4, 0.05):
            return
    raise AssertionError(f"the loop stalled on every try (gap, baseline, took, ticks): {tries}")


async def _stall_of_one_run(engine: Extractor, text: str) -> tuple[float, float, float, int]:
    """The loop's longest pause during one extraction, the machine's pause around it, the
    run's length and the loop's ticks."""
    name = engine.contract_name  # type: ignore[attr-defined]
    baseline = await baseline_stall()
    started = time.perf_counter()
    holder: dict[str, ExtractionResult] = {}

    async def run() -> None:
        holder["r"] = await engine.extract(_req(text))

    gap, ticks = await loop_stall(run())
    took = time.perf_counter() - started
    # the machine's pauses, before and after: a load spike during the run shows in both
    baseline = max(baseline, await baseline_stall())
    print(f"stall {name} {len(text)} chars: max gap {gap * 1000:.1f} ms over {took:.2f} s, "
          f"{ticks} ticks; baseline {baseline * 1000:.1f} ms; "
          f"threads {threading.active_count()}")
    assert holder["r"].items, "the document has records: an engine that returns none fails"
    return gap, baseline, took, ticks


async def test_long_documents_are_not_truncated(engine: Extractor) -> None:
    name = engine.contract_name  # type: ignore[attr-defined]
    # ~23,000 characters; the real model writing JSON gets two chunks of its 2,048 tokens
    paragraphs = 600 if name in BIG_DOCS or name == "rules" else 12
    filler = "\n".join(f"Background paragraph {i} about the market."
                       + ("" if paragraphs > 12 else " It covered" + " the suppliers" * 20)
                       for i in range(paragraphs))
    text = filler + "\n\n## Action items\n- [ ] Maria to send the final invoice by Friday\n"
    result = await extract(engine, _req(text, ("tasks",)))
    titles = [_title(i.data) for i in result.items]
    if paragraphs > 12:
        assert any("final invoice" in t for t in titles), titles
        return
    # SmolLM2-135M lists a chunk's lines in order and seldom reaches the last one, so what
    # proves the end was read is a record grounded in the last quarter, past any first chunk
    # (2,675 characters of 4,051 for the remote engine's 2,048-token context)
    assert result.chunks >= 2, "the document must span several chunks to prove coverage"
    starts = [i.source.span[0] for i in result.items if i.source.span is not None]
    assert starts and max(starts) > len(text) * 3 // 4, (starts, len(text), titles)


@pytest.mark.parametrize(("cut", "expected"), [
    (0.0, ["Renew the lease", "Order toner", "Call the printer", "Book the venue",
           "Send the invoice"]),
    (0.5, ["Order toner", "Call the printer", "Book the venue", "Send the invoice"]),
    (0.8, ["Book the venue", "Send the invoice"]),  # 0.8 itself is kept, 0.79 is not
    (0.96, []),
])
def test_finalize_keeps_exactly_the_items_at_or_above_min_confidence(
        cut: float, expected: list[str]) -> None:
    from sidecar.extractors.base import ExtractedRecord, Grounding
    from sidecar.extractors.postprocess import finalize

    confidences = {"Renew the lease": 0.2, "Order toner": 0.5, "Call the printer": 0.79,
                   "Book the venue": 0.8, "Send the invoice": 0.95}
    items = [ExtractedRecord("tasks", {"title": t}, Grounding(span=None), c)
             for t, c in confidences.items()]
    kept = finalize(items, _req("doc", ("tasks",), min_confidence=cut), REF, [])
    assert [i.data["title"] for i in kept] == expected
