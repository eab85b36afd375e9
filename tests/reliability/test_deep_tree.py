"""A 2,000-level folder tree: the scan walks it without recursion and the bottom file arrives.

The scan used to recurse once per folder and raised RecursionError at about 500 levels, so
every run of such an agent ended ``error`` with 0 records. Here the real daemon (real model)
runs an agent over a tree 2,000 folders deep with a meeting note at the bottom and one at
the top; both must be extracted and delivered, and a rescan must be free.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sidecar.client import DaemonProcess, SidecarClient
from tests.reliability.conftest import Record
from tests.test_local_agent import make_agent, run_and_collect, titles

DEPTH = 2_000
BOTTOM_NOTE = "# Deep notes\n\n- [ ] Luis to renew the bakery insurance by Friday\n"
TOP_NOTE = "# Top notes\n\n- [ ] Priya to order new flour sacks\n"


def build_tree(root: Path, depth: int) -> Path:
    """``root/d/d/…/d`` ``depth`` levels down, made one level at a time (os.makedirs
    recurses too); returns the bottom folder."""
    path = str(root)
    for _ in range(depth):
        path = os.path.join(path, "d")
        os.mkdir(path)
    return Path(path)


def remove_tree(top: Path) -> None:
    """Bottom-up, without recursion: pytest's own clean-up (shutil.rmtree) recurses and
    would raise RecursionError on this tree in every later session that sweeps old dirs."""
    order: list[str] = []
    stack = [str(top)]
    while stack:
        d = stack.pop()
        order.append(d)
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    os.unlink(e.path)
    for d in reversed(order):
        os.rmdir(d)


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
        "--model-dir", str(model_dir), "--watch-quiet-seconds", "0.4"])
    try:
        yield d
    finally:
        await d.stop()


async def test_a_2000_level_tree_is_scanned_and_its_bottom_file_delivered(
        daemon_deep: DaemonProcess, deep_root: Path, figure: Record) -> None:
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
