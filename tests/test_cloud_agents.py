"""Cloud agents through the real daemon: connect Gmail over the WebSocket, run, reconnect.

The daemon process talks to a fake Gmail + token endpoint on loopback with the real
google-auth code; its keyring is keyrings.alt's file backend in tmp_path (a headless box
has no Secret Service), and a run with the fail backend shows the product's clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from sidecar.client import DaemonProcess, SidecarClient
from tests.fakes.gmail_server import FakeGmail
from tests.fakes.graph_server import FakeGraph

ACCOUNT = "me@example.com"


@pytest.fixture
async def gmail() -> AsyncIterator[FakeGmail]:
    server = FakeGmail(email=ACCOUNT, page_size=2)
    await server.start()
    yield server
    await server.close()


def daemon_env(tmp_path: Path, fake: FakeGmail, backend: str) -> dict[str, str]:
    return {"PYTHON_KEYRING_BACKEND": backend, "XDG_DATA_HOME": str(tmp_path / "xdg"),
            "OAUTHLIB_INSECURE_TRANSPORT": "1", "SIDECAR_GMAIL_API_BASE": fake.url}


@pytest.fixture
async def c(data_dir: Path, token: str, tmp_path: Path, gmail: FakeGmail, model_dir: Path,
            default_model: Path) -> AsyncIterator[SidecarClient]:
    d = await DaemonProcess.start(
        data_dir, token=token, extra_args=["--model-dir", str(model_dir)],
        env=daemon_env(tmp_path, gmail, "keyrings.alt.file.PlaintextKeyring"))
    client = await d.connect()
    await client.hello()
    try:
        yield client
    finally:
        await client.close()
        await d.stop()


async def connect_gmail(c: SidecarClient, fake: FakeGmail) -> dict[str, Any]:
    reply = await c.request({"type": "oauth_start", "provider": "gmail", "client": {
        "client_config": {"installed": {
            "client_id": fake.client_id, "client_secret": fake.client_secret,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": f"{fake.url}/token"}}}, "account_hint": ACCOUNT})
    assert reply["type"] == "oauth_start_result", reply
    query = parse_qs(urlsplit(reply["url"]).query)
    fake.expect_code("code-1", query["code_challenge"][0])
    # the user's browser follows Google's redirect to the sidecar's loopback listener
    async with aiohttp.ClientSession() as s, s.get(query["redirect_uri"][0], params={
            "state": query["state"][0], "code": "code-1", "scope": query["scope"][0]}) as resp:
        assert resp.status == 200
    status = await c.next_push("oauth_status", timeout=20)
    assert status["flow_id"] == reply["flow_id"]
    return status


async def finish(c: SidecarClient, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    calls = []
    while True:
        frame = await c.next_push(None, timeout=120)
        if frame["type"] == "tool_call":
            calls.append(frame)
            await c.ack(frame, result={"id": frame["id"]})
        elif frame["type"] == "run_finished" and frame["run"]["id"] == run_id:
            return frame["run"], calls


async def test_connect_run_incrementally_and_reauth(c: SidecarClient, gmail: FakeGmail,
                                                     data_dir: Path) -> None:
    status = await connect_gmail(c, gmail)
    assert status["status"] == "connected" and status["account"] == ACCOUNT

    now = datetime.now(UTC)
    gmail.add_message("m1", subject="Menu photos", when=now - timedelta(days=1),
                      sender="dana@bakery.example",
                      text="Hi Priya,\nCould you please send the menu photos before Friday?\n"
                           "Thanks, Dana")
    gmail.add_message("old", subject="Ancient", when=now - timedelta(days=30),
                      text="Please renew the domain.")
    agent = (await c.request({"type": "agent_upsert", "agent": {
        "kind": "cloud", "provider": "gmail", "account": ACCOUNT, "name": "Inbox",
        "data_types": ["tasks"], "schedule_cron": "0 3 * * *"}}))["agent"]

    started = await c.request({"type": "run_agent", "agent_id": agent["id"]})
    run, calls = await finish(c, started["run_id"])
    assert run["status"] == "success" and run["items_processed"] == 1, run
    titles = [f["data"]["title"].lower() for f in calls]
    assert any("menu photos" in t for t in titles), titles
    assert not any("renew the domain" in t for t in titles)  # older than 7 days
    assert calls[0]["data"]["isAiSuggested"] == 1

    gmail.add_message("m2", subject="Invoice", when=datetime.now(UTC),
                      text="Please send me the invoice for November.")
    started = await c.request({"type": "run_agent", "agent_id": agent["id"]})
    run, calls = await finish(c, started["run_id"])
    assert run["items_processed"] == 1, run  # only the new message
    assert ["send me the invoice" in f["data"]["title"].lower() for f in calls] == [True]

    gmail.revoke()
    started = await c.request({"type": "run_agent", "agent_id": agent["id"]})
    reauth = await c.next_push("agent_needs_reauth", timeout=60)
    assert reauth["agent_id"] == agent["id"] and "reconnect" in reauth["message"].lower()
    run, _ = await finish(c, started["run_id"])
    assert run["status"] == "error"
    listed = await c.request({"type": "agent_list", "kind": "cloud"})
    assert listed["agents"][0]["state"] == "needs_reauth"

    assert (await connect_gmail(c, gmail))["status"] == "connected"
    listed = await c.request({"type": "agent_list", "kind": "cloud"})
    assert listed["agents"][0]["state"] == "ok"

    # the run after reconnecting uses the new grant: it succeeds and brings the mail that
    # arrived in the meantime
    assert gmail.refresh_tokens, "precondition: the reconnect was issued a new grant"
    gmail.add_message("m3", subject="Spring party", when=datetime.now(UTC),
                      text="Could you please book the venue for the spring party?")
    started = await c.request({"type": "run_agent", "agent_id": agent["id"]})
    run, calls = await finish(c, started["run_id"])
    assert run["status"] == "success" and run["errors"] == [], run
    assert run["items_processed"] == 1, run
    assert ["book the venue for the spring party" in f["data"]["title"].lower()
            for f in calls] == [True], calls
    listed = await c.request({"type": "agent_list", "kind": "cloud"})
    assert listed["agents"][0]["state"] == "ok"

    # then look for any token or the client secret in the database, its WAL and the logs
    secrets_now = [*gmail.access_tokens, *gmail.refresh_tokens, gmail.client_secret]
    assert len(secrets_now) >= 3
    files = [p for p in data_dir.rglob("*") if p.is_file() and p.name != "token"]
    assert any(p.name.startswith("sidecar.sqlite3") for p in files)
    for path in files:
        blob = path.read_bytes()
        for secret in secrets_now:
            assert secret.encode() not in blob, f"a secret was written to {path.name}"


async def test_denied_sign_in_is_reported(c: SidecarClient, gmail: FakeGmail) -> None:
    reply = await c.request({"type": "oauth_start", "provider": "gmail", "client": {
        "client_config": {"installed": {
            "client_id": "x", "client_secret": "y", "auth_uri": "https://a.example/auth",
            "token_uri": f"{gmail.url}/token"}}}})
    query = parse_qs(urlsplit(reply["url"]).query)
    async with aiohttp.ClientSession() as s, s.get(query["redirect_uri"][0], params={
            "state": query["state"][0], "error": "access_denied"}):
        pass
    status = await c.next_push("oauth_status", timeout=20)
    assert status["status"] == "failed" and "not granted" in status["message"]


async def test_without_a_keyring_secrets_fail_clearly(data_dir: Path, token: str,
                                                      tmp_path: Path, gmail: FakeGmail) -> None:
    d = await DaemonProcess.start(data_dir, token=token,
                                  env=daemon_env(tmp_path, gmail, "keyring.backends.fail.Keyring"))
    try:
        c = await d.connect()
        await c.hello()
        reply = await c.request({"type": "secret_set", "kind": "remote_api_key",
                                 "account": "https://api.example/v1", "value": "sk-12345678"})
        assert reply["type"] == "error" and reply["code"] == "no_keyring", reply
        assert "keyring" in reply["message"] and "sk-12345678" not in reply["message"]
        connect = await c.request({"type": "oauth_start", "provider": "gmail", "client": {
            "client_config": {"installed": {"client_id": "x", "client_secret": "y",
                                            "auth_uri": "https://a.example/auth",
                                            "token_uri": f"{gmail.url}/token"}}}})
        assert connect["type"] == "error" and connect["code"] == "no_keyring", connect
        assert "Secret Service" in connect["message"]
        await c.close()
    finally:
        await d.stop()
        await asyncio.sleep(0)
    assert not any("sk-12345678" in line for line in d.stderr_lines)


@contextlib.asynccontextmanager
async def graph_daemon(data_dir: Path, token: str, tmp_path: Path, model_dir: Path
                       ) -> AsyncIterator[tuple[FakeGraph, SidecarClient]]:
    """A fake Graph + identity provider, and a daemon pointed at it with a file keyring."""
    graph = await FakeGraph(tmp_path).start()
    env = {"PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
           "XDG_DATA_HOME": str(tmp_path / "xdg"), "SIDECAR_GRAPH_API_BASE": graph.api_base}
    d = await DaemonProcess.start(data_dir, token=token, env=env,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        yield graph, c
        await c.close()
    finally:
        await d.stop()
        await graph.stop()


async def connect_microsoft(c: SidecarClient, graph: FakeGraph, provider: str) -> str:
    """Device-code sign-in over the WebSocket; returns the connected account."""
    reply = await c.request({"type": "oauth_start", "provider": provider,
                             "flow": "device_code", "client": {
                                 "client_id": graph.client_id, "authority": graph.authority,
                                 "verify": str(graph.ca_file), "instance_discovery": False}})
    assert reply["type"] == "oauth_start_result" and reply["user_code"], reply
    graph.approve_device(reply["user_code"])  # the user types the code on another device
    status = await c.next_push("oauth_status", timeout=30)
    assert status["status"] == "connected", status
    return str(status["account"])


async def test_outlook_device_code_connect_and_run(data_dir: Path, token: str, tmp_path: Path,
                                                   model_dir: Path) -> None:
    """Microsoft through the daemon: device-code sign-in, msal refresh, Graph paging, a run."""
    async with graph_daemon(data_dir, token, tmp_path, model_dir) as (graph, c):
        account = await connect_microsoft(c, graph, "outlook")
        assert account == graph.user.username

        now = datetime.now(UTC)
        for i in range(3):  # more than one page (page size 2)
            graph.add_message(f"m{i}", (now - timedelta(days=1, minutes=i)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"), subject=f"Report {i}",
                body=f"<p>Hi Ada,</p><p>Please send the March report {i} by Friday.</p>")
        graph.add_message("old", (now - timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                          subject="Old", body="<p>Please renew the domain.</p>")
        agent = (await c.request({"type": "agent_upsert", "agent": {
            "kind": "cloud", "provider": "outlook", "account": account, "name": "Mail",
            "data_types": ["tasks"], "schedule_cron": "0 3 * * *"}}))["agent"]
        started = await c.request({"type": "run_agent", "agent_id": agent["id"]})
        run, calls = await finish(c, started["run_id"])
        assert run["status"] == "success" and run["items_processed"] == 3, run
        titles = sorted(f["data"]["title"] for f in calls)
        assert titles == [f"Please send the March report {i} by Friday" for i in range(3)]
        again = await c.request({"type": "run_agent", "agent_id": agent["id"]})
        run2, calls2 = await finish(c, again["run_id"])
        assert run2["items_processed"] == 0 and calls2 == []


async def test_teams_chats_become_one_document_per_chat(data_dir: Path, token: str,
                                                       tmp_path: Path, model_dir: Path) -> None:
    async with graph_daemon(data_dir, token, tmp_path, model_dir) as (graph, c):
        account = await connect_microsoft(c, graph, "teams")
        stamp = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        graph.chats = [{"id": "19:c1@thread.v2", "topic": "Launch plan", "chatType": "group",
                        "members": [{"displayName": "Ada"}, {"displayName": "Bob"}]}]
        graph.add_chat_message("19:c1@thread.v2", "1001", stamp, "Ada",
                               "<p>Bob, can you <b>draft</b> the launch post by Friday?</p>")
        graph.add_chat_message("19:c1@thread.v2", "1002", stamp, "Bob",
                               "<div>Sure, I'll send it tomorrow</div>")
        agent = (await c.request({"type": "agent_upsert", "agent": {
            "kind": "cloud", "provider": "teams", "account": account,
            "name": "Chats", "data_types": ["tasks"], "schedule_cron": "0 3 * * *"}}))["agent"]
        started = await c.request({"type": "run_agent", "agent_id": agent["id"]})
        run, calls = await finish(c, started["run_id"])
        assert run["status"] == "success" and run["items_processed"] == 1, run
        titles = [f["data"]["title"].lower() for f in calls]
        assert any("draft the launch post" in t for t in titles), titles
