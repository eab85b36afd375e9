"""Skips that can heal are retried; skips that cannot are remembered until the file changes.

A file the daemon may not read (chmod 000) is a transient skip: fixing the permission does
not change its mtime, so a store that remembers it like "unsupported type" never reads it
again. The daemon here runs as root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH
(``setpriv``), so file modes bind it as they bind a user, while it still reaches the test's
folders and the real model it owns.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.client import DaemonProcess, SidecarClient
from tests.reliability.conftest import Record
from tests.test_local_agent import make_agent, titles

NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
          "--bounding-set=-dac_override,-dac_read_search"]

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("setpriv"),
    reason="needs Linux, root and setpriv to drop the daemon's permission override")

LOCKED = "- [ ] Luis to send the signed lease to the landlord\n"
OTHER = "- [ ] Priya to book the venue for the launch party\n"


@pytest.fixture
async def daemon_nodac(data_dir: Path, token: str, model_dir: Path, default_model: Path
                       ) -> AsyncIterator[DaemonProcess]:
    d = await DaemonProcess.start(
        data_dir, token=token, command=[*NO_DAC, sys.executable, "-m", "sidecar"],
        extra_args=["--model-dir", str(model_dir), "--watch-quiet-seconds", "0.3",
                    "--watch-poll-seconds", "0.5"])
    try:
        yield d
    finally:
        await d.stop()


@pytest.fixture
async def c(daemon_nodac: DaemonProcess) -> AsyncIterator[SidecarClient]:
    client = await daemon_nodac.connect()
    await client.hello()
    try:
        yield client
    finally:
        await client.close()


def unreadable(path: Path, text: str) -> os.stat_result:
    path.write_text(text)
    path.chmod(0)
    return path.stat()


async def next_run(c: SidecarClient, *, trigger: str | None = None, timeout: float = 120
                   ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The next finished run (of ``trigger``): (run, its tool_calls acked, its progress)."""
    calls: dict[str, list[dict[str, Any]]] = {}
    progress: dict[str, list[dict[str, Any]]] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await c.next_push(None, timeout=max(0.1, deadline - loop.time()))
        if frame["type"] == "tool_call":
            calls.setdefault(frame["run_id"], []).append(frame)
            await c.ack(frame, result={"id": frame["id"]})
        elif frame["type"] == "run_progress":
            progress.setdefault(frame["run_id"], []).append(frame)
        elif frame["type"] == "run_finished" and trigger in (None, frame["run"]["trigger"]):
            run = frame["run"]
            return run, calls.get(run["id"], []), progress.get(run["id"], [])


async def run_now(c: SidecarClient, agent_id: str
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A manual run after whatever is going (a new agent's catch-up) has finished."""
    while True:
        started = await c.request({"type": "run_agent", "agent_id": agent_id})
        while True:
            run, calls, _ = await next_run(c)
            if run["id"] == started["run_id"]:
                break
        if not started["already_running"]:
            return run, calls


async def last_run_line(c: SidecarClient, agent_id: str) -> dict[str, Any]:
    status = await c.request({"type": "status"})
    return next(a for a in status["agents"] if a["id"] == agent_id)["last_run"]


def skip_rows(data_dir: Path, run_id: str) -> list[tuple[str, str, str]]:
    with sqlite3.connect(f"file:{data_dir / 'sidecar.sqlite3'}?mode=ro", uri=True) as db:
        return db.execute("SELECT item, reason, kind FROM run_skips WHERE run_id = ? "
                          "ORDER BY item", (run_id,)).fetchall()


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "polling"])
async def test_a_chmod_fixed_file_arrives_from_the_watcher_without_a_rescan(
        c: SidecarClient, tmp_path: Path, data_dir: Path, figure: Record, poll: bool) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 8)
    locked = folder / "lease.md"
    before = unreadable(locked, LOCKED)
    agent = await make_agent(c, folder, watch=True, poll=poll, extensions=[".md", ".txt"])

    run, calls = await run_now(c, agent["id"])
    assert calls == [], titles(calls)
    lease = [e for e in run["errors"] if "lease.md" in e]
    assert lease and "(skipped: permission)" in lease[0] and "retried" in lease[0], run["errors"]
    binary = [e for e in run["errors"] if "binary.txt" in e]
    assert binary and "(skipped: binary)" in binary[0] and "retried" not in binary[0], binary
    line = await last_run_line(c, agent["id"])
    assert line["skipped"] == {"permanent": 1, "transient": 1}, line
    assert skip_rows(data_dir, run["id"]) == [
        (str((folder / "binary.txt").resolve()), "binary", "permanent"),
        (str(locked.resolve()), "permission", "transient")]

    again, _ = await run_now(c, agent["id"])  # fails again: now it backs off …
    assert [e for e in again["errors"] if "lease.md" in e], again["errors"]
    waits, _ = await run_now(c, agent["id"])
    assert waits["errors"] == [], waits["errors"]

    t0 = time.monotonic()  # … but an event on the file itself retries it at once
    locked.chmod(0o644)
    assert locked.stat().st_mtime_ns == before.st_mtime_ns  # a chmod does not touch mtime
    fixed, calls2, progress = await next_run(c, trigger="watch", timeout=60)
    took = time.monotonic() - t0
    assert "signed lease" in " ".join(titles(calls2)), (fixed, titles(calls2))
    assert fixed["status"] == "success", fixed["errors"]
    # only the file the event named was looked at: no rescan of the folder
    assert progress and {p["files_total"] for p in progress} == {1}, progress
    assert not any("binary.txt" in e for e in fixed["errors"])
    mode = "polling 0.5 s" if poll else "inotify"
    figure("skips", f"chmod-fixed file → its records, {mode}, no rescan (s)", round(took, 1))


async def test_transient_skips_retry_at_the_next_scan_then_back_off(
        c: SidecarClient, tmp_path: Path, data_dir: Path, figure: Record) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 8)
    fixed_later = folder / "lease.md"
    still_locked = folder / "venue.md"
    unreadable(fixed_later, LOCKED)
    unreadable(still_locked, OTHER)
    agent = await make_agent(c, folder, extensions=[".md", ".txt"])  # no watcher

    first, calls = await run_now(c, agent["id"])
    assert calls == [] and len([e for e in first["errors"] if "retried" in e]) == 2, first

    fixed_later.chmod(0o644)
    second, calls2 = await run_now(c, agent["id"])  # the next scan retries both transient skips
    assert "signed lease" in " ".join(titles(calls2)), titles(calls2)
    assert [e for e in second["errors"] if "venue.md" in e], second["errors"]
    assert not any("binary.txt" in e for e in second["errors"]), second["errors"]
    assert (await last_run_line(c, agent["id"]))["skipped"] == {"permanent": 0, "transient": 1}

    third, calls3 = await run_now(c, agent["id"])  # venue.md failed twice: it waits (backoff)
    assert calls3 == [] and third["errors"] == [] and third["status"] == "success", third
    assert (await last_run_line(c, agent["id"]))["skipped"] == {"permanent": 0, "transient": 0}

    still_locked.touch()  # but a changed file is read again at once
    fourth, _ = await run_now(c, agent["id"])
    assert [e for e in fourth["errors"] if "venue.md" in e], fourth
    figure("skips", "transient skip: files read at runs 2 / 3 (backoff) / 4 (changed)",
           f"{second['items_processed']} / {third['items_processed']} / "
           f"{fourth['items_processed']}")


async def test_a_chmod_fixed_folder_brings_its_files_from_the_watcher(
        c: SidecarClient, tmp_path: Path, figure: Record) -> None:
    """A folder the daemon may not list is retried too: fixing it (an attribute event on
    the folder) rescans, and the files inside arrive."""
    folder = tmp_path / "docs"
    closed = folder / "private"
    closed.mkdir(parents=True)
    (closed / "lease.md").write_text(LOCKED)
    closed.chmod(0)
    agent = await make_agent(c, folder, watch=True)
    try:
        run, calls = await run_now(c, agent["id"])
        assert calls == [], titles(calls)
        line = [e for e in run["errors"] if "private" in e]
        assert line and "(skipped: permission_denied); will be retried" in line[0], run
        t0 = time.monotonic()
        closed.chmod(0o755)
        fixed, calls2, _ = await next_run(c, trigger="watch", timeout=60)
        took = time.monotonic() - t0
    finally:
        closed.chmod(0o755)
    assert "signed lease" in " ".join(titles(calls2)), (fixed, titles(calls2))
    figure("skips", "chmod-fixed folder → its files' records (watcher) s", round(took, 1))
