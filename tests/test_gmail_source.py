"""Gmail source and Google sign-in against a fake Gmail: paging, cursors, retries, OAuth."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from fakes.gmail_server import SCOPE, FakeGmail, utc
from test_readers import make_pdf

from sidecar.domain import Agent
from sidecar.errors import ConfigError, NeedsReauth, PermanentError
from sidecar.secrets import NoKeyring, get_secret, set_secret
from sidecar.sources.base import Skip, SourceDocument
from sidecar.sources.gmail.signin import GoogleCredentials, start_google_flow
from sidecar.sources.gmail.source import GmailSource, build_query
from sidecar.store import Store

ACCOUNT = "me@example.com"
NOW = utc(2025, 3, 10, 12, 0, 0)
KEY = "extract-v1"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGmail]:
    server = FakeGmail(email=ACCOUNT, page_size=2)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store(tmp_path / "sidecar.db").open()
    yield s
    await s.close()


def connect(fake: FakeGmail, *, expiry: datetime | None = None) -> str:
    """Store a token JSON like ``Credentials.to_json()`` writes, pointed at the fake."""
    access = fake.issue_token("refresh-1")
    expiry = expiry or datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)
    set_secret("gmail", ACCOUNT, json.dumps({
        "token": access, "refresh_token": "refresh-1", "token_uri": f"{fake.url}/token",
        "client_id": fake.client_id, "client_secret": fake.client_secret, "scopes": [SCOPE],
        "expiry": expiry.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}))
    return access


def seed(fake: FakeGmail) -> None:
    for i, days in enumerate((1, 2, 3, 5, 6), 1):
        fake.add_message(f"m{i}", subject=f"Message {i}", when=NOW - timedelta(days=days),
                         text=f"Please review item {i} by Friday.")
    fake.add_message("old", subject="Too old", when=NOW - timedelta(days=10), text="old")


class Clock:
    def __init__(self, when: datetime = NOW) -> None:
        self.when = when

    def __call__(self) -> datetime:
        return self.when


def agent(**filter_config: Any) -> Agent:
    return Agent(id="a_gmail", kind="cloud", name="Mail", provider="gmail", account=ACCOUNT,
                 filter_config=filter_config)


def source(fake: FakeGmail, store: Store, *, clock: Clock | None = None,
           sleeps: list[float] | None = None, **filter_config: Any) -> GmailSource:
    async def sleep(delay: float) -> None:
        if sleeps is not None:
            sleeps.append(delay)

    return GmailSource(agent(**filter_config), store, run_id="r1",
                       credentials_factory=GoogleCredentials, api_base=fake.url,
                       now=clock or Clock(), sleep=sleep)


async def run(src: GmailSource, store: Store, *, stop_after: int | None = None
              ) -> list[SourceDocument | Skip]:
    """What the runner does: pending → read → done in the outbox transaction → finish."""
    items = [w async for w in src.pending(KEY)]
    out: list[SourceDocument | Skip] = []
    for n, item in enumerate(items):
        if stop_after is not None and n == stop_after:
            return out  # the process died here: no done, no finish
        doc = await src.read(item)
        out.append(doc)
        if isinstance(doc, Skip):
            await src.skipped(doc)
        else:
            async with store.db.transaction() as conn:
                await store.record_progress(src.progress(doc, KEY, {"items": 0}), conn)
    await src.finish()
    return out


def keys(docs: list[SourceDocument | Skip]) -> list[str]:
    return [d.item.key for d in docs]


def test_build_query_from_filter_config() -> None:
    q = build_query({"labels": ["INBOX", "Work Stuff"], "from": "boss@corp.example",
                     "subject": "weekly report", "query": "has:attachment -in:chats"},
                    after=1700000000)
    assert q == ('{label:INBOX label:"Work Stuff"} from:boss@corp.example '
                 'subject:"weekly report" (has:attachment -in:chats) after:1700000000')
    assert build_query({}) == ""
    assert build_query({"labels": ["INBOX"]}, after=5) == "label:INBOX after:5"
    with pytest.raises(ConfigError) as err:
        build_query({"labels": [1, 2]})
    assert err.value.field == "agent.filter_config.labels"


async def test_first_run_looks_back_seven_days_and_pages(fake: FakeGmail, store: Store,
                                                         keyring_file: Path) -> None:
    connect(fake)
    seed(fake)
    docs = await run(source(fake, store, labels=["INBOX"]), store)
    assert keys(docs) == ["m5", "m4", "m3", "m2", "m1"]  # oldest first, "old" out of range
    week_ago = int((NOW - timedelta(days=7)).timestamp())
    assert fake.queries == [f"label:INBOX after:{week_ago}"] * 3  # three pages of two
    assert fake.calls["messages.list"] == 3
    first = docs[0]
    assert isinstance(first, SourceDocument)
    assert first.item.label == "Message 5"
    assert first.item.version == {"internalDate": int(fake.messages["m5"]["internalDate"])}
    assert first.text.startswith("Subject: Message 5\nFrom: a@b.example\nDate: ")
    assert "Please review item 5 by Friday." in first.text
    assert first.date == NOW - timedelta(days=6) and first.date.tzinfo is not None


async def test_second_run_yields_nothing_then_only_new_mail(fake: FakeGmail, store: Store,
                                                            keyring_file: Path) -> None:
    connect(fake)
    seed(fake)
    clock = Clock()
    await run(source(fake, store, clock=clock), store)
    lists = fake.calls["messages.list"]
    clock.when = NOW + timedelta(hours=2)
    assert await run(source(fake, store, clock=clock), store) == []
    assert fake.calls["messages.list"] == lists  # history said nothing was added
    assert fake.calls["history"] == 1
    fake.add_message("m6", subject="New", when=NOW + timedelta(hours=2, minutes=30),
                     text="New task")
    clock.when = NOW + timedelta(hours=3)
    docs = await run(source(fake, store, clock=clock), store)
    assert keys(docs) == ["m6"]
    bound = int((NOW + timedelta(hours=2)).timestamp()) - 3600  # last bound minus overlap
    assert fake.queries[-1] == f"after:{bound}"
    # a message that shows up late with an old date (moved in, imported): history has it
    fake.add_message("late", subject="Late", when=NOW - timedelta(days=2), text="Late task")
    clock.when = NOW + timedelta(hours=4)
    assert keys(await run(source(fake, store, clock=clock), store)) == ["late"]
    assert await run(source(fake, store, clock=clock), store) == []


async def test_expired_history_falls_back_to_the_query(fake: FakeGmail, store: Store,
                                                       keyring_file: Path) -> None:
    connect(fake)
    seed(fake)
    await run(source(fake, store), store)
    fake.oldest_history = 10**9  # every stored history id is now too old: 404
    fake.add_message("m6", subject="New", when=NOW + timedelta(minutes=10), text="New task")
    docs = await run(source(fake, store, clock=Clock(NOW + timedelta(hours=1))), store)
    assert keys(docs) == ["m6"]
    assert fake.queries[-1] == f"after:{int(NOW.timestamp()) - 3600}"


async def test_crash_between_read_and_done_loses_nothing(fake: FakeGmail, store: Store,
                                                         keyring_file: Path) -> None:
    connect(fake)
    seed(fake)
    crashed = await run(source(fake, store), store, stop_after=2)  # m5, m4 done; died on m3
    src = source(fake, store)
    items = [w async for w in src.pending(KEY)]
    doc = await src.read(items[0])
    with pytest.raises(RuntimeError):  # the outbox transaction itself fails: rolled back
        async with store.db.transaction() as conn:
            await store.record_progress(src.progress(doc, KEY, {"items": 1}), conn)
            raise RuntimeError("disk full")
    again = await run(source(fake, store), store)
    assert keys(crashed) == ["m5", "m4"]
    assert keys(again) == ["m3", "m2", "m1"]
    redo = again[0]
    assert isinstance(redo, SourceDocument) and isinstance(doc, SourceDocument)
    assert redo.content_hash == doc.content_hash  # same idempotency keys downstream
    assert await run(source(fake, store), store) == []


async def test_changed_extraction_key_or_filter_redoes(fake: FakeGmail, store: Store,
                                                       keyring_file: Path) -> None:
    connect(fake)
    seed(fake)
    await run(source(fake, store), store)
    src = source(fake, store)
    assert [w.key async for w in src.pending("another-key")] == ["m5", "m4", "m3", "m2", "m1"]
    src = source(fake, store, **{"from": "nobody@else.example"})
    assert [w.key async for w in src.pending(KEY)] == []
    assert fake.queries[-1].startswith("from:nobody@else.example after:")


async def test_deleted_and_empty_messages_are_skipped(fake: FakeGmail, store: Store,
                                                      keyring_file: Path) -> None:
    connect(fake)
    fake.add_message("gone", subject="Gone", when=NOW - timedelta(hours=3), text="x")
    fake.add_message("blank", subject="Blank", when=NOW - timedelta(hours=2), text="  ")
    src = source(fake, store)
    items = [w async for w in src.pending(KEY)]
    fake.delete("gone")
    results = [await src.read(item) for item in items]
    assert [(r.item.key, r.reason) for r in results if isinstance(r, Skip)] == [
        ("gone", "vanished"), ("blank", "empty")]
    for r in results:
        assert isinstance(r, Skip)
        await src.skipped(r)
    await src.finish()
    assert await run(source(fake, store), store) == []


async def test_html_only_body_becomes_text(fake: FakeGmail, store: Store,
                                           keyring_file: Path) -> None:
    connect(fake)
    fake.add_message("h", subject="Newsletter", when=NOW - timedelta(hours=1),
                     html="<html><style>p{color:red}</style><body><h1>Launch</h1>"
                          "<p>Ship the <b>beta</b> on Monday.</p></body></html>")
    [doc] = await run(source(fake, store), store)
    assert isinstance(doc, SourceDocument)
    assert "Ship the beta on Monday." in doc.text and "Launch" in doc.text
    assert "<" not in doc.text and "color" not in doc.text


async def test_attachment_text_is_included(fake: FakeGmail, store: Store,
                                           keyring_file: Path) -> None:
    connect(fake)
    fake.add_message("a", subject="Docs", when=NOW - timedelta(hours=1), text="See attached.",
                     attachments=(("plan.pdf", "application/pdf", make_pdf(["Budget due May 3"])),
                                  ("notes.txt", "text/plain", b"Call the vendor"),
                                  ("photo.png", "image/png", b"\x89PNG...")))
    [doc] = await run(source(fake, store), store)
    assert isinstance(doc, SourceDocument)
    assert "See attached." in doc.text
    assert "--- Attachment: plan.pdf ---\nBudget due May 3" in doc.text
    assert "--- Attachment: notes.txt ---\nCall the vendor" in doc.text
    assert "PNG" not in doc.text
    assert doc.meta["attachments"] == ["plan.pdf", "notes.txt"]
    assert fake.calls["attachments.get"] == 2


async def test_429_retry_after_and_500_are_retried(fake: FakeGmail, store: Store,
                                                   keyring_file: Path) -> None:
    connect(fake)
    seed(fake)
    fake.fail("messages.list", 2, 429, {"Retry-After": "1"})
    fake.fail("messages.get", 3, 500)
    sleeps: list[float] = []
    docs = await run(source(fake, store, sleeps=sleeps), store)
    assert len(docs) == 5
    assert sleeps[0] == 1.0  # Retry-After honoured
    assert len(sleeps) == 2 and 0 < sleeps[1] <= 0.5  # jittered backoff for the 500
    assert fake.calls["messages.list"] == 4  # 3 pages + the retried one


async def test_403_is_permanent(fake: FakeGmail, store: Store, keyring_file: Path) -> None:
    connect(fake)
    fake.fail("profile", 1, 403)
    with pytest.raises(PermanentError) as err:
        [w async for w in source(fake, store).pending(KEY)]
    assert "HTTP 403" in err.value.message and fake.calls["profile"] == 1


async def test_401_refreshes_once_and_persists_the_new_token(
        fake: FakeGmail, store: Store, keyring_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    old = connect(fake)
    seed(fake)
    fake.expire_access_tokens()  # the server no longer accepts the stored access token
    docs = await run(source(fake, store), store)
    assert len(docs) == 5
    assert [r["grant_type"] for r in fake.token_requests] == ["refresh_token"]
    stored = json.loads(get_secret("gmail", ACCOUNT) or "{}")
    assert stored["token"] != old and stored["token"] in fake.access_tokens
    assert stored["refresh_token"] == "refresh-1"
    assert old not in keyring_file.read_text()
    assert "refreshed the Gmail access token" in caplog.text
    assert old not in caplog.text and stored["token"] not in caplog.text
    assert "refresh-1" not in caplog.text


async def test_expired_token_refreshes_before_the_request(fake: FakeGmail, store: Store,
                                                          keyring_file: Path) -> None:
    connect(fake, expiry=datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=5))
    fake.add_message("m", subject="s", when=NOW - timedelta(hours=1), text="t")
    assert len(await run(source(fake, store), store)) == 1
    assert fake.calls["token"] == 1 and "profile" in fake.calls


async def test_invalid_grant_or_no_token_needs_reauth(fake: FakeGmail, store: Store,
                                                      keyring_file: Path) -> None:
    with pytest.raises(NeedsReauth, match="not connected"):
        [w async for w in source(fake, store).pending(KEY)]
    connect(fake)
    fake.revoke()
    with pytest.raises(NeedsReauth) as err:
        [w async for w in source(fake, store).pending(KEY)]
    assert "reconnect the account" in err.value.message
    assert fake.calls["token"] == 1  # not retried: a revoked grant stays revoked


async def test_no_keyring_is_a_clear_error(fake: FakeGmail, store: Store) -> None:
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        with pytest.raises(NoKeyring) as err:
            [w async for w in source(fake, store).pending(KEY)]
    finally:
        keyring.set_keyring(previous)
    assert err.value.code == "no_keyring" and "keyring" in err.value.message


def client_config(fake: FakeGmail) -> dict[str, Any]:
    return {"installed": {"client_id": fake.client_id, "client_secret": fake.client_secret,
                          "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                          "token_uri": f"{fake.url}/token", "redirect_uris": ["http://127.0.0.1"]}}


async def browser(url: str, **params: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url, params=params) as resp:
        return resp.status, await resp.text()


@pytest.fixture
def insecure_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake token endpoint is plain http on loopback; requests-oauthlib insists on https."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


async def test_oauth_flow_stores_credentials(fake: FakeGmail, store: Store, keyring_file: Path,
                                             insecure_loopback: None) -> None:
    flow = await start_google_flow(client_config(fake), ACCOUNT, api_base=fake.url)
    query = parse_qs(urlsplit(flow.url).query)
    assert query["redirect_uri"] == [flow.redirect_uri]
    assert flow.redirect_uri.startswith("http://127.0.0.1:")
    assert query["access_type"] == ["offline"] and query["prompt"] == ["consent"]
    assert query["code_challenge_method"] == ["S256"] and query["login_hint"] == [ACCOUNT]
    assert query["scope"] == [SCOPE]
    fake.expect_code("code-123", query["code_challenge"][0])
    waiting = asyncio.create_task(flow.wait(5))  # Electron waits while the user signs in
    status, page = await browser(flow.redirect_uri, state=query["state"][0], code="code-123",
                                 scope=SCOPE)
    assert status == 200 and "connected" in page
    assert await waiting == ACCOUNT
    stored = json.loads(get_secret("gmail", ACCOUNT) or "{}")
    assert stored["refresh_token"].startswith("refresh-")
    assert stored["token_uri"] == f"{fake.url}/token"
    assert fake.token_requests[0]["grant_type"] == "authorization_code"
    fake.add_message("m", subject="s", when=NOW - timedelta(hours=1), text="hello")
    assert keys(await run(source(fake, store), store)) == ["m"]  # the new grant works


async def test_oauth_wrong_state_is_rejected(fake: FakeGmail, keyring_file: Path,
                                             insecure_loopback: None) -> None:
    flow = await start_google_flow(client_config(fake), None, api_base=fake.url)
    status, _ = await browser(flow.redirect_uri, state="forged", code="code-123")
    assert status == 400
    with pytest.raises(PermanentError) as err:
        await flow.wait(5)
    assert err.value.code == "oauth_state_mismatch"
    assert fake.token_requests == [] and get_secret("gmail", ACCOUNT) is None


async def test_oauth_access_denied_is_reported(fake: FakeGmail, keyring_file: Path) -> None:
    flow = await start_google_flow(client_config(fake), None, api_base=fake.url)
    state = parse_qs(urlsplit(flow.url).query)["state"][0]
    status, page = await browser(flow.redirect_uri, state=state, error="access_denied")
    assert status == 400 and "not granted" in page
    with pytest.raises(PermanentError) as err:
        await flow.wait(5)
    assert err.value.code == "oauth_denied" and "not granted" in err.value.message


async def test_oauth_cancel_and_timeout(fake: FakeGmail, keyring_file: Path) -> None:
    flow = await start_google_flow(client_config(fake), None, api_base=fake.url)
    await flow.cancel()
    with pytest.raises(PermanentError) as err:
        await flow.wait(5)
    assert err.value.code == "oauth_cancelled"
    with pytest.raises(aiohttp.ClientConnectionError):
        await browser(flow.redirect_uri, state="x", code="y")  # the listener is gone
    flow = await start_google_flow(client_config(fake), None, api_base=fake.url)
    with pytest.raises(PermanentError) as err:
        await flow.wait(0.05)
    assert err.value.code == "oauth_timeout"
