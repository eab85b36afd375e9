"""End to end: an agent on ``* * * * *`` runs by itself through the real daemon, on time.

Nothing here asks for a run: the only way records arrive is the daemon's own scheduler
firing the agent at the next minute boundary, the way a user who set "every minute" and
walked away would see it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sidecar.client import DaemonProcess
from sidecar.clock import parse_iso

#: The action items written into the document, as a person reads them (the gold lines).
GOLD = {
    "send the signed contract to Marta",
    "order the printed flyers for the market stall",
}
DOC = ("# Stall planning\n\n## Action items\n"
       "- [ ] Jonas to send the signed contract to Marta by Friday\n"
       "- [ ] Order the printed flyers for the market stall\n")
#: A minute boundary is at most 60 s away; the run itself takes a few seconds.
WAIT_SECONDS = 150.0


@pytest.mark.slow
async def test_every_minute_agent_runs_by_itself_through_the_daemon(
        data_dir: Path, token: str, model_dir: Path, default_model: Path,
        tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "stall.md").write_text(DOC, encoding="utf-8")
    d = await DaemonProcess.start(data_dir, token=token, extra_args=[
        "--model-dir", str(model_dir)])
    try:
        async with await d.connect() as c:
            await c.hello()
            created = await c.request({"type": "agent_upsert", "agent": {
                "kind": "local", "name": "Every minute", "directories": [str(folder)],
                "extensions": [".md"], "schedule_cron": "* * * * *", "watch": False}})
            assert created["type"] == "agent_upsert_result", created
            agent_id = created["agent"]["id"]
            asked_at = datetime.now(UTC)

            status = await c.request({"type": "status"})
            line = next(a for a in status["agents"] if a["id"] == agent_id)
            assert line["schedule_error"] is None and line["deferred"] is None, line
            assert line["last_run_at"] is None and line["running_run_id"] is None, line
            promised = parse_iso(line["next_run_at"])
            assert promised is not None, line
            # the next minute boundary, as a clock on the wall says (not asked of the daemon)
            boundary = (asked_at + timedelta(minutes=1)).replace(second=0, microsecond=0)
            assert abs((promised - boundary).total_seconds()) <= 1.0 or (
                promised == boundary + timedelta(minutes=1)), (promised, boundary)

            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT_SECONDS
            started: dict[str, Any] | None = None
            finished: dict[str, Any] | None = None
            titles: list[str] = []
            while finished is None:
                left = deadline - loop.time()
                if left <= 0:
                    pytest.fail("no scheduled run within "
                                f"{WAIT_SECONDS:.0f} s of creating an every-minute agent; "
                                f"status said next_run_at={line['next_run_at']}\n"
                                + "\n".join(d.stderr_lines[-20:]))
                try:
                    frame = await c.next_push(None, timeout=left)
                except TimeoutError:
                    continue
                if frame["type"] == "run_started" and frame["run"]["agent_id"] == agent_id:
                    started = frame["run"]
                    started_at = datetime.now(UTC)
                elif frame["type"] == "tool_call":
                    titles.append(frame["data"]["title"])
                    await c.ack(frame, result={"id": frame["id"]})
                elif (frame["type"] == "run_finished" and started is not None
                      and frame["run"]["id"] == started["id"]):
                    finished = frame["run"]

            assert started is not None and started["trigger"] == "schedule", started
            # it fired at the slot status promised: not before, and not long after
            assert promised - timedelta(seconds=1) <= started_at, (started_at, promised)
            assert started_at <= promised + timedelta(seconds=30), (started_at, promised)
            assert finished["status"] == "success", finished
            found = {g for g in GOLD if any(g.lower() in t.lower() for t in titles)}
            assert found == GOLD, titles

            after = await c.request({"type": "status"})
            line = next(a for a in after["agents"] if a["id"] == agent_id)
            assert line["last_run"]["id"] == started["id"], line
            assert line["last_run"]["trigger"] == "schedule", line
            nxt = parse_iso(line["next_run_at"])
            assert nxt is not None and nxt > promised, (nxt, promised)
    finally:
        await d.stop()
