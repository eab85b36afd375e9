"""The runner, branch by branch, in process (issue 19): the real Runner and Delivery over a
real Store (SQLite in tmp_path) and the real Hub recording what it broadcasts, with a scripted
source and engine so every branch is reached on purpose: statuses success / partial / error /
cancelled, the counts each run_finished carries, skips and their cap, engine failures, the
end-of-run drain, a run close the disk has no room for, projects and provenance, keys.
Expected values are written by hand; none is computed by the code under test.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import types
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import sidecar.runner as runner_module
from sidecar import protocol as p
from sidecar.delivery import Delivery
from sidecar.diskfull import disk_full_message
from sidecar.domain import Agent, validate_agent
from sidecar.errors import (
    ModelError,
    NeedsReauth,
    PermanentError,
    SidecarError,
    TransientError,
)
from sidecar.extractors.base import (
    ExtractedRecord,
    ExtractionProblem,
    ExtractionRequest,
    ExtractionResult,
    Extractor,
    Grounding,
)
from sidecar.handlers import PROJECTS_KEY
from sidecar.linking import item_key, source_identity
from sidecar.runner import Runner, extraction_key
from sidecar.sources.base import Skip, Source, SourceDocument, WorkItem
from sidecar.store import Store
from sidecar.store.files import Progress
from sidecar.store.outbox import stable_key
from tests.test_delivery_mutants import until, writer
from tests.test_runner_cancel import RecordingHub

DISK = sqlite3.OperationalError("database or disk is full")


class ProgressStore(Store):
    """The real store, keeping each document's progress and checking it is written inside
    the transaction that queues the document's records."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.recorded: list[Progress] = []

    async def record_progress(self, progress: Progress, conn: Any = None) -> None:
        assert conn is not None  # in the outbox's transaction
        self.recorded.append(progress)
        await super().record_progress(progress, conn)


class Script(Source):
    """Documents and skips in order; keeps what the runner told it."""

    def __init__(self, docs: list[SourceDocument | Skip], *, notes: tuple[str, ...] = (),
                 error: BaseException | None = None) -> None:
        self.docs = {d.item.key: d for d in docs}
        self.notes, self.error = list(notes), error
        self.asked: list[tuple[str, bool]] = []
        self.skipped_calls: list[str] = []

    async def pending(self, extraction_key: str, *, full: bool = False
                      ) -> AsyncIterator[WorkItem]:
        self.asked.append((extraction_key, full))
        if self.error is not None:
            raise self.error
        for doc in self.docs.values():
            yield doc.item

    async def read(self, item: WorkItem) -> SourceDocument | Skip:
        return self.docs[item.key]

    def progress(self, doc: SourceDocument, extraction_key: str, result: Mapping[str, Any]
                 ) -> Progress:
        return Progress("script", doc.item.label, "extracted", extraction_key,
                        result=dict(result))

    @property
    def done_calls(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(label, extraction key, result) of each document the store recorded as done."""
        return [(p.key, p.extraction_key, dict(p.result or {})) for p in self.store.recorded]

    async def skipped(self, skip: Skip) -> None:
        self.skipped_calls.append(skip.item.label)

    async def finish(self) -> list[str]:
        return self.notes


class Remembering(Script):
    """A source that knows which documents are current under a key."""

    def __init__(self, docs: list[SourceDocument | Skip], current: set[str]) -> None:
        super().__init__(docs)
        self.current = current
        self.checked: list[tuple[str, str]] = []

    async def is_current(self, doc: SourceDocument, key: str) -> bool:
        self.checked.append((doc.item.label, key))
        return doc.item.label in self.current


class Engine(Extractor):
    """Answers per document label: a result, or an error raised; keeps each request."""

    name = "scripted"

    def __init__(self, answers: Mapping[str, ExtractionResult | BaseException] | None = None,
                 gate: asyncio.Event | None = None) -> None:
        self.answers = dict(answers or {})
        self.gate = gate
        self.requests: list[ExtractionRequest] = []

    async def extract(self, request: ExtractionRequest) -> ExtractionResult:
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.get(request.label, ExtractionResult())
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def fingerprint(self) -> str:
        return "scripted-1"


class SpyDelivery(Delivery):
    """The real delivery, noting when it is told of new records and asked to drain."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.notified = 0
        self.drains: list[tuple[str | None, float]] = []
        self.blocked: bool | None = None

    def notify(self) -> None:
        self.notified += 1
        super().notify()

    async def drained(self, run_id: str | None = None, timeout: float = 30.0) -> bool:
        self.drains.append((run_id, timeout))
        return await super().drained(run_id, timeout)

    @property
    def settle_blocked(self) -> bool:
        return super().settle_blocked if self.blocked is None else self.blocked


def task(title: str, conf: float = 0.9, **kw: Any) -> ExtractedRecord:
    return ExtractedRecord(table="tasks", data={"title": title, **kw.pop("data", {})},
                         source=Grounding(span=(0, 5), exact=True), confidence=conf, **kw)


def found(*titles: str, problems: tuple[ExtractionProblem, ...] = (),
          chunks: int = 1) -> ExtractionResult:
    return ExtractionResult(items=tuple(task(t) for t in titles), problems=problems,
                            chunks=chunks)


@dataclass
class Rig:
    store: ProgressStore
    root: Path
    hub: RecordingHub = field(default_factory=RecordingHub)
    delivery: SpyDelivery | None = None
    runner: Runner | None = None
    agent: Agent | None = None
    source: Source | None = None
    engine: Engine | None = None
    asked: list[tuple[str, str, set[str] | None]] = field(default_factory=list)
    built: list[str] = field(default_factory=list)  # agents an engine was built for

    def doc(self, name: str, text: str = "- [ ] something", *, kind: str = "md",
            meta: Mapping[str, Any] | None = None, label: str | None = None
            ) -> SourceDocument:
        path = str(self.root / name)
        return SourceDocument(item=WorkItem(key=path, label=label or name), text=text,
                              content_hash="h" + name, kind=kind,
                              meta={"path": path, **(meta or {})})

    def skip(self, name: str, reason: str, *, transient: bool = False) -> Skip:
        return Skip(item=WorkItem(key=str(self.root / name), label=name), reason=reason,
                    message=f"{name} could not be read", transient=transient)

    async def setup(self, source: Source, engine: Engine | BaseException, *,
                    agent: Agent | None = None, **kw: Any) -> Runner:
        if agent is None:
            agent = validate_agent({"kind": "local", "name": "Docs",
                                    "directories": [str(self.root)]})
        await self.store.agents.upsert(agent)
        self.agent, self.source = agent, source
        source.store = self.store
        self.engine = engine if isinstance(engine, Engine) else None
        self.delivery = SpyDelivery(self.hub, self.store.outbox, timeout=5)

        async def extractors(for_agent: Agent) -> Extractor:
            self.built.append(for_agent.id)
            if isinstance(engine, BaseException):
                raise engine
            return engine

        def sources(a: Agent, run_id: str, only: set[str] | None) -> Source:
            self.asked.append((a.id, run_id, only))
            return source

        # a run that waits for acks nobody sends gives up after 2 s here, not 30
        self.runner = Runner(self.store, self.hub, self.delivery, extractors=extractors,
                             sources=sources, **{"drain_timeout": 2.0, **kw})
        return self.runner

    async def run(self, *, full: bool = False) -> dict[str, Any]:
        assert self.runner is not None and self.agent is not None
        # a plain run passes no ``full``: the default is what a scheduled run gets
        run_id, already = await (self.runner.start(self.agent.id, "manual", full=True) if full
                                 else self.runner.start(self.agent.id, "manual"))
        assert not already
        record = await self.runner.wait(run_id)
        assert record is not None
        return record

    def frames(self, kind: type[p.Frame]) -> list[Any]:
        return [f for f in self.hub.sent if isinstance(f, kind)]

    def finished(self) -> dict[str, Any]:
        (frame,) = self.frames(p.RunFinished)
        return frame.run


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    root = tmp_path / "Docs"
    root.mkdir()
    async with ProgressStore(tmp_path / "s.db") as store:
        yield Rig(store, root)


def counts(run: Mapping[str, Any]) -> tuple[Any, ...]:
    return (run["status"], run["items_processed"], run["items_created"], run["extracted"],
            run["delivered"], run["failed"], run["pending"])


# -- keys -----------------------------------------------------------------------------------

def test_extraction_key_hashes_everything_that_changes_what_extraction_returns() -> None:
    agent = Agent(id="a1", kind="local", name="n", prompt_template="Only invoices.",
                  data_types=("tasks", "notes"), engine="remote", min_confidence=0.25,
                  remote={"base_url": "http://127.0.0.1:1/v1", "model": "m"})
    basis = ('{"engine": "remote", "extractor": "fp9", "min_confidence": 0.25, '
             '"prompt": "Only invoices.", "remote": {"base_url": "http://127.0.0.1:1/v1", '
             '"model": "m"}, "types": ["notes", "tasks"]}')
    assert extraction_key(agent, "fp9") == hashlib.sha256(basis.encode()).hexdigest()[:16]


def test_a_file_is_known_by_its_most_specific_folder_and_its_path_inside(
        tmp_path: Path) -> None:
    outer = tmp_path / "Clients"
    inner = outer / "Acme"
    inner.mkdir(parents=True)
    agent = Agent(id="a1", kind="local", name="n", directories=(str(outer), str(inner)))

    def ident(path: Path | str) -> str:
        doc = SourceDocument(item=WorkItem(key=str(path), label="x"), text="", content_hash="h")
        return source_identity(agent, doc)

    assert ident(inner / "q1" / "plan.md") == "local:Acme/q1/plan.md"
    assert ident(outer / "brief.md") == "local:Clients/brief.md"
    assert ident("/elsewhere/notes.md") == "local:/elsewhere/notes.md"
    gone = Agent(id="a2", kind="local", name="n", directories=("/no/such/Inbox",))
    doc = SourceDocument(item=WorkItem(key="/no/such/Inbox/a.md", label="a"), text="",
                         content_hash="h")
    assert source_identity(gone, doc) == "local:Inbox/a.md"  # a folder gone: still by name
    # the key is the outbox's stable key of that identity: no agent id, no data dir in it
    item = task("Send the logo")
    assert item_key(agent, SourceDocument(item=WorkItem(key=str(inner / "p.md"), label="p"),
                                          text="", content_hash="h"), item) == stable_key(
        "local:Acme/p.md", "tasks", {"title": "Send the logo"})


@pytest.mark.parametrize(("provider", "account", "expected"), [
    ("gmail", "Me@Example.COM", "gmail:me@example.com:msg-17"),
    (None, None, "cloud::msg-17"),
])
def test_a_message_is_known_by_provider_account_and_id(provider: str | None,
                                                       account: str | None,
                                                       expected: str) -> None:
    agent = Agent(id="a1", kind="cloud", name="Mail", provider=provider, account=account)
    doc = SourceDocument(item=WorkItem(key="msg-17", label="Hello"), text="", content_hash="h")
    assert source_identity(agent, doc) == expected


# -- a run from start to finish -------------------------------------------------------------

async def test_a_clean_run_succeeds_and_says_what_it_queued(rig: Rig,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    a, b, c = rig.doc("a.md"), rig.doc("b.md"), rig.doc("c.md")
    source = Script([a, b, c])
    engine = Engine({"a.md": found("Send the quote", "Call Ana"), "c.md": found("Pay rent")})
    await rig.setup(source, engine)
    ticks = iter([1000.0, 1000.125, 1000.25])  # progress every 0.25 s, on the boundary too
    monkeypatch.setattr(runner_module, "time", types.SimpleNamespace(
        monotonic=lambda: next(ticks)))
    record = await rig.run()
    assert counts(record) == ("success", 3, 0, 3, 0, 0, 3)
    assert record["errors"] == [] and record["agent_id"] == rig.agent.id
    started, *progress, finished = [f for f in rig.hub.sent
                                    if not isinstance(f, p.RunDelivered)]
    assert isinstance(started, p.RunStarted) and started.run["id"] == record["id"]
    assert started.run["status"] == "running"
    assert [(f.files_done, f.files_total, f.items_found, f.current) for f in progress] == [
        (0, 3, 0, "a.md"), (2, 3, 2, "c.md"), (3, 3, 3, None)]
    assert {f.run_id for f in progress} == {record["id"]}
    assert {f.agent_id for f in progress} == {rig.agent.id}
    assert isinstance(finished, p.RunFinished) and finished.run == {**record, "errors_total": 0}
    assert rig.frames(p.RunDelivered) == []  # three records wait for the app
    key = extraction_key(rig.agent, "scripted-1")
    assert source.asked == [(key, False)]
    assert source.done_calls == [("a.md", key, {"items": 2, "chunks": 1, "problems": []}),
                                 ("b.md", key, {"items": 0, "chunks": 1, "problems": []}),
                                 ("c.md", key, {"items": 1, "chunks": 1, "problems": []})]
    assert rig.delivery.notified == 2  # b.md queued nothing
    assert rig.delivery.drains == []  # no writer connected: nothing to wait for
    assert rig.built == [rig.agent.id] and rig.asked == [(rig.agent.id, record["id"], None)]
    row = await rig.store.runs.get(record["id"])
    assert (row["status"], row["items_processed"], row["completed_at"] is not None) == (
        "success", 3, True)
    assert await rig.store.agents.last_run_at(rig.agent.id) is not None
    assert rig.runner.running_run(rig.agent.id) is None
    entries = await rig.store.outbox.for_run(record["id"])
    assert [e.data["title"] for e in entries] == ["Send the quote", "Call Ana", "Pay rent"]
    assert entries[0].idempotency_key == stable_key("local:Docs/a.md", "tasks",
                                                    {"title": "Send the quote"})


async def test_a_run_with_a_writer_waits_for_its_acks_then_is_delivered(rig: Rig) -> None:
    source = Script([rig.doc("a.md"), rig.doc("b.md")])
    await rig.setup(source, Engine({"a.md": found("One", "Two"), "b.md": found("Three")}),
                    drain_timeout=7.5)
    writer(rig.hub, rig.delivery, acks=True)
    await rig.delivery.start()
    try:
        record = await rig.run()
        assert counts(record) == ("success", 2, 3, 3, 3, 0, 0)
        assert rig.delivery.drains == [(record["id"], 7.5)]
        (delivered,) = rig.frames(p.RunDelivered)
        assert delivered.run["id"] == record["id"] and delivered.run["delivered"] == 3
        assert rig.hub.sent.index(delivered) > rig.hub.sent.index(rig.frames(p.RunFinished)[0])
    finally:
        await rig.delivery.stop()


async def test_a_run_that_finds_nothing_is_delivered_at_once(rig: Rig) -> None:
    await rig.setup(Script([rig.doc("a.md")]), Engine())
    record = await rig.run()
    assert counts(record) == ("success", 1, 0, 0, 0, 0, 0)
    (delivered,) = rig.frames(p.RunDelivered)
    assert delivered.run["id"] == record["id"] and delivered.run["errors_total"] == 0


async def test_an_app_that_never_acks_holds_the_close_only_for_the_drain_timeout(
        rig: Rig) -> None:
    await rig.setup(Script([rig.doc("a.md")]), Engine({"a.md": found("One")}),
                    drain_timeout=0.3)
    writer(rig.hub, rig.delivery)  # connected, silent
    await rig.delivery.start()
    try:
        record = await asyncio.wait_for(rig.run(), 10)
        assert counts(record) == ("success", 1, 0, 1, 0, 0, 1)
        assert rig.delivery.drains == [(record["id"], 0.3)]
    finally:
        await rig.delivery.stop()


@pytest.mark.parametrize("why", ["settle blocked", "disk full", "cancelled"])
async def test_no_drain_when_acks_cannot_be_recorded_or_the_run_was_stopped(
        rig: Rig, why: str) -> None:
    gate = asyncio.Event()
    error = DISK if why == "disk full" else None
    source = Script([rig.doc("a.md")], error=error)
    await rig.setup(source, Engine({"a.md": found("One")},
                                   gate=gate if why == "cancelled" else None))
    writer(rig.hub, rig.delivery)
    rig.delivery.blocked = why == "settle blocked"
    if why == "cancelled":
        run_id, _ = await rig.runner.start(rig.agent.id, "manual")
        assert await until(lambda: len(rig.engine.requests) == 1)
        assert await rig.runner.cancel(run_id) is True
        assert await rig.runner.cancel(run_id) is False  # twice: the run is gone already
        record = await rig.runner.wait(run_id)
    else:
        record = await rig.run()
    assert rig.delivery.drains == []
    assert record["status"] == {"settle blocked": "success", "disk full": "error",
                                "cancelled": "cancelled"}[why]


# -- statuses and errors ----------------------------------------------------------------------

async def test_a_document_the_engine_fails_makes_the_run_partial_once_others_land(
        rig: Rig) -> None:
    source = Script([rig.doc("a.md"), rig.doc("b.md"), rig.doc("c.md")])
    await rig.setup(source, Engine({"a.md": TransientError("server busy"),
                                    "b.md": PermanentError("document is empty"),
                                    "c.md": found("One")}))
    writer(rig.hub, rig.delivery, acks=True)
    await rig.delivery.start()
    try:
        record = await rig.run()
    finally:
        await rig.delivery.stop()
    assert counts(record) == ("partial", 1, 1, 1, 1, 0, 0)
    assert record["errors"] == ["LLM extraction error for 'a.md': server busy",
                                "LLM extraction error for 'b.md': document is empty"]
    assert [d[0] for d in source.done_calls] == ["c.md"]  # the failed ones are redone later


async def test_a_part_that_failed_for_a_passing_reason_is_read_again_next_run(
        rig: Rig) -> None:
    """Its records so far are queued, but the document is not marked done: the next run reads
    it again (the same records are not queued twice), and once read whole it is done."""
    busy = ExtractionResult(items=(task("Pay the invoice"),), chunks=2, problems=(
        ExtractionProblem(1, "server busy after 5 tries", transient=True),))
    source = Script([rig.doc("a.md")])
    await rig.setup(source, Engine({"a.md": busy}))
    record = await rig.run()
    assert source.done_calls == [] and await rig.store.outbox.count("pending") == 1
    assert record["errors"] == ["a.md chunk 1: server busy after 5 tries; the document is "
                                "read again on the next run"]
    await rig.run()
    assert len(rig.engine.requests) == 2 and source.done_calls == []
    rig.engine.answers["a.md"] = found("Pay the invoice", "Send the report")
    await rig.run()
    assert [d[0] for d in source.done_calls] == ["a.md"]
    assert await rig.store.outbox.count("pending") == 2  # one each, nothing twice
    # a problem that reading again does not mend (a cap, bad JSON) marks the document done
    rig.engine.answers["a.md"] = found("Pay the invoice", problems=(
        ExtractionProblem(0, "answers kept hitting the cap"),))
    await rig.run()
    assert [d[0] for d in source.done_calls] == ["a.md", "a.md"]


async def test_errors_and_nothing_delivered_is_an_error(rig: Rig) -> None:
    source = Script([rig.doc("a.md"), rig.doc("b.md")])
    await rig.setup(source, Engine({"a.md": TransientError("server busy"),
                                    "b.md": found("One")}))
    record = await rig.run()
    assert counts(record) == ("error", 1, 0, 1, 0, 0, 1)


async def test_an_unusable_model_stops_the_run(rig: Rig) -> None:
    source = Script([rig.doc("a.md"), rig.doc("b.md")])
    await rig.setup(source, Engine({"a.md": ModelError("model file is corrupt"),
                                    "b.md": found("One")}))
    record = await rig.run()
    assert counts(record) == ("error", 0, 0, 0, 0, 0, 0)
    assert record["errors"] == ["LLM extraction error for 'a.md': model file is corrupt",
                                "model file is corrupt"]
    assert [r.label for r in rig.engine.requests] == ["a.md"] and source.done_calls == []


async def test_a_revoked_grant_marks_the_agent_and_asks_the_app_to_reconnect(rig: Rig) -> None:
    agent = Agent(id="a_mail01", kind="cloud", name="Mail", provider="gmail",
                  account="me@example.com")
    doc = SourceDocument(item=WorkItem(key="m1", label="Hello"), text="x", content_hash="h")
    await rig.setup(Script([doc]), Engine({"Hello": NeedsReauth("Google refused the grant")}),
                    agent=agent)
    record = await rig.run()
    assert record["status"] == "error"
    assert record["errors"] == ["LLM extraction error for 'Hello': Google refused the grant",
                                "Google refused the grant"]
    assert rig.frames(p.AgentNeedsReauth) == [p.AgentNeedsReauth(
        agent_id="a_mail01", provider="gmail", account="me@example.com",
        message="Google refused the grant")]
    assert (await rig.store.agents.record("a_mail01"))["state"] == "needs_reauth"


@pytest.mark.parametrize(("error", "line"), [
    (SidecarError("no model is configured"), "no model is configured"),
    (RuntimeError("boom"), "internal error: boom"),
    (DISK, disk_full_message("the sidecar's data")),
])
async def test_a_run_that_cannot_start_its_work_says_why(rig: Rig, error: BaseException,
                                                          line: str) -> None:
    await rig.setup(Script([rig.doc("a.md")]), error)
    record = await rig.run()
    assert (record["status"], record["errors"], record["items_processed"]) == (
        "error", [line], 0)
    assert rig.finished()["errors"] == [line]
    assert (await rig.store.agents.record(rig.agent.id))["state"] != "needs_reauth"
    assert rig.frames(p.AgentNeedsReauth) == []


async def test_a_source_that_fails_mid_listing_still_closes_the_run(rig: Rig) -> None:
    await rig.setup(Script([rig.doc("a.md")], error=TransientError("folder unmounted")),
                    Engine())
    record = await rig.run()
    assert (record["status"], record["errors"]) == ("error", ["folder unmounted"])


async def test_skips_are_listed_up_to_the_cap_then_counted(rig: Rig) -> None:
    skips = [rig.skip(f"s{i:02}.pdf", "too_large") for i in range(47)]
    skips += [rig.skip(f"t{i}.pdf", "locked", transient=True) for i in range(4)]
    source = Script([*skips, rig.doc("ok.md")], notes=("1 removed file",))
    await rig.setup(source, Engine({"ok.md": found("One")}))
    writer(rig.hub, rig.delivery, acks=True)
    await rig.delivery.start()
    try:
        record = await rig.run()
    finally:
        await rig.delivery.stop()
    errors = record["errors"]
    assert errors[0] == "s00.pdf could not be read (skipped: too_large)"
    assert errors[46] == "s46.pdf could not be read (skipped: too_large)"
    assert errors[47:49] == ["t0.pdf could not be read (skipped: locked); will be retried",
                             "t1.pdf could not be read (skipped: locked); will be retried"]
    assert errors[49:] == [
        "… and 2 more skipped file(s) not listed here (47 skipped in all until they change, "
        "4 to retry); the run log has every one", "1 removed file"]
    assert counts(record) == ("partial", 1, 1, 1, 1, 0, 0)
    assert len(source.skipped_calls) == 51 and source.skipped_calls[-1] == "t3.pdf"
    assert await rig.store.db.scalar("SELECT count(*) FROM run_skips WHERE run_id = ?",
                                     (record["id"],)) == 51
    assert rig.frames(p.RunProgress)[-1].files_done == 52


async def test_current_documents_are_left_alone_unless_the_run_is_full(rig: Rig) -> None:
    source = Remembering([rig.doc("a.md"), rig.doc("b.md")], current={"a.md"})
    await rig.setup(source, Engine({"a.md": found("One"), "b.md": found("Two")}))
    await rig.run()
    assert [r.label for r in rig.engine.requests] == ["b.md"]
    assert rig.frames(p.RunProgress)[-1].files_done == 2
    key = extraction_key(rig.agent, "scripted-1")
    assert source.checked == [("a.md", key), ("b.md", key)]
    await rig.run(full=True)
    assert [r.label for r in rig.engine.requests] == ["b.md", "a.md", "b.md"]
    assert [full for _, full in source.asked] == [False, True]


async def test_the_engine_gets_the_document_and_the_agent_settings(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    when = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
    monkeypatch.setattr("sidecar.clock.now", lambda: when)
    agent = validate_agent({"kind": "local", "name": "Docs", "directories": [str(rig.root)],
                            "data_types": ["tasks", "notes"], "min_confidence": 0.25,
                            "prompt_template": "Only invoices.", "project_id": "p7"})
    doc = SourceDocument(item=WorkItem(key=str(rig.root / "m.eml"), label="March"),
                         text="Pay the March invoice", content_hash="h", kind="eml",
                         date=datetime(2026, 3, 1, tzinfo=UTC),
                         meta={"date_origin": "email header"})
    await rig.setup(Script([doc]), Engine({"March": found("Pay")}), agent=agent,
                    initial_lookback_days=7)
    await rig.run()
    (first,) = rig.engine.requests
    assert (first.text, first.data_types, first.prompt_template, first.document_date,
            first.date_origin, first.label, first.min_confidence, first.project_id,
            first.stale_before) == (
        "Pay the March invoice", ("tasks", "notes"), "Only invoices.",
        datetime(2026, 3, 1, tzinfo=UTC), "email header", "March", 0.25, "p7",
        datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
    await rig.run(full=True)  # the first run is over: old documents are no longer stale
    assert rig.engine.requests[1].stale_before is None


async def test_a_document_without_its_own_lookback_setting_uses_thirty_days(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sidecar.clock.now", lambda: datetime(2026, 3, 31, tzinfo=UTC))
    await rig.setup(Script([rig.doc("a.md")]), Engine())
    await rig.run()
    assert rig.engine.requests[0].stale_before == datetime(2026, 3, 1, tzinfo=UTC)


async def test_what_one_document_reports_and_queues(rig: Rig) -> None:
    problems = tuple(ExtractionProblem(i, f"chunk {i} timed out") for i in range(21))
    problems += (ExtractionProblem(None, "model said nothing"),)
    many = ExtractionResult(items=tuple(task(f"Task {i}") for i in range(257)),
                            problems=problems, chunks=22)
    source = Script([rig.doc("big.md"), rig.doc("full.md")])
    await rig.setup(source, Engine({"big.md": many, "full.md": ExtractionResult(
        items=tuple(task(f"Item {i}") for i in range(256)))}))
    record = await rig.run()
    assert rig.delivery.notified == 3  # 257 records: two slices; 256: one
    assert record["extracted"] == 513 and rig.frames(p.RunProgress)[-1].items_found == 513
    (_, _, big), (_, _, full) = source.done_calls
    assert big == {"items": 257, "chunks": 22,
                   "problems": [f"chunk {i} timed out" for i in range(20)]}
    assert full == {"items": 256, "chunks": 1, "problems": []}
    assert record["errors"][0] == "big.md chunk 0: chunk 0 timed out"
    assert record["errors"][20:] == ["big.md chunk 20: chunk 20 timed out",
                                     "big.md: model said nothing"]


# -- start, wait, cancel -----------------------------------------------------------------------

async def test_one_run_per_agent_and_runs_of_nobody(rig: Rig) -> None:
    gate = asyncio.Event()
    await rig.setup(Script([rig.doc("a.md")]), Engine(gate=gate))
    run_id, already = await rig.runner.start(rig.agent.id, "manual")
    assert (run_id, already) == (run_id, False)
    assert await rig.runner.start(rig.agent.id, "schedule") == (run_id, True)
    assert rig.runner.running_run(rig.agent.id) == run_id
    with pytest.raises(SidecarError) as info:
        await rig.runner.start("a_nobody", "manual")
    assert (info.value.code, info.value.message) == ("not_found",
                                                     "no agent with id 'a_nobody'")
    assert await rig.runner.cancel("r_nobody") is False
    assert await rig.runner.wait("r_nobody") is None
    gate.set()
    record = await rig.runner.wait(run_id)
    assert record["status"] == "success"
    assert (await rig.runner.wait(run_id))["status"] == "success"  # from the run log now


async def test_shutdown_cancels_every_run(rig: Rig) -> None:
    gate = asyncio.Event()
    await rig.setup(Script([rig.doc("a.md")]), Engine(gate=gate))
    other = validate_agent({"kind": "local", "name": "Other", "directories": [str(rig.root)]})
    await rig.store.agents.upsert(other)
    first, _ = await rig.runner.start(rig.agent.id, "manual")
    second, _ = await rig.runner.start(other.id, "manual")
    assert await until(lambda: len(rig.engine.requests) == 2)
    await rig.runner.stop()
    assert rig.runner.active == {}
    for run_id in (first, second):
        row = await rig.store.runs.get(run_id)
        assert (row["status"], row["errors"]) == ("cancelled", [])
    assert sorted(f.run["id"] for f in rig.frames(p.RunFinished)) == sorted([first, second])


# -- the close itself fails --------------------------------------------------------------------

async def test_a_close_the_disk_has_no_room_for_goes_out_now_and_is_written_later(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    await rig.setup(Script([rig.doc("a.md")]), Engine())
    real, fails = rig.store.runs.complete, [1]

    async def complete(*a: Any, **kw: Any) -> dict[str, Any]:
        if fails[0]:
            fails[0] -= 1
            raise DISK
        return await real(*a, **kw)

    monkeypatch.setattr(rig.store.runs, "complete", complete)
    record = await rig.run()
    line = disk_full_message("the sidecar's data")
    assert (record["status"], record["errors"], record["items_processed"]) == (
        "error", [line], 1)
    assert rig.finished()["status"] == "error"
    assert (await rig.store.runs.get(record["id"]))["status"] == "running"
    assert await rig.store.agents.last_run_at(rig.agent.id) is None
    assert rig.frames(p.RunDelivered) == []
    assert await until(lambda: bool(rig.frames(p.RunDelivered)), timeout=5)
    row = await rig.store.runs.get(record["id"])
    assert (row["status"], row["errors"], row["items_processed"]) == ("error", [line], 1)
    assert await rig.store.agents.last_run_at(rig.agent.id) is not None


async def test_a_run_stopped_by_a_full_disk_says_so_once_when_its_close_fails_too(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    await rig.setup(Script([rig.doc("a.md")], error=DISK), Engine())
    real, fails = rig.store.runs.complete, [1]

    async def complete(*a: Any, **kw: Any) -> dict[str, Any]:
        if fails[0]:
            fails[0] -= 1
            raise DISK
        return await real(*a, **kw)

    monkeypatch.setattr(rig.store.runs, "complete", complete)
    record = await rig.run()
    assert record["errors"] == [disk_full_message("the sidecar's data")]
    assert await until(lambda: bool(rig.frames(p.RunDelivered)), timeout=5)


async def test_a_close_that_fails_otherwise_raises_and_frees_the_agent(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    await rig.setup(Script([rig.doc("a.md")]), Engine())

    async def complete(*a: Any, **kw: Any) -> dict[str, Any]:
        raise sqlite3.OperationalError("no such table: runs")

    monkeypatch.setattr(rig.store.runs, "complete", complete)
    run_id, _ = await rig.runner.start(rig.agent.id, "manual")
    with pytest.raises(sqlite3.OperationalError):
        await rig.runner.wait(run_id)
    assert rig.runner.running_run(rig.agent.id) is None and rig.frames(p.RunFinished) == []


# -- projects and provenance -------------------------------------------------------------------

PROJECTS = [{"id": "p_ap", "name": "Apollo", "aliases": ["Moonshot"]},
            {"id": "p_ze", "name": "Zephyr", "client": "Acme Corp"}]


async def test_records_are_linked_to_the_one_project_they_or_their_document_name(
        rig: Rig) -> None:
    await rig.store.kv.set(PROJECTS_KEY, PROJECTS)
    (rig.root / "Acme Corp").mkdir()
    review = str(rig.root / "Acme Corp" / "Moonshot review.md")
    moon = str(rig.root / "Acme Corp" / "Moonshot plan.md")  # named by its path only
    docs = [
        rig.doc("zephyr-notes.md"),
        SourceDocument(item=WorkItem(key=review, label=review), text="x", content_hash="h1",
                       meta={"path": review}),
        rig.doc("Acme Corp/minutes.md", label="minutes.md"),
        rig.doc("misc.md", "Kickoff for Apollo on Monday"),
        rig.doc("w.md", meta={"title": "Weekly Zephyr"}),
        SourceDocument(item=WorkItem(key="msg-7", label=moon), text="x", content_hash="h2",
                       meta={"path": moon}),
        rig.doc("plain.md", "nothing to see"),
    ]
    own = task("Ship it", data={"projectId": "mine"})
    named = ExtractedRecord(table="projects", data={"name": "Apollo launch"},
                          source=Grounding(span=None))
    answers = {
        "zephyr-notes.md": ExtractionResult(items=(
            task("Ship the Apollo build"), task("Compare Apollo and Zephyr"),
            task("Call the printer"), own)),
        review: found("Book a room"),
        "minutes.md": found("Call Bob"),
        "misc.md": ExtractionResult(items=(task("Book a room"), named)),
        "w.md": found("Send notes"),
        moon: found("Print it"),
        "plain.md": found("Water plants"),
    }
    await rig.setup(Script(docs), Engine(answers))
    record = await rig.run()
    entries = await rig.store.outbox.for_run(record["id"])
    links = [(e.data.get("title") or e.data.get("name"), e.meta["source"].get("project"))
             for e in entries]
    assert [e.data.get("projectId") for e in entries if e.data.get("projectId")] == []
    assert links == [
        ("Ship the Apollo build", {"id": "p_ap", "by": "name", "term": "Apollo",
                                   "in": "record"}),
        ("Compare Apollo and Zephyr", None),  # the record names two: its document cannot say
        ("Call the printer", {"id": "p_ze", "by": "name", "term": "Zephyr", "in": "title"}),
        # the engine's own projectId is never trusted: its document decides
        ("Ship it", {"id": "p_ze", "by": "name", "term": "Zephyr", "in": "title"}),
        ("Book a room", {"id": "p_ap", "by": "alias", "term": "Moonshot", "in": "title"}),
        ("Call Bob", {"id": "p_ze", "by": "client", "term": "Acme Corp", "in": "folder"}),
        ("Book a room", {"id": "p_ap", "by": "name", "term": "Apollo", "in": "body"}),
        ("Apollo launch", {"id": "p_ap", "by": "name", "term": "Apollo", "in": "record"}),
        ("Send notes", {"id": "p_ze", "by": "name", "term": "Zephyr", "in": "title"}),
        ("Print it", {"id": "p_ap", "by": "alias", "term": "Moonshot", "in": "title"}),
        ("Water plants", None),
    ]


async def test_records_are_not_linked_when_the_apps_projects_cannot_be_read(rig: Rig) -> None:
    await rig.store.kv.set(PROJECTS_KEY, [{"id": "", "name": "Apollo"}])
    await rig.setup(Script([rig.doc("a.md")]), Engine({"a.md": found("Ship Apollo")}))
    record = await rig.run()
    assert record["status"] == "success"
    (entry,) = await rig.store.outbox.for_run(record["id"])
    assert "project" not in entry.meta["source"]


async def test_a_record_carries_where_it_came_from_and_what_its_dates_meant(rig: Rig) -> None:
    docs = [rig.doc("a.eml", kind="eml"), rig.doc("b.txt", kind="chat"),
            rig.doc("f.json", kind="email"),
            rig.doc("c.md"), rig.doc("d.eml", kind="eml", meta={"date_origin": "received"}),
            rig.doc("e.md", label="E notes")]
    ref = {"date": "2026-03-10", "origin": "document"}
    answers: dict[str, Any] = {d.item.label: ExtractionResult(items=(
        task(f"From {d.item.label}", conf=0.876543, reference=ref),)) for d in docs[:5]}
    answers["E notes"] = ExtractionResult(items=(
        task("Undated"), task("Named", reference={"date": "2026-01-02", "origin": "text"})))
    await rig.setup(Script(docs), Engine(answers))
    record = await rig.run()
    entries = await rig.store.outbox.for_run(record["id"])
    origins = [e.meta["source"].get("reference") for e in entries]
    assert origins == [{"date": "2026-03-10", "origin": "email"},
                       {"date": "2026-03-10", "origin": "message"},
                       {"date": "2026-03-10", "origin": "email"},
                       {"date": "2026-03-10", "origin": "document"},
                       {"date": "2026-03-10", "origin": "received"},
                       None, {"date": "2026-01-02", "origin": "text"}]
    first = entries[0].meta
    assert first == {"confidence": 0.8765, "source": {
        "path": str(rig.root / "a.eml"), "key": str(rig.root / "a.eml"), "label": "a.eml",
        "span": [0, 5], "exact": True, "grounded": True,
        "reference": {"date": "2026-03-10", "origin": "email"}}}
    assert entries[5].meta["source"]["label"] == "E notes"


# -- the sidecar's own suggestions ---------------------------------------------------------------

async def test_a_document_introducing_a_project_queues_its_suggestion_first(rig: Rig) -> None:
    agent = validate_agent({"kind": "local", "name": "Docs", "directories": [str(rig.root)],
                            "data_types": ["tasks", "projects"]})
    kickoff = rig.doc("kickoff.md", "# Kickoff — Nova Dental rebrand\n\n- [ ] Send the brief",
                      meta={"title": "Kickoff — Nova Dental rebrand"})
    many = ExtractionResult(items=tuple(task(f"Task {i}") for i in range(300)))
    source = Script([kickoff])
    await rig.setup(source, Engine({"kickoff.md": many}), agent=agent)
    record = await rig.run()
    (request,) = rig.engine.requests
    assert request.data_types == ("tasks",)  # projects are the sidecar's own suggestion
    entries = await rig.store.outbox.for_run(record["id"])
    assert (entries[0].table, entries[0].data) == ("projects", {"name": "Nova Dental rebrand"})
    assert [e.table for e in entries].count("projects") == 1
    assert [d[2]["items"] for d in source.done_calls] == [301]
    assert rig.frames(p.RunProgress)[-1].items_found == 301
    assert record["status"] == "success" and record["errors"] == []


async def test_an_agent_asking_only_for_projects_does_not_run_the_engine(rig: Rig) -> None:
    agent = validate_agent({"kind": "local", "name": "Docs", "directories": [str(rig.root)],
                            "data_types": ["projects"]})
    kickoff = rig.doc("brief.md", "Project brief: Summer menu\n\nClient: Café Uno",
                      meta={"title": "Project brief: Summer menu"})
    await rig.setup(Script([kickoff]), Engine({"brief.md": found("Never asked")}), agent=agent)
    record = await rig.run()
    assert rig.engine.requests == []
    entries = await rig.store.outbox.for_run(record["id"])
    assert [(e.table, e.data) for e in entries] == [("projects", {"name": "Summer menu"})]
    assert record["items_processed"] == 1 and rig.delivery.notified == 1


async def test_a_run_of_some_files_hands_them_to_the_source(rig: Rig) -> None:
    await rig.setup(Script([rig.doc("a.md")]), Engine())
    run_id, _ = await rig.runner.start(rig.agent.id, "watch", only={str(rig.root / "a.md")})
    await rig.runner.wait(run_id)
    assert rig.asked == [(rig.agent.id, run_id, {str(rig.root / "a.md")})]
    await rig.run()
    assert rig.asked[1][2] is None


async def test_cancelling_a_run_whose_close_fails_still_returns(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = asyncio.Event()
    await rig.setup(Script([rig.doc("a.md")]), Engine(gate=gate))

    async def complete(*a: Any, **kw: Any) -> dict[str, Any]:
        raise sqlite3.OperationalError("no such table: runs")

    monkeypatch.setattr(rig.store.runs, "complete", complete)
    run_id, _ = await rig.runner.start(rig.agent.id, "manual")
    assert await until(lambda: len(rig.engine.requests) == 1)
    assert await rig.runner.cancel(run_id) is True
    assert rig.runner.running_run(rig.agent.id) is None


async def test_a_cancel_before_the_first_step_processed_nothing(rig: Rig) -> None:
    await rig.setup(Script([rig.doc("a.md")]), Engine())
    run_id, _ = await rig.runner.start(rig.agent.id, "manual")
    assert await rig.runner.cancel(run_id) is True  # no await between: no step taken
    run = rig.finished()
    assert (run["status"], run["items_processed"], run["errors"]) == ("cancelled", 0, [])


async def test_a_cancelled_run_whose_close_finds_the_disk_full_stays_cancelled(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = asyncio.Event()
    await rig.setup(Script([rig.doc("a.md")]), Engine(gate=gate))
    real, fails = rig.store.runs.complete, [1]

    async def complete(*a: Any, **kw: Any) -> dict[str, Any]:
        if fails[0]:
            fails[0] -= 1
            raise DISK
        return await real(*a, **kw)

    monkeypatch.setattr(rig.store.runs, "complete", complete)
    run_id, _ = await rig.runner.start(rig.agent.id, "manual")
    assert await until(lambda: len(rig.engine.requests) == 1)
    assert await rig.runner.cancel(run_id) is True
    assert rig.finished()["status"] == "cancelled"
    assert await until(lambda: bool(rig.frames(p.RunDelivered)), timeout=5)
    assert (await rig.store.runs.get(run_id))["status"] == "cancelled"


async def test_an_old_document_on_a_first_run_introduces_no_project(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sidecar.clock.now", lambda: datetime(2026, 3, 31, tzinfo=UTC))
    agent = validate_agent({"kind": "local", "name": "Docs", "directories": [str(rig.root)],
                            "data_types": ["tasks", "projects"]})
    old = SourceDocument(item=WorkItem(key=str(rig.root / "k.md"), label="k.md"),
                         text="# Kickoff — Nova Dental rebrand", content_hash="h",
                         date=datetime(2026, 1, 5, tzinfo=UTC),  # before the 30-day window
                         meta={"title": "Kickoff — Nova Dental rebrand"})
    await rig.setup(Script([old]), Engine(), agent=agent)
    record = await rig.run()
    assert await rig.store.outbox.for_run(record["id"]) == []
    assert rig.engine.requests[0].stale_before == datetime(2026, 3, 1, tzinfo=UTC)
