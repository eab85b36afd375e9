"""A 2,000-level folder tree: the scan walks it without recursion and the bottom file arrives.

The scan used to recurse once per folder and raised RecursionError at about 500 levels, so
every run of such an agent ended ``error`` with 0 records. Here the real daemon (real model)
runs an agent over a tree 2,000 folders deep with a meeting note at the bottom and one at
the top; both must be extracted and delivered, and a rescan must be free.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sidecar.client import DaemonProcess, SidecarClient
from tests.reliability.conftest import Record
from tests.test_local_agent import collect_until_finished, make_agent, run_and_collect, titles

DEPTH = 2_000
BOTTOM_NOTE = "# Deep notes\n\n- [ ] Luis to renew the bakery insurance by Friday\n"
TOP_NOTE = "# Top notes\n\n- [ ] Priya to order new flour sacks\n"


_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


def build_tree(root: Path, depth: int, files: dict[int, tuple[str, str]] | None = None
               ) -> Path:
    """``root/d/d/…/d`` ``depth`` levels down, made one level at a time through folder
    descriptors (os.makedirs recurses, and a path may outgrow PATH_MAX); ``files`` puts
    ``(name, text)`` at a level. Returns the bottom folder's path."""
    files = files or {}
    fd = os.open(root, _DIR)
    try:
        for level in range(1, depth + 1):
            os.mkdir("d", dir_fd=fd)
            below = os.open("d", _DIR, dir_fd=fd)
            os.close(fd)
            fd = below
            if level in files:
                name, text = files[level]
                out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
                os.write(out, text.encode())
                os.close(out)
    finally:
        os.close(fd)
    return root.joinpath(*["d"] * depth)


def remove_tree(top: Path) -> None:
    """Depth first through folder descriptors, one open at a time, without recursion:
    pytest's clean-up (shutil.rmtree) recurses and would raise RecursionError on these
    trees in every later session that sweeps old folders."""
    fd = os.open(top, _DIR)
    names: list[str] = []
    while True:
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        sub = next((name for name, is_dir in entries if is_dir), None)
        for name, is_dir in entries:
            if not is_dir:
                os.unlink(name, dir_fd=fd)
        if sub is not None:
            below = os.open(sub, _DIR, dir_fd=fd)
            os.close(fd)
            fd, names = below, [*names, sub]
            continue
        if not names:
            os.close(fd)
            break
        above = os.open("..", _DIR, dir_fd=fd)
        os.close(fd)
        fd = above
        os.rmdir(names.pop(), dir_fd=fd)
    os.rmdir(top)


@pytest.fixture
def deep_root(tmp_path: Path) -> Iterator[Path]:
    root = Path(os.path.realpath(tmp_path)) / "t"
    root.mkdir()
    try:
        yield root
    finally:
        remove_tree(root)


@pytest.fixture
async def daemon_deep(data_dir: Path, token: str, model_dir: Path, default_model: Path
                      ) -> AsyncIterator[DaemonProcess]:
    d = await DaemonProcess.start(data_dir, token=token, extra_args=[
        "--model-dir", str(model_dir), "--watch-quiet-seconds", "0.4",
        "--watch-poll-seconds", "0.5"])
    try:
        yield d
    finally:
        await d.stop()


async def test_a_2000_level_tree_is_scanned_and_its_bottom_file_delivered(
        deep_root: Path, daemon_deep: DaemonProcess, figure: Record) -> None:
    root = deep_root
    bottom = build_tree(root, DEPTH)
    (bottom / "deep.md").write_text(BOTTOM_NOTE)
    (root / "top.md").write_text(TOP_NOTE)
    deepest = bottom / "deep.md"
    assert len(str(deepest).encode()) < os.pathconf(root, "PC_PATH_MAX"), "test tree too long"

    c: SidecarClient = await daemon_deep.connect()
    try:
        await c.hello()
        agent = await make_agent(c, root)
        run, calls = await run_and_collect(c, agent["id"], timeout=300)
        assert run["status"] == "success", run
        assert run["items_processed"] == 2, run
        got = titles(calls)
        assert any("insurance" in t for t in got), got
        assert any("flour" in t for t in got), got
        deep_calls = [f for f in calls if "insurance" in titles([f])[0]]
        assert deep_calls[0]["source"]["path"] == str(deepest), deep_calls[0]["source"]

        again, calls2 = await run_and_collect(c, agent["id"], timeout=300)
        assert again["status"] == "success" and again["items_processed"] == 0 and calls2 == []
    finally:
        await c.close()
    figure("deep tree", "folder depth scanned (run success, bottom file delivered)", DEPTH)
    figure("deep tree", "path length of the bottom file (bytes)", len(str(deepest).encode()))


async def test_a_watched_2000_level_tree_is_polled_and_a_new_bottom_file_arrives(
        deep_root: Path, daemon_deep: DaemonProcess, figure: Record) -> None:
    """watchdog's own observers walk folders recursively and die in such a tree: the agent
    polls with a walk that does not recurse, says why, and stays scheduled."""
    bottom = build_tree(deep_root, DEPTH)
    c: SidecarClient = await daemon_deep.connect()
    try:
        await c.hello()
        agent = await make_agent(c, deep_root, watch=True)
        status = await c.request({"type": "status"})
        line = next(a for a in status["agents"] if a["id"] == agent["id"])
        assert line["watch_mode"] == "polling", line
        assert "too deep" in line["watch_reason"], line
        assert line["scheduled"] is True, line

        t0 = time.monotonic()
        (bottom / "new.md").write_text(BOTTOM_NOTE)
        while True:  # the new agent's catch-up run may come first
            run, calls = await collect_until_finished(c, None, timeout=120)
            if run["trigger"] == "watch":
                break
        took = time.monotonic() - t0
        assert run["status"] == "success", run["errors"]
        assert any("insurance" in t for t in titles(calls)), titles(calls)
    finally:
        await c.close()
    figure("deep tree", "watched 2,000-level tree: mode (reason)",
           f"{line['watch_mode']} ({line['watch_reason']})")
    figure("deep tree", "new bottom file → record, polling 0.5 s (s)", round(took, 1))


async def test_a_tree_deeper_than_path_max_is_refused_below_the_limit_and_the_rest_arrives(
        deep_root: Path, daemon_deep: DaemonProcess, data_dir: Path, figure: Record) -> None:
    """3,000 levels: paths below level ~2,040 outgrow PATH_MAX (4,096 bytes), so nothing can
    open them by name. The folder where that happens is refused with its own reason, once;
    the file above it is delivered and the run is not an error."""
    depth = 3_000
    build_tree(deep_root, depth, files={1_500: ("mid.md", BOTTOM_NOTE),
                                        2_900: ("unreachable.md", TOP_NOTE)})
    limit = os.pathconf(deep_root, "PC_PATH_MAX")
    assert len(str(deep_root)) + 2 * depth > limit  # the test really passes the limit
    c: SidecarClient = await daemon_deep.connect()
    try:
        await c.hello()
        agent = await make_agent(c, deep_root)
        run, calls = await run_and_collect(c, agent["id"], timeout=300)
        assert run["status"] == "partial", run  # not "error": the rest of the tree arrived
        assert any("insurance" in t for t in titles(calls)), titles(calls)
        assert not any("flour" in t for t in titles(calls)), titles(calls)
        # the run log in SQLite keeps the line whole; frames clip a 4 KB path
        with sqlite3.connect(f"file:{data_dir / 'sidecar.sqlite3'}?mode=ro", uri=True) as db:
            (logged,) = db.execute("SELECT errors FROM runs WHERE id = ?",
                                   (run["id"],)).fetchone()
        logged = json.loads(logged)
        refused = [e for e in logged if "(skipped: path_too_long)" in e]
        assert len(refused) == 1 and len(logged) == 1, logged
        assert run["errors_total"] == 1 and run["errors"][0].endswith("(skipped: path_too_long)")
        level = refused[0].split(":", 1)[0].count("/d")
        status = await c.request({"type": "status"})
        shown = next(a for a in status["agents"] if a["id"] == agent["id"])["last_run"]
        # a 4 KB path is not sent whole in every reply; the reason at its end still is
        assert len(shown["errors"][0]) < 1000 < len(refused[0]), shown["errors"]
        assert shown["errors"][0].endswith("(skipped: path_too_long)"), shown["errors"]
        again, calls2 = await run_and_collect(c, agent["id"], timeout=300)
        assert again["status"] == "success" and again["errors"] == [] and calls2 == [], again
    finally:
        await c.close()
    figure("deep tree", "3,000-level tree: first folder refused (path_too_long) at level",
           level)
