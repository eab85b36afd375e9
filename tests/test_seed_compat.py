"""The old server's ``device_hello`` through the real daemon: answered like ``hello``, and the
app that sent it takes inserts in the seed's tool_call / tool_result shapes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sidecar.client import DaemonProcess
from sidecar.store import Store
from sidecar.store.outbox import NewEntry


async def test_device_hello_opens_a_writer_session_with_the_seed_insert_shapes(
        data_dir: Path, token: str) -> None:
    async with Store(data_dir / "sidecar.sqlite3") as store:
        await store.outbox.enqueue([NewEntry(idempotency_key="a_old:k0", agent_id="a_old",
                                            run_id=None, table="notes",
                                            data={"title": "Kickoff notes"})])
    d = await DaemonProcess.start(data_dir, token=token)
    try:
        c = await d.connect()
        # exactly what the old Electron app sends: no request_id, no protocol, a device id
        await c.send_raw(json.dumps({"type": "device_hello", "device_id": "dev-7f3a"}))
        reply = await c.next_push("hello_result", timeout=10)
        assert reply["request_id"] == "device_hello" and reply["protocol"] == 1
        assert "insert" in reply["capabilities"]
        call = await c.next_push("tool_call", timeout=10)  # a writer, as hello's default
        assert {k: call[k] for k in ("type", "action", "table", "data")} == {
            "type": "tool_call", "action": "insert", "table": "notes",
            "data": {"title": "Kickoff notes", "isAiSuggested": 1, "isApproved": 0}}
        await c.send_raw(json.dumps({"type": "tool_result", "id": call["id"],
                                     "result": {"id": "n_1"}}))
        await asyncio.sleep(0.5)
        assert c.errors.empty()
        await c.close()
    finally:
        await d.stop()
    async with Store(data_dir / "sidecar.sqlite3") as store:
        assert await store.outbox.count("acked") == 1


async def test_device_hello_with_request_id_and_observer_role(daemon: DaemonProcess) -> None:
    c = await daemon.connect()
    try:
        reply = await c.request({"type": "device_hello", "device_id": "dev-1",
                                 "role": "observer"})
        assert reply["type"] == "hello_result" and reply["request_id"].startswith("q")
        status = await c.request({"type": "status"})
        assert status["type"] == "status_result"
        bad = await c.request({"type": "device_hello", "request_id": "x", "device_id": 5})
        assert bad["type"] == "error" and bad["code"] == "invalid_field"
        assert bad["field"] == "device_id"
        assert (await c.request({"type": "status"}))["type"] == "status_result"  # lives
    finally:
        await c.close()


async def test_an_observer_device_hello_gets_no_inserts(data_dir: Path, token: str) -> None:
    async with Store(data_dir / "sidecar.sqlite3") as store:
        await store.outbox.enqueue([NewEntry(idempotency_key="a_old:k1", agent_id="a_old",
                                            run_id=None, table="tasks", data={"title": "T"})])
    d = await DaemonProcess.start(data_dir, token=token)
    try:
        c = await d.connect()
        await c.request({"type": "device_hello", "device_id": "tray", "role": "observer"})
        await asyncio.sleep(0.8)
        assert all(f["type"] != "tool_call"
                   for f in [c.pushed.get_nowait() for _ in range(c.pushed.qsize())])
        await c.close()
    finally:
        await d.stop()
