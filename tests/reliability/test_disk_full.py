"""Disk full mid-run: a real 16 MiB tmpfs as the data disk, filled by a filler file, then freed.

The data directory (SQLite, WAL, log file) lives on the tmpfs; the documents and the model do
not. The moment the first record reaches the client, a filler file takes every free byte. The
run must end ``error`` with the reason "disk full" and its ``run_finished`` frame (its row
cannot be written then: it is written once space returns); the acks that cannot be committed
wait in memory, retried with capped backoff, without spinning the CPU or flooding stderr.
When the filler is deleted, the held acks commit, the run row closes, and the next run
delivers the rest: every task line once, nothing after its ack.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from sidecar.client import DaemonProcess, SidecarClient
from sidecar.store import Store
from tests.reliability.taskdocs import make_agent, write_task_docs

Figure = Callable[[str, str, Any], None]

DISK_MB = 16
MEASURE_S = 6.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs of DISK_MB MiB (root only), unmounted afterwards whatever happens."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0700",
                           "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): "
                    f"{done.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(path: Path) -> int:
    """Write until the disk refuses even one byte; returns bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    total, size = 0, 1 << 20
    try:
        while size:
            try:
                total += os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                size //= 4
    finally:
        os.close(fd)
    return total


class Writer:
    """The Electron-like client: acks every tool_call, notes anything that comes back."""

    def __init__(self, c: SidecarClient) -> None:
        self.c = c
        self.received: Counter[str] = Counter()
        self.acked: set[str] = set()
        self.after_ack: list[str] = []
        self.titles: list[str] = []
        self.finished: dict[str, dict[str, Any]] = {}

    async def step(self, timeout: float) -> dict[str, Any] | None:
        try:
            frame = await self.c.next_push(None, timeout=timeout)
        except TimeoutError:
            return None
        if frame["type"] == "tool_call":
            key = frame["idempotency_key"]
            if key in self.acked:
                self.after_ack.append(key)
            self.received[key] += 1
            self.titles.append(str(frame["data"].get("title", "")))
            await self.c.ack(frame)
            self.acked.add(key)
        elif frame["type"] == "run_finished":
            self.finished[frame["run"]["id"]] = frame["run"]
        return frame

    async def run_until(self, cond: Callable[[], bool], limit: float) -> bool:
        deadline = time.monotonic() + limit
        while not cond():
            if time.monotonic() > deadline:
                return False
            await self.step(0.1)
        return True


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


async def run_status(c: SidecarClient, agent: str, run_id: str) -> dict[str, Any]:
    runs = (await c.request({"type": "run_list", "agent_id": agent, "limit": 10}))["runs"]
    return next(r for r in runs if r["id"] == run_id)


async def test_disk_full_mid_run_ends_the_run_and_resumes_when_space_returns(
        small_disk: Path, tmp_path: Path, model_dir: Path, token: str,
        figure: Figure) -> None:
    tags = write_task_docs(tmp_path / "docs", files=40, per_file=2, seed=7)
    data = small_disk / "data"
    filler = small_disk / "filler"
    d = await DaemonProcess.start(data, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    w = None
    try:
        w = Writer(await d.connect())
        await w.c.hello()
        agent = await make_agent(w.c, tmp_path / "docs")
        run1 = (await w.c.request({"type": "run_agent", "agent_id": agent}))["run_id"]
        assert await w.run_until(lambda: bool(w.received), 120), "no record reached the client"
        filled = fill(filler)  # the first record is out: the run is mid-way
        assert os.statvfs(small_disk).f_bavail == 0
        before_fill = len(w.received)

        await w.run_until(lambda: run1 in w.finished, 10)
        # the disk stays full: what does the daemon do meanwhile (the client keeps acking)?
        lines0, cpu0, t0 = len(d.stderr_lines), cpu_seconds(d.ready.pid), time.monotonic()
        while time.monotonic() - t0 < MEASURE_S:
            await w.step(0.1)
        span = time.monotonic() - t0
        cpu = 100 * (cpu_seconds(d.ready.pid) - cpu0) / span
        lines = len(d.stderr_lines) - lines0
        figure("disk full", f"daemon CPU while the disk stays full ({MEASURE_S:.0f} s), %",
               round(cpu, 1))
        figure("disk full", "stderr lines per minute while the disk stays full",
               round(lines * 60 / span))
        assert run1 in w.finished, "no run_finished for the run the full disk stopped"
        first = w.finished[run1]
        assert first["status"] == "error", first
        assert any(e.startswith("disk full") for e in first["errors"]), first["errors"]
        assert cpu < 5, f"{cpu:.0f}% CPU while the disk is full: the retry spins"
        assert lines * 60 / span < 60, d.stderr_lines[lines0:lines0 + 40]

        # what the user does meanwhile: save an agent, press "run now"; each gets a clear
        # error frame (the connection lives), never an internal error
        refused = [await w.c.request({"type": "agent_upsert", "agent": {
            "kind": "local", "name": "Another", "directories": [str(tmp_path / "docs")],
            "data_types": ["tasks"], "schedule_cron": "0 3 * * *", "watch": False}}),
            await w.c.request({"type": "run_agent", "agent_id": agent})]
        for reply in refused:
            assert reply["type"] == "error" and reply["code"] == "disk_full", reply
            assert "free some space" in reply["message"], reply

        # the app reloads while the disk is still full: acks it sent are held in memory, so
        # nothing it acked may come back to the new connection
        await w.c.close()
        w.c = await d.connect()
        await w.c.hello()
        await w.run_until(lambda: False, 1.0)

        os.unlink(filler)  # space returns
        t_free = time.monotonic()
        while True:  # the held acks commit and the run row closes without a restart
            row = await run_status(w.c, agent, run1)
            status = await w.c.request({"type": "status"})
            if row["status"] != "running" and status["outbox_pending"] == 0:
                break
            assert time.monotonic() - t_free < 30, (row, status)
            await w.step(0.2)
        recovered_s = time.monotonic() - t_free
        figure("disk full", "space freed → acks committed and run row closed, s",
               round(recovered_s, 1))
        assert row["status"] == "error" and row["completed_at"], row
        assert any(e.startswith("disk full") for e in row["errors"]), row

        run2 = (await w.c.request({"type": "run_agent", "agent_id": agent}))["run_id"]
        assert await w.run_until(lambda: run2 in w.finished, 180), "second run never ended"
        await w.run_until(lambda: False, 1.0)  # anything else still coming?
        second = w.finished[run2]
    finally:
        if w is not None:
            await w.c.close()
        await d.stop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(filler)

    async with Store(data / "sidecar.sqlite3") as store:
        rows = await store.db.fetchall("SELECT idempotency_key, state FROM outbox")
        integrity = await store.db.integrity_check()
        stored = await store.runs.get(run1)
    queued = {r["idempotency_key"]: r["state"] for r in rows}
    got = set(re.findall(r"notes\d+x\d+", " ".join(w.titles).lower()))
    figure("disk full", "records before the fill / in all (lost, twice)",
           f"{before_fill} / {len(queued)} ({len(tags - got)}, {len(w.after_ack)})")
    figure("disk full", "filler bytes", filled)
    assert second["status"] == "success", second
    assert not w.after_ack, f"records came back after their ack: {w.after_ack[:5]}"
    assert got == tags, f"task lines never delivered: {sorted(tags - got)[:5]}"
    assert set(queued.values()) == {"acked"} and set(queued) == set(w.received)
    assert integrity == "ok"
    assert stored is not None and stored["status"] == "error", stored
    assert not any("Traceback" in line for line in d.stderr_lines), \
        "a full disk is expected, not a crash: no tracebacks"


async def test_a_project_answered_while_the_disk_is_full_releases_its_records_once_space_returns(
        small_disk: Path, tmp_path: Path, model_dir: Path, token: str) -> None:
    """The held records of a new project are released in the transaction that records the
    project's answer. With the disk full that commit cannot happen: nothing is released (no
    record goes out without the project's id), and once space returns the answer commits and
    the tasks and timeline come, once, with the id the app gave."""
    from tests.test_held_records import KICKOFF, MILESTONE, TASKS

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "kickoff.md").write_text(KICKOFF, encoding="utf-8")
    data = small_disk / "data"
    filler = small_disk / "filler"
    d = await DaemonProcess.start(data, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    c = None
    try:
        c = await d.connect()
        await c.hello()
        saved = await c.request({"type": "agent_upsert", "agent": {
            "kind": "local", "name": "Kickoffs", "directories": [str(docs)],
            "extensions": [".md"], "data_types": ["tasks", "timelines", "projects"],
            "schedule_cron": "0 3 * * *", "watch": False}})
        await c.request({"type": "run_agent", "agent_id": saved["agent"]["id"]})
        project = await c.next_push("tool_call", timeout=120)
        assert project["table"] == "projects", project
        fill(filler)
        await c.ack(project, {"id": "p_full"})
        early: list[dict[str, Any]] = []
        with contextlib.suppress(TimeoutError):
            while True:  # the disk stays full for 3 s: nothing may be released meanwhile
                early.append(await c.next_push("tool_call", timeout=3.0))
        assert all(f["id"] == project["id"] for f in early), early
        os.unlink(filler)
        released: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(TimeoutError):
            while True:
                f = await c.next_push("tool_call", timeout=15.0 if not released else 3.0)
                if f["id"] == project["id"]:  # sent again before the answer committed
                    await c.ack(f, {"id": "p_full"})
                    continue
                assert f["idempotency_key"] not in released, "a record came twice"
                released[f["idempotency_key"]] = f
                await c.ack(f, {"id": f"x_{len(released)}"})
    finally:
        if c is not None:
            await c.close()
        await d.stop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(filler)
    calls = list(released.values())
    assert {f["data"]["title"] for f in calls if f["table"] == "tasks"} == TASKS, calls
    assert {f["data"]["title"] for f in calls if f["table"] == "timelines"} == {MILESTONE}
    assert {f["data"]["projectId"] for f in calls} == {"p_full"}
    async with Store(data / "sidecar.sqlite3") as store:
        assert await store.db.scalar("SELECT count(*) FROM held") == 0
        assert await store.db.scalar(
            "SELECT count(*) FROM outbox WHERE state != 'acked'") == 0
