"""Local-folder agents end to end: the real daemon, the real model, real files and watchdog."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.client import DaemonProcess, SidecarClient

MEETING = """# Kickoff: Harbor Bakery website

## Notes
- Decision: we keep the existing domain.

## Action items
- [ ] Luis to send the first homepage mockups by Friday
- [ ] Priya: set up the staging server for Dana
- [ ] Draft the content plan for the menu pages (urgent)
"""

EMAIL = """From: Dana <dana@bakery.example>
To: Priya <priya@studio.example>
Subject: Opening hours
Date: Tue, 24 Nov 2026 16:42:10 +0100
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"

Hi Priya,
Could you please fix the opening hours on the contact page before Monday?
Thanks, Dana
"""


@pytest.fixture
async def daemon_m(data_dir: Path, token: str, model_dir: Path, default_model: Path
                   ) -> AsyncIterator[DaemonProcess]:
    d = await DaemonProcess.start(data_dir, token=token, extra_args=[
        "--model-dir", str(model_dir), "--watch-quiet-seconds", "0.4"])
    try:
        yield d
    finally:
        await d.stop()


@pytest.fixture
async def c(daemon_m: DaemonProcess) -> AsyncIterator[SidecarClient]:
    client = await daemon_m.connect()
    await client.hello()
    try:
        yield client
    finally:
        await client.close()


async def make_agent(c: SidecarClient, folder: Path, **extra: Any) -> dict[str, Any]:
    reply = await c.request({"type": "agent_upsert", "agent": {
        "kind": "local", "name": "Docs", "directories": [str(folder)],
        "extensions": [".md", ".txt", ".eml", ".pdf", ".docx"], "data_types": ["tasks", "notes"],
        "schedule_cron": "0 3 * * *", "watch": False, **extra}})
    assert reply["type"] == "agent_upsert_result", reply
    return reply["agent"]


async def run_and_collect(c: SidecarClient, agent_id: str, *, full: bool = False,
                          timeout: float = 120) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start a run, ack every insert, return (run record, tool_calls)."""
    frame: dict[str, Any] = {"type": "run_agent", "agent_id": agent_id}
    if full:
        frame["full"] = True
    started = await c.request(frame)
    assert started["type"] == "run_agent_result" and not started["already_running"]
    return await collect_until_finished(c, started["run_id"], timeout)


async def collect_until_finished(c: SidecarClient, run_id: str | None, timeout: float = 120
                                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await c.next_push(None, timeout=max(0.1, deadline - loop.time()))
        if frame["type"] == "tool_call":
            calls.append(frame)
            await c.ack(frame, result={"id": frame["id"]})
        elif frame["type"] == "run_finished" and (run_id is None
                                                  or frame["run"]["id"] == run_id):
            return frame["run"], calls


def titles(calls: list[dict[str, Any]]) -> list[str]:
    return [str(f["data"].get("title", "")).lower() for f in calls]


async def test_run_reads_extracts_delivers_and_a_rescan_is_free(
        c: SidecarClient, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "kickoff.md").write_text(MEETING)
    (folder / "dana.eml").write_text(EMAIL)
    agent = await make_agent(c, folder)

    run, calls = await run_and_collect(c, agent["id"])
    assert run["status"] == "success", run
    assert run["items_processed"] == 2 and run["items_created"] == len(calls) > 0
    got = titles(calls)
    assert any("homepage mockups" in t for t in got), got
    assert any("opening hours" in t for t in got), got
    for f in calls:  # the seed's frame, plus additive metadata
        assert f["action"] == "insert" and f["table"] in ("tasks", "notes")
        assert f["data"]["isAiSuggested"] == 1 and f["data"]["isApproved"] == 0
        assert not {"id", "createdAt", "updatedAt"} & set(f["data"])
    luis = next(f for f in calls if "homepage mockups" in titles([f])[0])
    assert luis["data"]["assignee"] == '["Luis"]' and isinstance(luis["data"]["dueDate"], int)

    again, calls2 = await run_and_collect(c, agent["id"])
    assert again["status"] == "success" and again["items_processed"] == 0 and calls2 == []

    # one file changes: only it is extracted; its unchanged records are not sent again
    (folder / "kickoff.md").write_text(MEETING + "- [ ] Order business cards for Luis\n")
    changed, calls3 = await run_and_collect(c, agent["id"])
    assert changed["items_processed"] == 1
    assert titles(calls3) == ["order business cards for luis"], titles(calls3)


async def test_prompt_change_re_extracts_every_file(c: SidecarClient, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text(MEETING)
    (folder / "b.eml").write_text(EMAIL)
    agent = await make_agent(c, folder)
    first, _ = await run_and_collect(c, agent["id"])
    assert first["items_processed"] == 2
    await c.request({"type": "agent_upsert", "agent": {
        "id": agent["id"], "prompt_template": "Only what Priya must do."}})
    second, _ = await run_and_collect(c, agent["id"])
    assert second["items_processed"] == 2



async def test_every_record_carries_a_confidence_and_min_confidence_is_per_agent(
        c: SidecarClient, tmp_path: Path) -> None:
    """Two agents over the same documents: the stricter one gets exactly the confident
    records. (Its copy of the folder has another name: over one folder, the two agents'
    records would share their stable keys, and the second agent's would not be queued.)"""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "kickoff.md").write_text(MEETING)
    (folder / "dana.eml").write_text(EMAIL)
    (folder / "plan.md").write_text(
        "# Plan\n\nWe could maybe look at the footer at some point.\n"
        "Tom will update the price list by Thursday.\n"
        "It might be nice to revisit the colours.\n")
    loose = await make_agent(c, folder, name="Loose")
    _, all_calls = await run_and_collect(c, loose["id"])
    confidences = sorted(f["confidence"] for f in all_calls)
    assert all(isinstance(x, float) and 0.0 < x <= 1.0 for x in confidences), confidences
    assert confidences[0] < confidences[-1], "confidence does not vary: the filter proves nothing"
    cut = (confidences[0] + confidences[-1]) / 2
    import shutil

    shutil.copytree(folder, tmp_path / "docs-strict")
    strict = await make_agent(c, tmp_path / "docs-strict", name="Strict", min_confidence=cut)
    assert strict["min_confidence"] == cut
    _, strict_calls = await run_and_collect(c, strict["id"])
    expected = sorted((f["table"], titles([f])[0]) for f in all_calls if f["confidence"] >= cut)
    got = sorted((f["table"], titles([f])[0]) for f in strict_calls)
    assert got == expected and 0 < len(got) < len(all_calls)
    assert all(f["confidence"] >= cut for f in strict_calls)

async def test_bad_files_are_skipped_with_reasons_and_the_run_goes_on(
        c: SidecarClient, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    outside = tmp_path / "secret.md"
    outside.write_text("- [ ] Never read me\n")
    (folder / "good.md").write_text(MEETING)
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 40)
    (folder / "empty.md").write_text("")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n garbage without xref")
    (folder / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    (folder / "big.txt").write_text("x " * 60_000)
    (folder / "escape.md").symlink_to(outside)
    agent = await make_agent(c, folder, max_file_bytes=100_000)

    run, calls = await run_and_collect(c, agent["id"])
    assert run["status"] == "partial", run
    assert calls and not any("never read me" in t for t in titles(calls))
    errors = "\n".join(run["errors"])
    for name, reason in [("binary.txt", "binary"), ("empty.md", "empty"),
                         ("broken.pdf", "corrupt"), ("broken.docx", "corrupt"),
                         ("big.txt", "too_large"), ("escape.md", "outside_folder")]:
        line = next((e for e in run["errors"] if name in e), None)
        assert line is not None, f"{name} missing from the run log:\n{errors}"
        assert reason in line, line
    # unchanged bad files are not retried every run
    again, _ = await run_and_collect(c, agent["id"])
    assert again["status"] == "success" and again["errors"] == []


async def test_watch_partial_write_and_burst_make_one_incremental_run(
        c: SidecarClient, tmp_path: Path) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    await make_agent(c, folder, watch=True)
    await asyncio.sleep(0.5)  # observer up

    # a slow writer: the file grows over ~1.2 s; it must be read once, complete
    path = folder / "slow.md"
    with path.open("w") as f:
        for line in MEETING.splitlines(keepends=True):
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
            await asyncio.sleep(0.15)
    run, calls = await collect_until_finished(c, None, timeout=60)
    assert run["trigger"] == "watch" and run["items_processed"] == 1, run
    assert any("content plan" in t for t in titles(calls)), titles(calls)

    # a burst of 12 files becomes one run
    for i in range(12):
        (folder / f"note{i}.md").write_text(f"- [ ] Call supplier number {i} about flour\n")
    run2, calls2 = await collect_until_finished(c, None, timeout=90)
    assert run2["items_processed"] == 12, run2
    assert len(calls2) == 12
    with pytest.raises(TimeoutError):  # and no second run follows
        await c.next_push("run_started", timeout=2.5)

    # a rename is recognised by its bytes: no extraction, nothing sent again
    (folder / "note0.md").rename(folder / "renamed.md")
    run3, calls3 = await collect_until_finished(c, None, timeout=60)
    assert run3["items_processed"] == 0 and calls3 == [], run3


async def test_socket_stays_responsive_while_the_model_works(
        data_dir: Path, token: str, model_dir: Path, default_model: Path, tmp_path: Path) -> None:
    """With the model asked about every unsure span, frames are still answered mid-run."""
    folder = tmp_path / "docs"
    folder.mkdir()
    body = "".join(f"Paragraph {i}. We might look at option {i} later if time allows.\n"
                   f"- Maybe ask Dana about item {i}\n" for i in range(60))
    (folder / "long.md").write_text(body)
    d = await DaemonProcess.start(data_dir, token=token, extra_args=[
        "--model-dir", str(model_dir), "--judge-weight", "0.6"])
    try:
        c = await d.connect()
        await c.hello()
        agent = await make_agent(c, folder)
        started = await c.request({"type": "run_agent", "agent_id": agent["id"]})
        answered_during_run = 0
        for _ in range(5):
            status = await c.request({"type": "status"}, timeout=10)
            by_id = {a["id"]: a for a in status["agents"]}
            if by_id[agent["id"]]["running_run_id"] == started["run_id"]:
                answered_during_run += 1
            await asyncio.sleep(0.05)
        assert answered_during_run >= 3, "status was not answered while the model ran"
        run, _ = await collect_until_finished(c, started["run_id"], timeout=300)
        assert run["status"] == "success"
        assert any("loaded model" in line for line in d.stderr_lines)
        await c.close()
    finally:
        await d.stop()


async def test_kill_9_mid_run_loses_and_duplicates_nothing(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """The sidecar dies mid-run; after a restart every record arrives exactly once."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(400):
        (folder / f"n{i:03}.md").write_text(f"- [ ] Call supplier {i} about the flour order\n"
                                           f"- [ ] Send invoice {i} to Dana\n")
    args = ["--model-dir", str(model_dir)]
    d = await DaemonProcess.start(data_dir, token=token, extra_args=args)
    c = await d.connect()
    await c.hello()
    agent = await make_agent(c, folder)
    await c.request({"type": "run_agent", "agent_id": agent["id"]})
    first_keys: list[str] = []
    while True:  # take some inserts (ack a few), then pull the plug mid-run
        frame = await c.next_push(None, timeout=120)
        if frame["type"] == "tool_call":
            first_keys.append(frame["idempotency_key"])
            if len(first_keys) % 2:
                await c.ack(frame, result={"id": frame["id"]})
        if len(first_keys) >= 40 or frame["type"] == "run_finished":
            break
    assert frame["type"] != "run_finished", "the run ended before the kill: make it longer"
    await asyncio.sleep(0.3)  # acks are committed in batches every few ms; then pull the plug
    await d.kill()
    await c.close()

    d2 = await DaemonProcess.start(data_dir, token=token, extra_args=args)
    try:
        c2 = await d2.connect()
        await c2.hello()
        started = await c2.request({"type": "run_agent", "agent_id": agent["id"]})
        run, calls = await collect_until_finished(c2, started["run_id"], timeout=300)
        assert run["status"] == "success", run
        await asyncio.sleep(0.5)
        keys = [f["idempotency_key"] for f in calls]
        assert len(keys) == len(set(keys)), "a record was delivered twice after the restart"
        acked_before = set(first_keys[0::2])
        assert not acked_before & set(keys), "an acked record was sent again"
        unacked = set(first_keys[1::2])
        assert unacked <= set(keys), "a record sent but not acked before the crash was lost"
        assert len(acked_before) + len(keys) == 800, (len(acked_before), len(keys))
        status = await c2.request({"type": "status"})
        assert status["outbox_pending"] == 0
        await c2.close()
    finally:
        await d2.stop()
