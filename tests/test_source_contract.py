"""One contract, every source: local folders, and Gmail, Outlook and Teams against their fakes.

Each source is built the way the daemon builds it (the registry's plug-in, wired with the
store and the settings) and its account is connected through the plug-in's own sign-in
(real google-auth and msal against the fake servers on 127.0.0.1). The suite is the
:class:`sidecar.sources.base.Source` docstring, clause by clause.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from sidecar.accounts import Accounts
from sidecar.domain import PROVIDERS, Agent, validate_agent
from sidecar.errors import (
    ConfigError,
    NeedsReauth,
    NotFound,
    PermanentError,
    TransientError,
    http_error,
    parse_retry_after,
)
from sidecar.hub import Hub
from sidecar.settings import Config
from sidecar.sources import registry
from sidecar.sources.base import Skip, Source, SourceDocument, WorkItem
from sidecar.sources.provider import Provider, Wiring
from sidecar.store import Store
from tests.fakes.gmail_server import FakeGmail
from tests.fakes.graph_server import FakeGraph

KEY = "contract-key-1"
GMAIL_ACCOUNT = "me@example.com"
NOW = datetime.now(UTC).replace(microsecond=0)


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class World(abc.ABC):
    """A provider's side of the world: documents to add, and sources over them."""

    name: str
    agent: Agent
    config: Config

    def __init__(self, store: Store, tmp_path: Path) -> None:
        self.store = store
        self.tmp_path = tmp_path

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the fake (if any) and connect the account through the plug-in."""

    async def stop(self) -> None:
        return None

    @abc.abstractmethod
    def add(self, n: int) -> None:
        """A readable document whose text carries ``marker-{n}``, newer than any before."""

    @abc.abstractmethod
    def add_bad(self) -> None:
        """A document the source cannot read (a Skip, not an exception)."""

    def source(self, run_id: str = "r1") -> Source:
        return registry.make_source(self.agent, Wiring(self.store, self.config, run_id=run_id))


class LocalWorld(World):
    name = "local"

    async def start(self) -> None:
        self.folder = self.tmp_path / "docs"
        self.folder.mkdir()
        self.config = Config.load().replace(allowed_roots=(self.tmp_path,))
        self.agent = validate_agent({"kind": "local", "name": "Docs",
                                     "directories": [str(self.folder)],
                                     "extensions": [".md", ".pdf"]},
                                    allowed_roots=[self.tmp_path])

    def add(self, n: int) -> None:
        (self.folder / f"doc{n:02d}.md").write_text(
            f"# Notes {n}\n\n- [ ] Ana to send the report marker-{n} by Friday\n",
            encoding="utf-8")

    def add_bad(self) -> None:
        (self.folder / "zz-broken.pdf").write_bytes(b"not a pdf at all")


class GmailWorld(World):
    name = "gmail"

    def __init__(self, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(store, tmp_path)
        # the fake token endpoint is plain http on loopback; oauthlib insists on https
        monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")

    async def start(self) -> None:
        self.fake = FakeGmail(email=GMAIL_ACCOUNT, page_size=2)
        await self.fake.start()
        self.config = Config.load().replace(gmail_api_base=self.fake.url)
        wiring = Wiring(self.store, self.config)
        started = await registry.provider("gmail").sign_in(
            {"client_config": {"installed": {
                "client_id": self.fake.client_id, "client_secret": self.fake.client_secret,
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": f"{self.fake.url}/token"}}}, GMAIL_ACCOUNT, None, wiring)
        query = parse_qs(urlsplit(started.url).query)
        self.fake.expect_code("code-1", query["code_challenge"][0])
        async with aiohttp.ClientSession() as s, s.get(query["redirect_uri"][0], params={
                "state": query["state"][0], "code": "code-1",
                "scope": query["scope"][0]}) as resp:
            assert resp.status == 200
        account = await started.flow.wait(10)
        self.agent = Agent(id="a_gmail", kind="cloud", name="Mail", provider="gmail",
                           account=account)
        self.n = 0

    async def stop(self) -> None:
        await self.fake.close()

    def add(self, n: int) -> None:
        self.n += 1
        self.fake.add_message(f"m{n:02d}", subject=f"Report {n}",
                              when=NOW - timedelta(hours=48) + timedelta(minutes=self.n),
                              text=f"Ana, please send the report marker-{n} by Friday.")

    def add_bad(self) -> None:
        self.n += 1
        self.fake.add_message("blank", subject="Blank",
                              when=NOW - timedelta(hours=48) + timedelta(minutes=self.n),
                              text="   ")


class GraphWorld(World):
    """Outlook or Teams: one fake Graph + Entra ID, a device-code sign-in (real msal)."""

    async def start(self) -> None:
        self.fake = await FakeGraph(self.tmp_path).start()
        self.config = Config.load().replace(graph_api_base=self.fake.api_base)
        started = await registry.provider(self.name).sign_in(
            {"client_id": self.fake.client_id, "authority": self.fake.authority,
             "verify": str(self.fake.ca_file), "instance_discovery": False},
            None, "device_code", Wiring(self.store, self.config))
        assert started.user_code
        self.fake.approve_device(started.user_code)
        account = await started.flow.wait(30)
        self.agent = Agent(id=f"a_{self.name}", kind="cloud", name=self.name,
                           provider=self.name, account=account)
        self.n = 0

    async def stop(self) -> None:
        await self.fake.stop()

    def when(self) -> str:
        self.n += 1
        return iso(NOW - timedelta(hours=48) + timedelta(minutes=self.n))


class OutlookWorld(GraphWorld):
    name = "outlook"

    def add(self, n: int) -> None:
        self.fake.add_message(f"m{n:02d}", self.when(), subject=f"Report {n}",
                              body=f"<p>Ana, please send the report marker-{n} by Friday.</p>")

    def add_bad(self) -> None:
        self.fake.add_message("bad", self.when(), subject="Scan", body="<p>see attached</p>")
        self.fake.add_attachment("bad", "scan.txt", b"attached text")
        self.fake.fail("/me/messages/bad/attachments", 404, times=20, code="ErrorItemNotFound")


class TeamsWorld(GraphWorld):
    name = "teams"

    def _chat(self, chat_id: str, text: str) -> None:
        self.fake.chats.append({"id": chat_id, "topic": f"Chat {chat_id[:8]}"})
        self.fake.add_chat_message(chat_id, f"{len(self.fake.chats)}001", self.when(), "Ada",
                                   text)

    def add(self, n: int) -> None:
        self._chat(f"19:c{n:02d}@thread.v2",
                   f"<p>Ana, please send the report marker-{n} by Friday.</p>")

    def add_bad(self) -> None:
        self._chat("19:empty@thread.v2", "<p> </p>")


WORLDS = ("local", "gmail", "outlook", "teams")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "sidecar.db") as s:
        yield s


@pytest.fixture(params=WORLDS)
async def world(request: pytest.FixtureRequest, store: Store, tmp_path: Path,
                keyring_file: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    kinds: dict[str, Any] = {"local": LocalWorld, "outlook": OutlookWorld,
                             "teams": TeamsWorld}
    w: World = (GmailWorld(store, tmp_path, monkeypatch) if request.param == "gmail"
                else kinds[request.param](store, tmp_path))
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


async def run(world: World, *, record: set[int] | None = None, full: bool = False,
              run_id: str = "r1") -> list[SourceDocument | Skip]:
    """What the runner does with a fresh source: list, read, record progress in the records'
    transaction (only for documents whose marker is in ``record``, when given), finish."""
    source = world.source(run_id)
    items = [w async for w in source.pending(KEY, full=full)]
    out: list[SourceDocument | Skip] = []
    for item in items:
        doc = await source.read(item)
        out.append(doc)
        if isinstance(doc, Skip):
            await source.skipped(doc)
        elif record is None or marker(doc) in record:
            async with world.store.db.transaction() as conn:
                await world.store.record_progress(source.progress(doc, KEY, {"items": 1}),
                                                  conn)
    notes = await source.finish()
    assert isinstance(notes, list) and all(isinstance(n, str) for n in notes)
    return out


def marker(doc: SourceDocument | Skip) -> int:
    assert isinstance(doc, SourceDocument), doc
    found = re.findall(r"marker-(\d+)", doc.text)
    assert len(found) == 1, doc.text
    return int(found[0])


def markers(docs: list[SourceDocument | Skip]) -> list[int]:
    return [marker(d) for d in docs]


# -- the contract -----------------------------------------------------------------------------


async def test_new_documents_once_in_order_and_an_unchanged_source_makes_no_work(
        world: World) -> None:
    for n in (1, 2, 3):
        world.add(n)
    docs = await run(world)
    assert markers(docs) == [1, 2, 3]
    assert len({d.item.key for d in docs}) == 3
    for d in docs:
        assert isinstance(d, SourceDocument) and isinstance(d.item, WorkItem)
        assert re.fullmatch(r"[0-9a-f]{64}", d.content_hash)
        assert d.kind and d.item.label and d.title  # a heading, a subject, a chat's topic
        assert d.date is None or d.date.tzinfo is not None
        # a message names who wrote it beside the text (the extractor takes it from there)
        assert (d.sender is not None) == (world.name in ("gmail", "outlook")), d.sender
    assert await run(world, run_id="r2") == []
    assert await run(world, run_id="r3") == []


async def test_a_document_whose_progress_was_never_recorded_comes_back(world: World) -> None:
    world.add(1)
    world.add(2)
    assert markers(await run(world, record={1})) == [1, 2]  # … the process died before 2
    assert markers(await run(world, run_id="r2")) == [2]
    assert await run(world, run_id="r3") == []


async def read_one(world: World) -> tuple[Source, SourceDocument]:
    """A fresh source's only pending document, read."""
    source = world.source()
    [item] = [w async for w in source.pending(KEY)]
    doc = await source.read(item)
    assert isinstance(doc, SourceDocument)
    return source, doc


async def test_progress_commits_with_the_records_or_not_at_all(world: World) -> None:
    world.add(1)
    source, doc = await read_one(world)
    with pytest.raises(RuntimeError):
        async with world.store.db.transaction() as conn:
            await world.store.record_progress(source.progress(doc, KEY, {"items": 1}), conn)
            raise RuntimeError("the records' insert failed: the transaction rolls back")
    await source.finish()
    assert markers(await run(world, run_id="r2")) == [1]
    assert await run(world, run_id="r3") == []


async def test_a_new_document_after_a_complete_run_is_the_only_work(world: World) -> None:
    world.add(1)
    world.add(2)
    assert markers(await run(world)) == [1, 2]
    world.add(3)
    assert markers(await run(world, run_id="r2")) == [3]


async def test_full_yields_every_document_again(world: World) -> None:
    world.add(1)
    world.add(2)
    await run(world)
    assert markers(await run(world, full=True, run_id="r2")) == [1, 2]


async def test_an_unreadable_document_is_a_skip_and_is_not_read_again(world: World) -> None:
    world.add(1)
    world.add_bad()
    docs = await run(world)
    skips = [d for d in docs if isinstance(d, Skip)]
    assert len(skips) == 1 and markers([d for d in docs if d not in skips]) == [1]
    skip = skips[0]
    assert skip.reason and skip.message and not skip.transient
    assert await run(world, run_id="r2") == []


async def test_a_document_never_extracted_is_not_current(world: World) -> None:
    world.add(1)
    source, doc = await read_one(world)
    assert await source.is_current(doc, KEY) is False


# -- the registry -----------------------------------------------------------------------------


def test_every_provider_an_agent_may_name_has_a_plug_in() -> None:
    for name in (*PROVIDERS, "local"):
        plugin = registry.provider(name)
        assert isinstance(plugin, Provider) and plugin.name == name


async def test_an_unknown_provider_is_a_clear_error_never_another_source(
        store: Store, keyring_file: Path) -> None:
    agent = Agent(id="a_x", kind="cloud", name="X", provider="yahoo", account="me@y.test")
    with pytest.raises(ConfigError, match="unknown provider 'yahoo'") as err:
        registry.make_source(agent, Wiring(store, Config.load()))
    assert err.value.field == "provider"
    accounts = Accounts(store, Hub(), Config.load())
    with pytest.raises(ConfigError, match="unknown provider 'yahoo'"):
        await accounts.start("yahoo", {}, None, None)
    assert accounts.pending == {}
    with pytest.raises(ConfigError, match="no account to connect"):
        await accounts.start("local", {}, None, None)


# -- the one HTTP classifier both cloud APIs go through ---------------------------------------


@pytest.mark.parametrize(("status", "body", "retry_after", "kind", "code", "delay"), [
    (429, {}, "7", TransientError, "transient", 7.0),
    (503, {"error": {"code": "ServiceUnavailable"}}, None, TransientError, "transient", None),
    (408, "request timeout", None, TransientError, "transient", None),
    (501, {"error": {"code": "NotImplemented"}}, None, PermanentError, "bad_request", None),
    # Google's rate limit is a 403 with a reason; Graph's 403 is a refusal
    (403, {"error": {"code": 403, "status": "PERMISSION_DENIED", "errors": [
        {"reason": "userRateLimitExceeded"}]}}, "2", TransientError, "transient", 2.0),
    (403, {"error": {"code": "ErrorAccessDenied", "message": "no"}}, None, PermanentError,
     "forbidden", None),
    (404, {"error": {"code": "ErrorItemNotFound"}}, None, NotFound, "not_found", None),
    (401, "not json", None, NeedsReauth, "needs_reauth", None),
    (400, {"error": {"code": "BadRequest", "message": "bad $filter"}}, None, PermanentError,
     "bad_request", None),
])
def test_http_errors_are_classified_once_for_every_api(
        status: int, body: Any, retry_after: str | None, kind: type[Exception], code: str,
        delay: float | None) -> None:
    err = http_error(status, body, what="list mail", retry_after=retry_after)
    assert type(err) is kind and err.code == code
    assert err.message.startswith(f"list mail: HTTP {status}")
    if isinstance(err, TransientError):
        assert err.retry_after == delay


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Sat, 21 Nov 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sat, 21 Nov 2026 11:00:00 GMT", now) == 0.0  # past: at once
    assert parse_retry_after("-5", now) == 0.0
    for unreadable in (None, "", "  ", "soon", "nan", "inf"):
        assert parse_retry_after(unreadable, now) is None
