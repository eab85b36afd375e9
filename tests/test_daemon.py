"""The real daemon process, spawned as Electron spawns it, spoken to over a real WebSocket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from sidecar.client import DaemonProcess, SidecarClient

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals in these tests")


async def test_ready_line_and_nothing_else_on_stdout(data_dir: Path, token: str) -> None:
    d = await DaemonProcess.start(data_dir, token=token)
    assert d.ready.port > 0 and d.ready.pid == d.proc.pid
    assert d.ready.protocol == 1 and d.ready.version
    assert d.ready.token_file is None  # Electron passed the token
    async with aiohttp.ClientSession() as s, s.get(d.url("/health")) as r:
        health = await r.json()
    assert health["status"] == "ok" and health["protocol"] == 1
    assert token not in json.dumps(health)
    c = await d.connect()
    await c.hello()
    await c.close()
    assert await d.stop() == 0
    assert await d.read_stdout_rest() == b""


async def test_hello_reports_version_protocol_capabilities(client: SidecarClient) -> None:
    reply = await client.hello()
    assert reply["type"] == "hello_result"
    assert reply["protocol"] == 1
    assert "insert" in reply["capabilities"]
    assert isinstance(reply["models"], list)


async def test_agent_crud_round_trip(client: SidecarClient, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    await client.hello()
    created = await client.request({"type": "agent_upsert", "agent": {
        "kind": "local", "name": "Docs", "directories": [str(folder)], "extensions": ["md", ".TXT"],
        "data_types": ["tasks", "notes"], "schedule_cron": "*/15 * * * *"}})
    assert created["type"] == "agent_upsert_result" and created["created"] is True
    agent = created["agent"]
    assert agent["extensions"] == [".md", ".txt"]
    assert agent["directories"] == [str(folder.resolve())]

    updated = await client.request({"type": "agent_upsert", "agent": {
        "id": agent["id"], "name": "Docs renamed", "enabled": False}})
    assert updated["created"] is False
    assert updated["agent"]["name"] == "Docs renamed" and updated["agent"]["enabled"] is False
    assert updated["agent"]["data_types"] == ["tasks", "notes"]  # merged, not reset

    cloud = await client.request({"type": "agent_upsert", "agent": {
        "kind": "cloud", "provider": "gmail", "name": "Inbox",
        "filter_config": {"labels": ["clients"]}}})
    assert cloud["type"] == "agent_upsert_result"

    listed = await client.request({"type": "agent_list"})
    assert {a["id"] for a in listed["agents"]} == {agent["id"], cloud["agent"]["id"]}
    only_cloud = await client.request({"type": "agent_list", "kind": "cloud"})
    assert [a["id"] for a in only_cloud["agents"]] == [cloud["agent"]["id"]]

    status = await client.request({"type": "status"})
    by_id = {a["id"]: a for a in status["agents"]}
    assert by_id[agent["id"]]["next_run_at"] is None  # disabled
    assert by_id[cloud["agent"]["id"]]["next_run_at"] is not None

    deleted = await client.request({"type": "agent_delete", "agent_id": agent["id"]})
    assert deleted == {"type": "agent_delete_result", "request_id": deleted["request_id"],
                       "agent_id": agent["id"], "deleted": True}
    again = await client.request({"type": "agent_delete", "agent_id": agent["id"]})
    assert again["type"] == "error" and again["code"] == "not_found"
    runs = await client.request({"type": "run_list", "limit": 10})
    assert runs["type"] == "run_list_result" and runs["runs"] == []


@pytest.mark.parametrize(
    ("agent", "field", "words"),
    [
        ({"schedule_cron": "61 * * * *"}, "agent.schedule_cron", "invalid cron"),
        ({"directories": ["/definitely/not/here"]}, "agent.directories", "does not exist"),
        ({"directories": ["relative/path"]}, "agent.directories", "not an absolute"),
        ({"data_types": ["tasks", "users"]}, "agent.data_types", "'users'"),
        ({"extensions": ["*.md"]}, "agent.extensions", "not a file extension"),
        ({"kind": "robot"}, "agent.kind", "must be one of"),
        ({"api_key": "sk-123"}, "agent.api_key", "unknown field"),
        ({"name": ""}, "agent.name", "must not be empty"),
        ({"min_confidence": 2}, "agent.min_confidence", "between 0 and 1"),
        ({"kind": "cloud", "provider": "yahoo", "directories": None}, "agent.",
         "provider"),
    ],
)
async def test_agent_upsert_validation_names_the_field(
    client: SidecarClient, tmp_path: Path, agent: dict, field: str, words: str
) -> None:
    base = {"kind": "local", "name": "x", "directories": [str(tmp_path)]}
    raw = {**base, **agent}
    if raw.get("kind") == "cloud":
        raw.pop("directories")
    reply = await client.request({"type": "agent_upsert", "agent": raw})
    assert reply["type"] == "error", reply
    assert reply["code"] == "invalid_field"
    assert reply["field"].startswith(field)
    assert words in reply["message"]
    # the connection is still usable
    assert (await client.request({"type": "agent_list"}))["type"] == "agent_list_result"


async def test_refuses_missing_wrong_token_and_foreign_origin(daemon: DaemonProcess) -> None:
    for token, origin, expected in [
        (None, None, 401), ("wrong-token-wrong-token", None, 401),
        (daemon.token, "https://evil.example", 403), (daemon.token, "http://192.168.1.5:80", 403),
        (daemon.token, "null", 403),
    ]:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await SidecarClient.connect(daemon.url(), token, origin=origin)
        assert info.value.status == expected, (token, origin)
    for origin in (None, "file://", "app://sidecar", "http://localhost:5173",
                   "http://127.0.0.1:3000", "https://[::1]:8443"):
        c = await SidecarClient.connect(daemon.url(), daemon.token, origin=origin)
        assert (await c.hello())["type"] == "hello_result", origin
        await c.close()
    c = await SidecarClient.connect(daemon.url(), daemon.token, use_query=True)
    assert (await c.hello())["type"] == "hello_result"
    await c.close()
    assert not any(daemon.token in line for line in daemon.stderr_lines)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "not_an_object"),
        ('"hello"', "not_an_object"),
        ('{"request_id": "x"}', "missing_type"),
        ('{"type": "teleport", "request_id": "x"}', "unknown_type"),
        ('{"type": "agent_delete", "request_id": "x"}', "missing_field"),
        ('{"type": "agent_delete", "request_id": "x", "agent_id": 7}', "invalid_field"),
        ('{"type": "run_list", "request_id": "x", "limit": "ten"}', "invalid_field"),
        ('{"type": "run_list", "request_id": "x", "limit": true}', "invalid_field"),
        ('{"type": "agent_upsert", "request_id": "x", "agent": []}', "invalid_field"),
        ('{"type": "hello"}', "missing_field"),
        ('{"type": "hello", "request_id": "x", "protocol": 99}', "unsupported_protocol"),
        ('{"type": "tool_result", "id": "nope", "result": {}}', "unknown_tool_call"),
        ('{"type": "tool_result", "result": {}}', "missing_field"),
        ('{"a": NaN}', "invalid_json"),
        ("[" * 50_000 + "]" * 50_000, "invalid_json"),
    ],
)
async def test_malformed_frames_get_error_frames_and_connection_lives(
    client: SidecarClient, raw: str, code: str
) -> None:
    await client.send_raw(raw)
    err = await client.next_error()
    assert err["type"] == "error" and err["code"] == code, err
    assert err["message"]
    assert (await client.hello())["type"] == "hello_result"


async def test_request_id_is_echoed_on_errors(client: SidecarClient) -> None:
    reply = await client.request({"type": "agent_delete", "agent_id": 5, "request_id": "abc"})
    assert reply["type"] == "error" and reply["request_id"] == "abc"


async def test_oversize_and_binary_frames(client: SidecarClient) -> None:
    big = json.dumps({"type": "hello", "request_id": "x", "client": "a" * (1024 * 1024 + 10)})
    await client.send_raw(big)
    err = await client.next_error()
    assert err["code"] == "frame_too_large" and "1048576" in err["message"]
    await client.send_raw(b"\x00\x01binary")
    assert (await client.next_error())["code"] == "binary_frame"
    assert (await client.hello())["type"] == "hello_result"


async def test_sigterm_closes_websockets_with_1001_and_exits_0(daemon: DaemonProcess) -> None:
    c = await daemon.connect()
    await c.hello()
    daemon.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(c.closed.wait(), 10)
    assert c.ws.close_code == 1001
    assert await daemon.stop() == 0
    await c.close()
    assert any("stopped cleanly" in line for line in daemon.stderr_lines)


async def test_exits_when_parent_dies(data_dir: Path, token: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        d = await DaemonProcess.start(data_dir, token=token,
                                      extra_args=["--parent-pid", str(parent.pid)])
        c = await d.connect()
        await c.hello()
        parent.kill()
        parent.wait()
        t0 = time.monotonic()
        rc = await asyncio.wait_for(d.proc.wait(), 10)
        gone_after = time.monotonic() - t0
        await c.close()
        assert rc == 0
        assert gone_after < 5, f"took {gone_after:.1f}s to notice the parent died"
        await d.stop()
        assert any("parent process" in line for line in d.stderr_lines)
    finally:
        parent.kill()


async def test_exits_on_stdin_eof(data_dir: Path, token: str) -> None:
    d = await DaemonProcess.start(data_dir, token=token, extra_args=["--watch-stdin"],
                                  stdin_pipe=True)
    assert d.proc.stdin is not None
    d.proc.stdin.close()
    assert await asyncio.wait_for(d.proc.wait(), 10) == 0
    await d.stop()


async def test_parent_pid_that_does_not_exist_is_refused(data_dir: Path, token: str) -> None:
    with pytest.raises(RuntimeError, match="does not exist"):
        await DaemonProcess.start(data_dir, token=token, extra_args=["--parent-pid", "999999"])


async def test_second_instance_on_same_data_dir_is_refused(
    daemon: DaemonProcess, data_dir: Path, token: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "serve", "--port", "0", "--data-dir", str(data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SIDECAR_TOKEN": token})
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 3
    line = json.loads(out)  # one line, in place of the ready line
    assert (line["event"], line["code"], line["error"]) == ("fatal", 3, "already_running")
    assert b"already using the data directory" in err and str(daemon.ready.pid).encode() in err
    # the first one is unharmed
    c = await daemon.connect()
    assert (await c.hello())["type"] == "hello_result"
    await c.close()


async def test_generated_token_goes_to_a_private_file(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SIDECAR_TOKEN"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "serve", "--port", "0", "--data-dir", str(data_dir),
        "--log-dir", str(data_dir / "logs"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    line = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    token_file = Path(line["token_file"])
    token = token_file.read_text()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token not in json.dumps(line)
    c = await SidecarClient.connect(f"http://127.0.0.1:{line['port']}/ws", token)
    assert (await c.hello())["type"] == "hello_result"
    await c.close()
    proc.terminate()
    out, err = await proc.communicate()
    assert out == b"" and token.encode() not in err
    assert token not in (data_dir / "logs" / "sidecar.log").read_text()
    assert token.encode() not in (data_dir / "sidecar.sqlite3").read_bytes()


@pytest.mark.parametrize("damage", ["garbage", "newer"])
async def test_unusable_database_gives_a_clear_error(data_dir: Path, token: str,
                                                     damage: str) -> None:
    db = data_dir / "sidecar.sqlite3"
    if damage == "garbage":
        db.write_bytes(b"this is not a database at all" * 100)
    else:
        con = sqlite3.connect(db)
        con.execute("PRAGMA user_version = 999")
        con.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "serve", "--port", "0", "--data-dir", str(data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SIDECAR_TOKEN": token})
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    text = err.decode()
    assert proc.returncode == 4, text
    assert out.count(b"\n") == 1 and json.loads(out)["event"] == "fatal"  # in place of ready
    assert json.loads(out)["code"] == 4
    assert "Traceback" not in text
    assert str(db) in text
    assert ("newer" in text) if damage == "newer" else ("not a valid SQLite" in text)
