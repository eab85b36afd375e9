"""Outlook/Teams sources and msal sign-in against a fake Graph + Entra ID (real msal, SQLite)."""

from __future__ import annotations

import html
import json
import re
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import keyring
import pytest
from keyring.backends import fail

from sidecar.domain import Agent
from sidecar.errors import NeedsReauth, PermanentError
from sidecar.secrets import NoKeyring, get_secret
from sidecar.sources.base import Skip, Source, SourceDocument
from sidecar.sources.graph import signin
from sidecar.sources.graph.source import OutlookSource, TeamsSource
from sidecar.store import Store
from tests.fakes.graph_server import FakeGraph

ACCOUNT = "ada@contoso.test"
SCOPES = ["https://graph.microsoft.com/Mail.Read"]
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
KEY = "ek-1"


#: every test here talks to a plaintext keyring file in tmp_path (conftest.keyring_file)
pytestmark = pytest.mark.usefixtures("keyring_file")


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeGraph]:
    server = await FakeGraph(tmp_path).start()
    yield server
    await server.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store(tmp_path / "sidecar.db").open()
    yield s
    await s.close()


def config_for(fake: FakeGraph) -> signin.MsalConfig:
    return signin.MsalConfig(client_id=fake.client_id, authority=fake.authority,
                                verify=str(fake.ca_file), instance_discovery=False)


def options(fake: FakeGraph) -> dict[str, Any]:
    return {"verify": str(fake.ca_file), "instance_discovery": False}


@pytest.fixture
async def connected(fake: FakeGraph) -> signin.MsalConfig:
    """Sign in once through the device-code flow: the keyring then holds the msal cache."""
    flow = await signin.start_device_code(fake.client_id, fake.authority, SCOPES,
                                             **options(fake))
    fake.approve_device(flow.user_code)
    assert await flow.wait(timeout=10) == ACCOUNT
    return config_for(fake)


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def agent(provider: str = "outlook", **filter_config: Any) -> Agent:
    return Agent(id=f"a_{provider}", kind="cloud", name=provider, provider=provider,
                 account=ACCOUNT, filter_config=filter_config)


def make(cls: type[OutlookSource] | type[TeamsSource], fake: FakeGraph, store: Store,
         cfg: signin.MsalConfig, sleeps: Sleeps | None = None,
         **filter_config: Any) -> Any:
    return cls(agent(cls.provider, **filter_config), store, run_id="r1",
               token_provider=signin.token_provider(ACCOUNT, SCOPES, config=cfg),
               api_base=fake.api_base, now=lambda: NOW,
               sleep=Sleeps() if sleeps is None else sleeps)


async def run(source: Source, store: Store, *, done: bool = True) -> list[SourceDocument]:
    """What the runner does: list everything, read each, mark done inside the outbox txn."""
    work = [w async for w in source.pending(KEY)]
    docs: list[SourceDocument] = []
    for item in work:
        doc = await source.read(item)
        if isinstance(doc, Skip):
            await source.skipped(doc)
            continue
        docs.append(doc)
        if done:
            async with store.db.transaction() as conn:
                await store.record_progress(source.progress(doc, KEY, {"items": 0}), conn)
    await source.finish()
    return docs


def mailbox(fake: FakeGraph) -> None:
    fake.add_message("m-old", "2026-11-10T09:00:00Z", subject="Too old", body="<p>old</p>")
    for i in range(5):
        fake.add_message(f"m{i}", f"2026-11-{15 + i}T10:00:00Z", subject=f"Subject {i}",
                         body=f"<p>Please send report {i}</p>")


# -- Outlook ------------------------------------------------------------------------------


async def test_outlook_first_run_looks_back_seven_days_and_pages(
        fake: FakeGraph, store: Store, connected: signin.MsalConfig) -> None:
    mailbox(fake)
    docs = await run(make(OutlookSource, fake, store, connected), store)
    assert [d.item.key for d in docs] == ["m0", "m1", "m2", "m3", "m4"]
    listing = [r for r in fake.requests if r.startswith("/me/messages?")]
    assert len(listing) == 3  # page size 2: the nextLink was followed to the end
    assert "2026-11-14T12:00:00Z" in unquote(listing[0])
    assert docs[0].date == datetime(2026, 11, 15, 10, tzinfo=UTC)
    assert (await store.cursors.get("a_outlook")) == {"since": "2026-11-19T10:00:00Z"}


async def test_outlook_second_run_yields_only_new_mail(
        fake: FakeGraph, store: Store, connected: signin.MsalConfig) -> None:
    mailbox(fake)
    await run(make(OutlookSource, fake, store, connected), store)
    assert await run(make(OutlookSource, fake, store, connected), store) == []
    # indexed late: received before the cursor but inside the overlap, and a normal new one
    fake.add_message("late", "2026-11-19T09:55:00Z", subject="Late", body="late")
    fake.add_message("new", "2026-11-21T08:00:00Z", subject="New", body="new")
    docs = await run(make(OutlookSource, fake, store, connected), store)
    assert [d.item.key for d in docs] == ["late", "new"]
    assert await run(make(OutlookSource, fake, store, connected), store) == []


async def test_outlook_crash_between_read_and_done_loses_nothing(
        fake: FakeGraph, store: Store, connected: signin.MsalConfig) -> None:
    mailbox(fake)
    source = make(OutlookSource, fake, store, connected)
    work = [w async for w in source.pending(KEY)]
    first = await source.read(work[0])
    assert isinstance(first, SourceDocument)
    async with store.db.transaction() as conn:
        await store.record_progress(source.progress(first, KEY, {}), conn)
    await source.read(work[1])  # … and the process dies before done()
    assert (await store.cursors.get("a_outlook")) == {"since": "2026-11-15T10:00:00Z"}
    docs = await run(make(OutlookSource, fake, store, connected), store)
    assert [d.item.key for d in docs] == ["m1", "m2", "m3", "m4"]


async def test_outlook_honours_retry_after_and_retries_500(
        fake: FakeGraph, store: Store, connected: signin.MsalConfig) -> None:
    mailbox(fake)
    fake.fail("/me/messages", 429, retry_after=1, code="TooManyRequests")
    fake.fail("/me/messages", 500, code="InternalServerError")
    sleeps = Sleeps()
    docs = await run(make(OutlookSource, fake, store, connected, sleeps), store)
    assert len(docs) == 5
    assert sleeps[0] == 1.0 and len(sleeps) == 2


async def test_outlook_401_gets_a_fresh_token_once(
        fake: FakeGraph, store: Store, connected: signin.MsalConfig) -> None:
    mailbox(fake)
    source = make(OutlookSource, fake, store, connected)
    await source.client.tokens()  # a cached access token …
    fake.expire_access_tokens()  # … that Graph no longer accepts
    grants = len(fake.grants)
    docs = await run(source, store)
    assert len(docs) == 5
    assert fake.grants[grants:] == ["refresh_token"]


async def test_outlook_403_repeated_401_and_revoked_grant(
        fake: FakeGraph, store: Store, connected: signin.MsalConfig) -> None:
    mailbox(fake)
    fake.fail("/me/messages", 403, code="ErrorAccessDenied")
    with pytest.raises(PermanentError, match="ErrorAccessDenied"):
        await run(make(OutlookSource, fake, store, connected), store)
    fake.fail("/me/messages", 401, times=2, code="InvalidAuthenticationToken")
    with pytest.raises(NeedsReauth, match="a fresh token was refused too"):
        await run(make(OutlookSource, fake, store, connected), store)
    fake.revoke()
    with pytest.raises(NeedsReauth, match="invalid_grant"):
        await run(make(OutlookSource, fake, store, connected), store)
    assert await store.cursors.get("a_outlook") is None


async def test_outlook_html_body_and_attachments(
        fake: FakeGraph, store: Store, connected: signin.MsalConfig) -> None:
    fake.add_message("h1", "2026-11-20T10:00:00Z", subject="Budget",
                     body="<html><style>p{}</style><p>Hello <b>team</b>,</p>"
                          "<p>send&nbsp;the budget</p><script>alert(1)</script></html>")
    fake.add_attachment("h1", "notes.txt", b"Call the supplier on Monday")
    fake.add_attachment("h1", "photo.png", b"\x89PNG\r\n\x1a\n....")
    fake.add_message("t1", "2026-11-20T11:00:00Z", subject="Plain", content_type="text",
                     body="plain <not html>")
    docs = await run(make(OutlookSource, fake, store, connected), store)
    html_doc, text_doc = docs
    assert "Hello team," in html_doc.text and "send the budget" in html_doc.text
    assert "<p>" not in html_doc.text and "alert" not in html_doc.text
    assert "Call the supplier on Monday" in html_doc.text
    assert any("photo.png" in n for n in html_doc.meta["attachment_notes"])
    assert "Subject: Budget" in html_doc.text and "From: Bob <bob@contoso.test>" in html_doc.text
    assert "plain <not html>" in text_doc.text


async def test_outlook_unreadable_message_is_skipped_once(
        fake: FakeGraph, store: Store, connected: signin.MsalConfig) -> None:
    mailbox(fake)
    fake.add_attachment("m2", "a.txt", b"x")
    fake.fail("/me/messages/m2/attachments", 404, code="ErrorItemNotFound")
    docs = await run(make(OutlookSource, fake, store, connected), store)
    assert [d.item.key for d in docs] == ["m0", "m1", "m3", "m4"]
    assert (await store.cursors.get("a_outlook")) == {"since": "2026-11-19T10:00:00Z"}
    assert await run(make(OutlookSource, fake, store, connected), store) == []


async def test_outlook_filters_folder_sender_subject_and_search(
        fake: FakeGraph, store: Store, connected: signin.MsalConfig) -> None:
    fake.add_message("a", "2026-11-20T10:00:00Z", subject="Invoice 1", sender="x@a.test")
    fake.add_message("b", "2026-11-20T11:00:00Z", subject="Invoice 2", sender="y@a.test")
    fake.add_message("c", "2026-11-20T12:00:00Z", subject="Invoice 3", sender="x@a.test",
                     folder="archive")
    fake.add_message("d", "2026-11-01T12:00:00Z", subject="Invoice old", sender="x@a.test")
    docs = await run(make(OutlookSource, fake, store, connected, folder="inbox",
                          **{"from": "X@a.test", "subject": "invoice"}), store)
    assert [d.item.key for d in docs] == ["a"]
    await store.cursors.delete("a_outlook")
    docs = await run(make(OutlookSource, fake, store, connected, search="invoice"), store)
    assert [d.item.key for d in docs] == ["b", "c"]  # "a" is done; "d" is too old
    searched = [r for r in fake.requests if "%24search" in r or "$search" in r]
    assert searched and all("filter" not in r and "orderby" not in r for r in searched)


# -- Teams --------------------------------------------------------------------------------


def teams(fake: FakeGraph) -> None:
    fake.chats = [
        {"id": "19:c1@thread.v2", "topic": "Launch plan", "chatType": "group",
         "members": [{"displayName": "Ada"}, {"displayName": "Bob"}]},
        {"id": "19:c2@unq.gbl.spaces", "topic": None, "chatType": "oneOnOne",
         "members": [{"displayName": "Ada"}, {"displayName": "Cy"}]},
        {"id": "19:c3@thread.v2", "topic": "Quiet", "chatType": "group", "members": []},
    ]
    fake.add_chat_message("19:c1@thread.v2", "1001", "2026-11-20T09:00:00Z", "Ada",
                          "<p>Can you <b>draft</b> the launch post?</p>")
    fake.add_chat_message("19:c1@thread.v2", "1002", "2026-11-20T09:05:00Z", "Bob",
                          "<div>Yes, by Friday</div>")
    fake.add_chat_message("19:c1@thread.v2", "1000", "2026-11-01T09:00:00Z", "Bob", "ancient")
    fake.add_chat_message("19:c2@unq.gbl.spaces", "2001", "2026-11-20T10:00:00Z", "Cy",
                          "Book the room")
    fake.add_chat_message("19:c3@thread.v2", "3001", "2026-11-02T10:00:00Z", "Cy", "old")


async def test_teams_groups_messages_per_chat_and_is_incremental(
        fake: FakeGraph, store: Store, connected: signin.MsalConfig) -> None:
    teams(fake)
    docs = await run(make(TeamsSource, fake, store, connected), store)
    assert [d.item.key for d in docs] == ["chat:19:c1@thread.v2:1002",
                                          "chat:19:c2@unq.gbl.spaces:2001"]
    assert docs[0].text == ("Launch plan\n[2026-11-20 09:00] Ada: Can you draft the launch "
                            "post?\n[2026-11-20 09:05] Bob: Yes, by Friday")
    assert docs[1].text.startswith("Chat with Ada, Cy\n[2026-11-20 10:00] Cy: Book the room")
    assert any("%24skip" in r or "$skip" in r for r in fake.requests)  # paged (page size 2)
    assert await run(make(TeamsSource, fake, store, connected), store) == []
    fake.add_chat_message("19:c1@thread.v2", "1003", "2026-11-21T08:00:00Z", "Ada", "Thanks!")
    docs = await run(make(TeamsSource, fake, store, connected), store)
    assert [d.text for d in docs] == ["Launch plan\n[2026-11-21 08:00] Ada: Thanks!"]


async def test_teams_channels_and_crash_recovery(
        fake: FakeGraph, store: Store, connected: signin.MsalConfig) -> None:
    for i in range(3):
        fake.add_chat_message("t1/19:ch1@thread.tacv2", f"50{i}", f"2026-11-20T1{i}:00:00Z",
                              "Dee", f"item {i}", channel=True)
    fake.add_chat_message("t1/19:ch1@thread.tacv2", "499", "2026-11-01T10:00:00Z", "Dee",
                          "too old", channel=True)
    chan = [{"team": "t1", "channel": "19:ch1@thread.tacv2", "name": "General"}]
    source = make(TeamsSource, fake, store, connected, include_chats=False, channels=chan)
    assert [w.key async for w in source.pending(KEY)]  # listed, then the process dies
    docs = await run(make(TeamsSource, fake, store, connected, include_chats=False,
                          channels=chan), store)
    assert len(docs) == 1 and docs[0].text.count("] Dee: item") == 3
    assert "too old" not in docs[0].text
    assert docs[0].text.startswith("General\n")
    assert await run(make(TeamsSource, fake, store, connected, include_chats=False,
                          channels=chan), store) == []


# -- sign-in ------------------------------------------------------------------------------


async def browser(url: str, *, tamper_state: bool = False) -> tuple[int, str]:
    """Do what the user's browser does: authorize, then submit the form_post to the loopback."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=False) as resp:
            page = await resp.text()
        action = html.unescape(re.search(r'action="([^"]+)"', page).group(1))  # type: ignore[union-attr]
        fields = {k: html.unescape(v)
                  for k, v in re.findall(r'name="(\w+)" value="([^"]*)"', page)}
        if tamper_state:
            fields["state"] = "forged"
        async with session.post(action, data=fields) as resp:
            return resp.status, await resp.text()


async def test_auth_code_flow_end_to_end(fake: FakeGraph) -> None:
    flow = await signin.start_microsoft_flow(fake.client_id, fake.authority, SCOPES,
                                                **options(fake))
    assert flow.url.startswith(fake.authority) and "code_challenge=" in flow.url
    assert flow.redirect_uri.startswith("http://127.0.0.1:")
    assert (await browser(flow.url, tamper_state=True))[0] == 400  # ignored, still waiting
    status, page = await browser(flow.url)
    assert status == 200 and "close this window" in page
    assert await flow.wait(timeout=10) == ACCOUNT
    assert fake.grants == ["authorization_code"]
    assert json.loads(get_secret("msal-cache", ACCOUNT) or "{}")["RefreshToken"]
    token = await signin.access_token(ACCOUNT, SCOPES, config=config_for(fake))
    assert token in fake.access_tokens


async def test_auth_code_flow_denied(fake: FakeGraph) -> None:
    fake.deny_next = True
    flow = await signin.start_microsoft_flow(fake.client_id, fake.authority, SCOPES,
                                                **options(fake))
    await browser(flow.url)
    with pytest.raises(PermanentError, match="consent was denied") as err:
        await flow.wait(timeout=10)
    assert err.value.code == "access_denied"


async def test_refresh_token_rotation_is_persisted_every_time(
        fake: FakeGraph, connected: signin.MsalConfig) -> None:
    def refresh_token() -> str:
        cache = json.loads(get_secret("msal-cache", ACCOUNT) or "{}")
        (entry,) = cache["RefreshToken"].values()
        return str(entry["secret"])

    seen = [refresh_token()]
    for _ in range(2):
        await signin.access_token(ACCOUNT, SCOPES, config=connected, force_refresh=True)
        seen.append(refresh_token())
    assert len(set(seen)) == 3
    assert [fake.refresh_tokens[rt] for rt in seen] == [False, False, True]
    tls = ssl.create_default_context(cafile=str(fake.ca_file))
    async with aiohttp.ClientSession() as session, session.post(
            f"{fake.authority}/oauth2/v2.0/token", ssl=tls,
            data={"grant_type": "refresh_token", "client_id": fake.client_id,
                  "refresh_token": seen[0], "scope": SCOPES[0]}) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"


async def test_revoked_grant_needs_reauth(fake: FakeGraph,
                                          connected: signin.MsalConfig) -> None:
    fake.revoke()
    with pytest.raises(NeedsReauth, match="connect the account again"):
        await signin.access_token(ACCOUNT, SCOPES, config=connected, force_refresh=True)
    with pytest.raises(NeedsReauth, match="no Microsoft sign-in is stored"):
        await signin.access_token("nobody@contoso.test", SCOPES, config=connected)


async def test_no_keyring_backend_is_a_clear_error(fake: FakeGraph) -> None:
    keyring.set_keyring(fail.Keyring())
    with pytest.raises(NoKeyring, match="no OS keyring"):
        await signin.access_token(ACCOUNT, SCOPES, config=config_for(fake))
    flow = await signin.start_device_code(fake.client_id, fake.authority, SCOPES,
                                             **options(fake))
    fake.approve_device(flow.user_code)
    with pytest.raises(NoKeyring):
        await flow.wait(timeout=10)
