"""initial_lookback_days through the real daemon (issue 14, item 8): a first run indexes old
documents without suggesting their tasks; a later edit of such a file is extracted."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from sidecar.client import DaemonProcess
from tests.reliability.taskdocs import run_and_ack


async def test_first_run_skips_stale_work_and_a_later_edit_extracts(
        tmp_path: Path, data_dir: Path, token: str, model_dir: Path,
        default_model: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    today = datetime.now()
    old_day = (today - timedelta(days=400)).date().isoformat()
    new_day = (today - timedelta(days=3)).date().isoformat()
    (folder / "old.md").write_text(f"# Old sync — {old_day}\n\n## Actions\n"
                                   "- Tom to send the old deck\n", encoding="utf-8")
    (folder / "new.md").write_text(f"# New sync — {new_day}\n\n## Actions\n"
                                   "- Ana to book the venue\n", encoding="utf-8")
    daemon = await DaemonProcess.start(data_dir, token=token, extra_args=[
        "--model-dir", str(model_dir), "--initial-lookback-days", "30"])
    try:
        c = await daemon.connect()
        await c.hello()
        agent = (await c.request({"type": "agent_upsert", "agent": {
            "kind": "local", "name": "Docs", "directories": [str(folder)],
            "extensions": [".md"], "data_types": ["tasks"], "schedule_cron": "0 3 * * *",
            "watch": False}}))["agent"]
        first, calls = await run_and_ack(c, agent["id"], until="run_finished")
        assert first["items_processed"] == 2  # both read and indexed
        assert [f["data"]["title"] for f in calls] == ["Ana to book the venue"]
        again, calls = await run_and_ack(c, agent["id"], until="run_finished")
        assert again["items_processed"] == 0 and calls == []  # the old file is not re-read
        with open(folder / "old.md", "a", encoding="utf-8") as f:
            f.write("- Li to call the printer\n")
        later = (today + timedelta(seconds=5)).timestamp()
        os.utime(folder / "old.md", (later, later))
        edited, calls = await run_and_ack(c, agent["id"], until="run_finished")
        assert edited["status"] == "success" and edited["items_processed"] == 1, edited
        assert sorted(f["data"]["title"] for f in calls) == [
            "Li to call the printer", "Tom to send the old deck"]
        await c.close()
    finally:
        await daemon.stop()
