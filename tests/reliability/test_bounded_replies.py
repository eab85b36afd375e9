"""Replies stay small whatever a run met: lists in frames are capped, the run log has it all.

A folder with 20,000 files that cannot be read made every ``status`` reply carry the last
run's 20,000 error lines (1.3 MB, re-read from SQLite and re-sent on every poll). Frames now
carry the first lines, the totals, and skips counted apart; the run log in SQLite keeps
every skipped file. The sizes here are of the raw reply text on the wire.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.client import DaemonProcess, SidecarClient
from tests.reliability.conftest import Record
from tests.test_local_agent import make_agent, run_and_collect, titles

SKIPPED = 20_000
#: Runs of the 120-error agent listed at once.
RUNS = 12
#: What a reply may weigh whatever the folder holds: a few dozen listed lines, not 20,000.
#: (The unbounded status reply measured 1.3 MB for this folder.)
REPLY_BOUND = 64 * 1024


@pytest.fixture
async def daemon_b(data_dir: Path, token: str, model_dir: Path, default_model: Path
                   ) -> AsyncIterator[DaemonProcess]:
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        yield d
    finally:
        await d.stop()


async def raw_reply(d: DaemonProcess, frame: dict[str, Any]) -> str:
    """The reply's text exactly as it came over the socket."""
    async with aiohttp.ClientSession() as session, session.ws_connect(
            d.url(), headers={"Authorization": f"Bearer {d.token}"},
            max_msg_size=64 * 1024 * 1024) as ws:
        await ws.send_str(json.dumps({**frame, "request_id": "size"}))
        while True:
            msg = await ws.receive(timeout=60)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            if json.loads(msg.data).get("request_id") == "size":
                return str(msg.data)


async def test_twenty_thousand_skipped_files_keep_every_reply_small(
        daemon_b: DaemonProcess, tmp_path: Path, data_dir: Path, figure: Record) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(SKIPPED):
        (folder / f"scan-{i:05d}.txt").write_bytes(b"\x00\x01binary\x00" * 4)
    (folder / "notes.md").write_text("- [ ] Luis to call the roofer about the leak\n")

    c: SidecarClient = await daemon_b.connect()
    try:
        await c.hello()
        agent = await make_agent(c, folder)
        run, calls = await run_and_collect(c, agent["id"], timeout=600)
        assert any("roofer" in t for t in titles(calls)), titles(calls)  # the run goes on
        assert run["status"] == "partial", run["status"]
        assert len(json.dumps(run)) < REPLY_BOUND, len(json.dumps(run))
        # 49 listed and one line for the rest: the run_finished frame's 50 lines hold both
        assert any(f"{SKIPPED - 49:,} more skipped" in e for e in run["errors"]), \
            run["errors"][-3:]

        status_text = await raw_reply(daemon_b, {"type": "status"})
        runs_text = await raw_reply(daemon_b, {"type": "run_list", "limit": 500})
    finally:
        await c.close()

    status = json.loads(status_text)
    last = next(a for a in status["agents"] if a["id"] == agent["id"])["last_run"]
    assert last["skipped"] == {"permanent": SKIPPED, "transient": 0}, last["skipped"]
    assert len(last["errors"]) <= last["errors_total"] < 100, last["errors_total"]
    assert len(status_text.encode()) < REPLY_BOUND, len(status_text.encode())
    listed = json.loads(runs_text)["runs"]
    assert listed[0]["skipped"]["permanent"] == SKIPPED
    assert len(runs_text.encode()) < REPLY_BOUND, len(runs_text.encode())

    with sqlite3.connect(f"file:{data_dir / 'sidecar.sqlite3'}?mode=ro", uri=True) as db:
        logged = db.execute("SELECT count(*), count(DISTINCT item) FROM run_skips "
                            "WHERE run_id = ? AND reason = 'binary' AND kind = 'permanent'",
                            (run["id"],)).fetchone()
    assert logged == (SKIPPED, SKIPPED), logged  # the run log has every one

    figure("bounded replies", "skipped files in one folder", SKIPPED)
    figure("bounded replies", "status reply bytes (was 1.3 MB)", len(status_text.encode()))
    figure("bounded replies", "run_list (500) reply bytes", len(runs_text.encode()))
    figure("bounded replies", "skips in the run log (SQLite)", logged[0])


async def test_a_run_with_120_errors_is_capped_in_frames_and_whole_in_the_log(
        data_dir: Path, token: str, tmp_path: Path, figure: Record) -> None:
    """Not only skips: an engine that refuses each of 120 documents gives 120 error lines;
    frames carry the first ones and the total, SQLite all of them."""
    from tests.fakes.openai_server import FakeOpenAI

    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(120):
        (folder / f"note-{i:02d}.md").write_text(f"- [ ] Task number {i} for Dana\n")
    engine = await FakeOpenAI().start()
    engine.status = 422  # a permanent refusal, per document: the run goes on
    d = await DaemonProcess.start(data_dir, token=token,
                                  env={"SIDECAR_REMOTE_API_KEY": "not-a-secret"})
    try:
        c = await d.connect()
        try:
            await c.hello()
            agent = await make_agent(c, folder, engine="remote",
                                     remote={"base_url": engine.url, "model": "fake"})
            run, _ = await run_and_collect(c, agent["id"], timeout=300)
            status_text = await raw_reply(d, {"type": "status"})
            for _ in range(RUNS - 1):  # the refused documents are tried again each run
                await run_and_collect(c, agent["id"], timeout=300)
            runs_text = await raw_reply(d, {"type": "run_list", "limit": 500})
        finally:
            await c.close()
    finally:
        await d.stop()
        await engine.close()
    with sqlite3.connect(f"file:{data_dir / 'sidecar.sqlite3'}?mode=ro", uri=True) as db:
        (logged,) = db.execute("SELECT errors FROM runs WHERE id = ?", (run["id"],)).fetchone()
    logged = json.loads(logged)
    assert len(logged) > 100, len(logged)
    last = next(a for a in json.loads(status_text)["agents"]
                if a["id"] == agent["id"])["last_run"]
    assert last["errors_total"] == len(logged)
    # the run_finished frame itself is capped the same way
    assert run["errors_total"] == len(logged) and len(run["errors"]) == 50
    assert run["errors"] == logged[:50]
    assert last["errors"] == logged[:len(last["errors"])] and len(last["errors"]) <= 50
    assert len(status_text.encode()) < REPLY_BOUND
    listed = json.loads(runs_text)["runs"]
    assert len(listed) == RUNS and all(r["errors_total"] == len(logged) for r in listed)
    assert len(runs_text.encode()) < REPLY_BOUND, len(runs_text.encode())
    figure("bounded replies", "run errors in SQLite / in the status frame",
           f"{len(logged)} / {len(last['errors'])}")
    figure("bounded replies", f"run_list of {RUNS} runs × {len(logged)} errors: reply bytes",
           len(runs_text.encode()))
