"""The one-shot commands a new user meets first: run --demo, extract, models pull/verify."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sidecar(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


#: The action items in examples/, as a person reads them (each a part of the record's title).
GOLD_TASKS = {
    "kickoff-meeting.md": ["send the first homepage mockups", "set up the staging server",
                           "confirm the photo shoot date",
                           "draft the content plan for the menu pages"],
    "client-email.eml": ["add the seasonal menu section"],
    "project-plan.txt": ["send the merchant account application"],
}


def queued(stderr: str) -> tuple[int, int]:
    """(documents extracted, records queued) from the run summary line."""
    m = re.search(r"(\d+) document\(s\) extracted, (\d+) record\(s\) queued", stderr)
    assert m, stderr
    return int(m[1]), int(m[2])


def test_run_demo_queues_records_once_and_full_re_extracts(tmp_path: Path,
                                                           model_dir: Path) -> None:
    examples = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", examples)
    data = str(tmp_path / "d")
    first = sidecar("run", "--demo", str(examples), "--data-dir", data)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    for name, tasks in GOLD_TASKS.items():
        for task in tasks:
            assert any(task in ln.lower() and ln.endswith(f"({name})") for ln in lines), task
    docs, records = queued(first.stderr)
    assert docs == 3 and records == len(lines) >= sum(map(len, GOLD_TASKS.values()))

    again = sidecar("run", "--demo", str(examples), "--data-dir", data)
    assert again.returncode == 0 and again.stdout == ""
    assert queued(again.stderr) == (0, 0)  # nothing changed: nothing read, nothing queued

    full = sidecar("run", "a_demo_examples", "--full", "--data-dir", data)
    assert full.returncode == 0, full.stderr
    # --full reads and extracts all three again; the same records are never queued twice
    assert queued(full.stderr) == (3, 0) and full.stdout == ""

    status = json.loads(sidecar("status", "--json", "--data-dir", data).stdout)
    (demo,) = status["agents"]
    assert demo["last_run"]["status"] == "success" and demo["next_run_at"].endswith("Z")
    assert status["outbox_pending"] == records  # waiting for Electron


def test_run_format_jsonl_prints_the_insert_frames(tmp_path: Path, model_dir: Path) -> None:
    examples = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", examples)
    r = sidecar("run", "--demo", str(examples), "--format", "jsonl",
                "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    frames = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(frames) == queued(r.stderr)[1] >= sum(map(len, GOLD_TASKS.values()))
    assert all(f["type"] == "tool_call" and f["action"] == "insert" for f in frames)
    assert len({f["idempotency_key"] for f in frames}) == len(frames)
    for name, tasks in GOLD_TASKS.items():
        for task in tasks:
            assert any(f["table"] == "tasks" and task in f["data"]["title"].lower()
                       and Path(f["source"]["path"]).name == name for f in frames), task
    assert all(f["data"]["isAiSuggested"] == 1 and f["data"]["isApproved"] == 0 for f in frames)


def test_extract_prints_insert_frames_as_json_lines(model_dir: Path) -> None:
    r = sidecar("extract", "examples/kickoff-meeting.md", "--types", "tasks")
    assert r.returncode == 0, r.stderr
    frames = [json.loads(line) for line in r.stdout.splitlines()]
    assert frames and all(f["type"] == "tool_call" and f["table"] == "tasks" for f in frames)
    assert all(f["data"]["isAiSuggested"] == 1 and f["data"]["isApproved"] == 0 for f in frames)
    luis = next(f for f in frames if "homepage mockups" in f["data"]["title"])
    assert luis["data"]["assignee"] == '["Luis"]' and luis["source"]["grounded"]
    bad = sidecar("extract", "examples/", "--types", "users")
    assert bad.returncode == 5 and "unknown data types" in bad.stderr


def test_models_pull_from_file_and_verify(tmp_path: Path, default_model: Path) -> None:
    mdir = tmp_path / "models"
    r = sidecar("models", "pull", "--from", str(default_model), "--model-dir", str(mdir))
    assert r.returncode == 0, r.stderr
    assert (mdir / default_model.name).is_file() and "sha256 verified" in r.stderr
    listed = json.loads(sidecar("models", "list", "--json", "--model-dir", str(mdir)).stdout)
    assert listed[0]["state"] == "present" and listed[0]["default"]

    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\0" * 1000)
    r = sidecar("models", "pull", "--force", "--from", str(corrupt), "--model-dir",
                str(tmp_path / "other"))
    assert r.returncode == 1 and "does not match the manifest" in r.stderr
    assert not list((tmp_path / "other").glob("*.gguf")), "an unverified file was kept"

    target = mdir / default_model.name
    with target.open("r+b") as f:  # flip one byte in place: same size, new hash
        f.seek(5_000_000)
        byte = f.read(1)
        f.seek(5_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    r = sidecar("models", "verify", "--model-dir", str(mdir))
    assert r.returncode == 1
    assert str(target) in r.stderr and "expected sha256" in r.stderr and "corrupt" in r.stderr


def test_run_demo_shows_the_work_of_old_documents(tmp_path: Path, model_dir: Path) -> None:
    """The demo is a first run, but its examples must not go stale with the calendar
    (initial_lookback_days is off for --demo unless the flag is given)."""
    from datetime import date, timedelta

    folder = tmp_path / "old-examples"
    folder.mkdir()
    day = (date.today() - timedelta(days=400)).isoformat()
    (folder / "sync.md").write_text(f"# Sync — {day}\n\n## Actions\n"
                                    "- Tom to send the revised deck\n", encoding="utf-8")
    r = sidecar("run", "--demo", str(folder), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    assert any("Tom to send the revised deck" in ln for ln in r.stdout.splitlines()), r.stdout
    strict = sidecar("run", "--demo", str(folder), "--data-dir", str(tmp_path / "d2"),
                     "--initial-lookback-days", "30")
    assert strict.returncode == 0, strict.stderr
    assert not any("Tom to send" in ln for ln in strict.stdout.splitlines()), strict.stdout


def test_a_one_shot_command_on_a_new_data_dir_prints_its_answer_and_no_log_lines(
        tmp_path: Path) -> None:
    """Creating the store logs its migrations at INFO: not on the terminal of `sidecar status`
    (warnings still show; --log-level info brings them back)."""
    r = sidecar("status", "--data-dir", str(tmp_path / "new"))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "outbox: 0 record(s) waiting for Electron; 0 held" in r.stdout, r.stdout
    loud = sidecar("status", "--log-level", "info", "--data-dir", str(tmp_path / "new2"))
    assert "migrating store" in loud.stderr, loud.stderr
