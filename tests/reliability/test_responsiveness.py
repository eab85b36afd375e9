"""Responsiveness: the daemon answers at once while it reads, extracts and delivers a big file.

A 400 KB Markdown document of ~5,000 task lines goes through the real daemon: read, extracted,
queued in the outbox and delivered to a client that acks every insert. Meanwhile a second
connection (the app's status bar) asks ``status`` every 50 ms. Each round trip is measured;
the same probe against the idle daemon first gives the baseline, and a one-line document run
before the big one takes the daemon's first-run imports out of its figures (they are
reported on their own). Nothing here is a speed target: the caps are far above any round
trip of a daemon whose event loop is free, and below what a blocking pass over the document
takes. Queueing the records in slices is checked apart, in turns rather than time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import sys
import time
import types
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from sidecar.client import DaemonProcess, SidecarClient
from sidecar.domain import validate_agent
from sidecar.extractors.base import (
    ExtractedRecord,
    ExtractionRequest,
    ExtractionResult,
    Extractor,
    Grounding,
)
from sidecar.runner import Runner
from sidecar.sources.base import Skip, Source, SourceDocument, WorkItem
from sidecar.store import Store
from sidecar.store.files import Progress
from tests.reliability.corpus import CHORES, PEOPLE

Figure = Callable[[str, str, Any], None]

SEED = 4_000_000
TARGET_BYTES = 400 * 1024
PROBE_EVERY = 0.05
BASELINE_SECONDS = 2.0
#: The largest round trip allowed while the document is read, extracted and queued. An idle
#: daemon answers in 1-2 ms; with nothing holding its loop over 50 ms (checked with a stack
#: sampler), round trips on this shared 2-core box still reached 0.85 s while the extractor's
#: thread competed for the GIL and six other processes for the cores. An extractor run on the
#: loop holds it ~3.7 s for this document: the cap sits between the two.
CAP_SECONDS = 1.5
#: While ~5,000 acks are settled: each settle batch holds the store's one connection for
#: 0.03-0.2 s and a status needs five turns on it (measured up to 0.9 s).
DELIVERY_CAP_SECONDS = 2.5


def write_big_document(path: Path) -> set[str]:
    """~400 KB of task lines, each with a unique tag; returns the tags (the gold lines)."""
    rng = random.Random(SEED)
    lines, tags, size, i = [], set(), 0, 0
    header = "# Migration backlog\n\nEverything still to do before the switch-over.\n\n"
    size += len(header)
    while size < TARGET_BYTES:
        tag = f"mig{i:05}"
        line = (f"- [ ] {rng.choice(PEOPLE)} to {rng.choice(CHORES)} for the {tag} "
                f"account\n")
        lines.append(line)
        tags.add(tag)
        size += len(line.encode())
        i += 1
    path.write_text(header + "".join(lines), encoding="utf-8")
    return tags


async def make_agent(c: SidecarClient, folder: Path, name: str) -> str:
    reply = await c.request({"type": "agent_upsert", "agent": {
        "kind": "local", "name": name, "directories": [str(folder)], "extensions": [".md"],
        "data_types": ["tasks"], "schedule_cron": "0 3 * * *", "watch": False}})
    assert reply["type"] == "agent_upsert_result", reply
    return str(reply["agent"]["id"])


#: The status bar: its own process, so the test's busy acking loop is not in its figures.
#: Prints "<wall clock when sent> <round trip seconds>" per request.
PROBER = """
import asyncio, sys, time
from sidecar.client import SidecarClient

async def main(url, token, every):
    c = await SidecarClient.connect(url, token)
    print("ready", flush=True)
    while True:
        wall, t0 = time.time(), time.perf_counter()
        reply = await c.request({"type": "status"}, timeout=60)
        assert reply["type"] == "status_result", reply
        print(f"{wall:.6f} {time.perf_counter() - t0:.6f}", flush=True)
        await asyncio.sleep(every)

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


class Prober:
    """Runs PROBER against the daemon and keeps every (sent at, round trip)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.samples: list[tuple[float, float]] = []
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, d: DaemonProcess) -> Prober:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PROBER, d.url(), d.token, str(PROBE_EVERY),
            stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            wall, rtt = line.split()
            self.samples.append((float(wall), float(rtt)))

    def between(self, start: float, end: float) -> list[float]:
        """Round trips of the requests in flight at some moment from ``start`` to ``end``."""
        return [rtt for wall, rtt in self.samples if wall < end and wall + rtt > start]

    async def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        await self.proc.wait()
        await self.task


async def run_to_end(app: SidecarClient, agent_id: str, marks: dict[str, float]
                     ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the agent, ack every insert; ``marks`` gets the wall clock of start, first insert
    and end. Returns the finished run and its inserts."""
    marks["start"] = time.time()
    run_id = (await app.request({"type": "run_agent", "agent_id": agent_id}))["run_id"]
    calls = []
    while True:
        frame = await app.next_push(None, timeout=600)
        if frame["type"] == "tool_call":
            marks.setdefault("first_insert", time.time())
            calls.append(frame)
            await app.ack(frame, result={"id": frame["id"]})
        elif frame["type"] == "run_finished" and frame["run"]["id"] == run_id:
            marks["end"] = time.time()
            return frame["run"], calls


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


@pytest.mark.slow
async def test_status_answers_quickly_while_a_400kb_document_is_processed(
        tmp_path: Path, data_dir: Path, token: str, model_dir: Path,
        figure: Figure) -> None:
    folder, warm = tmp_path / "docs", tmp_path / "warm"
    folder.mkdir()
    warm.mkdir()
    (warm / "todo.md").write_text("- [ ] Priya to send the invoice for the warm-up account\n",
                                  encoding="utf-8")
    doc = folder / "backlog.md"
    tags = write_big_document(doc)
    assert doc.stat().st_size >= TARGET_BYTES and len(tags) >= 4000

    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    prober: Prober | None = None
    try:
        app = await d.connect()  # the window that receives and acks the inserts
        await app.hello()
        agent_id = await make_agent(app, folder, "Backlog")
        warm_id = await make_agent(app, warm, "Warm-up")
        prober = await Prober.start(d)  # never says hello, so it gets no inserts
        idle_from = time.time()
        await asyncio.sleep(BASELINE_SECONDS)
        idle_to = time.time()
        # the daemon's first run imports the extractor and readers: measured apart, on a
        # one-line document, so the big document's figures are about the document
        warm_marks: dict[str, float] = {}
        warm_run, _ = await run_to_end(app, warm_id, warm_marks)
        assert warm_run["status"] == "success", warm_run
        await asyncio.sleep(PROBE_EVERY * 4)
        marks: dict[str, float] = {}
        finished, calls = await run_to_end(app, agent_id, marks)
        await asyncio.sleep(PROBE_EVERY * 2)
        await prober.stop()
        await app.close()
    finally:
        if prober is not None and prober.proc.returncode is None:
            await prober.stop()
        await d.stop()

    assert finished["status"] == "success", finished
    seen_tags = {w for f in calls for w in f["data"]["title"].split() if w.startswith("mig")}
    missing = tags - seen_tags
    assert not missing, f"{len(missing)} of {len(tags)} task lines never arrived"
    baseline = prober.between(idle_from, idle_to)
    first_run = prober.between(warm_marks["start"], warm_marks["end"])
    during = {"extracting": prober.between(marks["start"], marks["first_insert"]),
              "delivering": prober.between(marks["first_insert"], marks["end"])}
    assert len(baseline) >= 10, len(baseline)
    base_max = max(baseline)
    figure("responsiveness", "document size, KB / task lines", f"{doc.stat().st_size // 1024}"
           f" / {len(tags):,}")
    figure("responsiveness", "records delivered and acked", len(calls))
    figure("responsiveness", "run seconds (read, extract, queue, deliver)",
           marks["end"] - marks["start"])
    figure("responsiveness", "status round trip idle: median / max, ms",
           f"{statistics.median(baseline) * 1e3:.1f} / {base_max * 1e3:.1f}")
    figure("responsiveness", "status round trip, first run (imports): n / max, ms",
           f"{len(first_run)} / {max(first_run, default=0) * 1e3:.1f}")
    for name, values in during.items():
        figure("responsiveness", f"status round trip {name}: n / median / p99 / max, ms",
               f"{len(values)} / {statistics.median(values) * 1e3:.1f} / "
               f"{p99(values) * 1e3:.1f} / {max(values) * 1e3:.1f}")
    for name, cap in (("extracting", max(CAP_SECONDS, 10 * base_max)),
                      ("delivering", max(DELIVERY_CAP_SECONDS, 10 * base_max))):
        slow = sorted((v for v in during[name] if v > cap), reverse=True)
        assert not slow, (f"{len(slow)} status round trips took longer than {cap:.2f} s while "
                          f"{name} (idle max {base_max * 1e3:.1f} ms): "
                          f"{[round(v, 3) for v in slow[:10]]}")
    # preconditions: the probes really ran while the document was read and extracted (a loop
    # held for seconds also leaves few), and some request was in flight during delivery
    assert len(during["extracting"]) >= 3 and len(during["delivering"]) >= 1, during


class _CountingStore(Store):
    """The real store, noting how many records were queued when a document was marked done
    (counted inside the transaction that marks it)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.done_calls: list[int] = []

    async def record_progress(self, progress: Progress, conn: Any = None) -> None:
        async with conn.execute("SELECT count(*) FROM outbox") as cur:
            self.done_calls.append((await cur.fetchone())[0])
        await super().record_progress(progress, conn)


class _OneDocument(Source):
    """A source holding one document."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def pending(self, extraction_key: str, *, full: bool = False
                      ) -> AsyncIterator[WorkItem]:
        yield WorkItem(key="/docs/backlog.md", label="backlog.md")

    async def read(self, item: WorkItem) -> SourceDocument | Skip:
        raise AssertionError("not used")

    def progress(self, doc: SourceDocument, extraction_key: str, result: Mapping[str, Any]
                 ) -> Progress:
        return Progress("one", doc.item.key, "extracted", extraction_key, result=dict(result))

    async def skipped(self, skip: Skip) -> None:
        raise AssertionError("not used")


class _Fixed(Extractor):
    name = "fixed"

    def __init__(self, items: list[ExtractedRecord]) -> None:
        self.items = items

    async def extract(self, request: ExtractionRequest) -> ExtractionResult:
        return ExtractionResult(items=tuple(self.items))

    def fingerprint(self) -> str:
        return "fixed"


@pytest.mark.parametrize("n", [5000, 512])
async def test_queueing_thousands_of_records_lets_other_requests_in(tmp_path: Path,
                                                                    n: int) -> None:
    """5,000 records of one document are queued in slices: the store's one connection is
    free between them (a status request gets its turn), and the document is marked done only
    with the last slice, so a crash in between re-extracts it (same keys: nothing twice).

    Counted in turns, not timed: a reader queued on the store gets one turn per slice. 512
    records fill slices exactly: the last one still marks the document done.
    """
    items = [ExtractedRecord(table="tasks", data={"title": f"Send report {i} to the client"},
                           source=Grounding(span=(i, i + 1)), confidence=0.9)
             for i in range(n)]
    notified: list[int] = []
    async with _CountingStore(tmp_path / "s.db") as store:
        agent = validate_agent({"kind": "local", "name": "big", "directories": [str(tmp_path)]})
        await store.agents.upsert(agent)
        run = await store.runs.start(agent.id, "local", "manual")
        runner = Runner(store, hub=None,  # type: ignore[arg-type]
                        delivery=types.SimpleNamespace(notify=lambda: notified.append(1)),  # type: ignore[arg-type]
                        sources=lambda *a: source, extractors=None)  # type: ignore[arg-type]
        source = _OneDocument(store)
        doc = SourceDocument(item=WorkItem(key="/docs/backlog.md", label="backlog.md"),
                             text="x", content_hash="h")
        turns: list[int] = []
        stop = asyncio.Event()

        async def status_bar() -> None:
            while not stop.is_set():
                turns.append(await store.outbox.count("pending"))
                await asyncio.sleep(0)

        bar = asyncio.create_task(status_bar())
        await asyncio.sleep(0.05)
        before = len(turns)
        errors: list[str] = []
        counters = {"documents": 0, "items_found": 0}
        await runner._extract_one(agent, run["id"], _Fixed(items), source, doc, "k", errors,
                                  counters)
        during = turns[before:]
        stop.set()
        await bar
        assert await store.outbox.count("pending") == n and counters["items_found"] == n
        assert errors == [] and counters["documents"] == 1
        assert store.done_calls == [n], store.done_calls  # once, with every record queued
    # the reader saw the queue grow in steps while the records went in, many times over
    growing = sorted({t for t in during if 0 < t < n})
    assert len(growing) >= min(5, n // 256 - 1), (len(during), growing[:20])
    assert notified, "delivery was never told"


class _Recording(_Fixed):
    """Answers with ``items`` and ``problems``, or raises ``error``; keeps the request."""

    def __init__(self, items: list[ExtractedRecord], problems: tuple[Any, ...] = (),
                 error: Exception | None = None) -> None:
        super().__init__(items)
        self.problems, self.error = problems, error
        self.requests: list[ExtractionRequest] = []

    async def extract(self, request: ExtractionRequest) -> ExtractionResult:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return ExtractionResult(items=tuple(self.items), problems=self.problems, chunks=3)


async def test_one_document_goes_to_the_engine_and_its_records_to_the_outbox(
        tmp_path: Path) -> None:
    """What ``_extract_one`` hands the engine, queues, records as done and reports."""
    from datetime import UTC, datetime

    from sidecar.errors import ModelError, TransientError
    from sidecar.extractors.base import ExtractionProblem

    when = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
    async with Store(tmp_path / "s.db") as store:
        agent = validate_agent({"kind": "local", "name": "n", "directories": [str(tmp_path)],
                                "data_types": ["tasks", "notes"], "min_confidence": 0.25,
                                "prompt_template": "Only invoices.", "project_id": "p7"})
        await store.agents.upsert(agent)
        run = await store.runs.start(agent.id, "local", "manual")
        source = _OneDocument(store)
        done: list[Any] = []

        async def record_done(progress: Progress, conn: Any = None) -> None:
            assert conn is not None  # in the transaction that queues the records
            done.append((progress.key, progress.extraction_key, progress.result))

        store.record_progress = record_done  # type: ignore[method-assign]
        runner = Runner(store, hub=None,  # type: ignore[arg-type]
                        delivery=types.SimpleNamespace(notify=lambda: None),  # type: ignore[arg-type]
                        sources=lambda *a: source, extractors=None)  # type: ignore[arg-type]
        doc = SourceDocument(item=WorkItem(key="/docs/march.md", label="march.md"),
                             text="- [ ] Send the March invoice", content_hash="h", date=when,
                             meta={"path": "/docs/march.md"})
        item = ExtractedRecord(table="tasks", data={"title": "Send the March invoice"},
                             source=Grounding(span=(6, 28), exact=True), confidence=0.87654)
        engine = _Recording([item], problems=(ExtractionProblem(2, "chunk timed out"),
                                              ExtractionProblem(None, "model said nothing")))
        errors: list[str] = []
        counters = {"documents": 4, "items_found": 10}
        await runner._extract_one(agent, run["id"], engine, source, doc, "key1", errors,
                                  counters)
        (req,) = engine.requests
        assert (req.text, req.data_types, req.prompt_template, req.document_date, req.label,
                req.min_confidence, req.project_id) == (
            "- [ ] Send the March invoice", ("tasks", "notes"), "Only invoices.", when,
            "march.md", 0.25, "p7")
        assert counters == {"documents": 5, "items_found": 11}
        assert done == [("/docs/march.md", "key1", {
            "items": 1, "chunks": 3, "problems": ["chunk timed out", "model said nothing"]})]
        assert errors == ["march.md chunk 2: chunk timed out", "march.md: model said nothing"]
        (entry,) = await store.outbox.pending_after(0)
        assert (entry.agent_id, entry.run_id, entry.table, entry.data) == (
            agent.id, run["id"], "tasks", {"title": "Send the March invoice"})
        assert entry.meta["confidence"] == 0.8765
        assert entry.meta["source"]["path"] == "/docs/march.md"
        assert entry.meta["source"]["span"] == [6, 28]

        # an engine failure for this document: said, nothing queued or done, the run goes on
        for error, stops in ((TransientError("server busy"), False),
                             (ModelError("model file is corrupt"), True)):
            errors.clear()
            failing = _Recording([], error=error)
            if stops:
                with pytest.raises(ModelError):
                    await runner._extract_one(agent, run["id"], failing, source, doc, "key2",
                                              errors, counters)
            else:
                await runner._extract_one(agent, run["id"], failing, source, doc, "key2",
                                          errors, counters)
            assert errors == [f"LLM extraction error for 'march.md': {error}"]
            assert counters == {"documents": 5, "items_found": 11} and len(done) == 1
        assert await store.outbox.count("pending") == 1
