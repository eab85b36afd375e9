"""The folder watcher on its own: polling mode for network folders, recovery when it dies."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path

from sidecar.domain import validate_agent
from sidecar.watcher import FolderWatcher


class Calls:
    def __init__(self, watch_size_of: Path | None = None) -> None:
        self.runs: list[set[str] | None] = []
        self.event = asyncio.Event()
        self.watch_size_of = watch_size_of
        self.sizes: list[int] = []  # the watched file's size when each run was asked for
        self.times: list[float] = []

    async def start_run(self, agent_id: str, trigger: str, only: set[str] | None
                        ) -> tuple[str, bool]:
        assert trigger == "watch"
        self.runs.append(only)
        self.times.append(time.monotonic())
        if self.watch_size_of is not None:
            self.sizes.append(os.stat(self.watch_size_of).st_size)
        self.event.set()
        return f"r{len(self.runs)}", False

    async def wait_run(self, run_id: str) -> None:
        return None

    async def next(self, timeout: float = 10) -> set[str] | None:
        await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()
        return self.runs[-1]


def agent_for(folder: Path, **extra: object):  # type: ignore[no-untyped-def]
    return validate_agent({"kind": "local", "name": "w", "directories": [str(folder)],
                           "watch": True, **extra})


async def test_polling_mode_sees_new_files(tmp_path: Path) -> None:
    calls = Calls()
    w = FolderWatcher(agent_for(tmp_path, poll=True), calls.start_run, calls.wait_run,
                      quiet_seconds=0.2, poll_interval=0.2)
    await w.start()
    try:
        type_name = type(w._observer).__name__
        assert type_name == "PollingObserver", type_name
        (tmp_path / "a.md").write_text("- [ ] Call Dana\n")
        only = await calls.next()
        assert only == {str((tmp_path / "a.md").resolve())}
    finally:
        await w.stop()


async def test_a_dead_observer_is_restarted_and_followed_by_a_full_rescan(tmp_path: Path
                                                                         ) -> None:
    calls = Calls()
    w = FolderWatcher(agent_for(tmp_path), calls.start_run, calls.wait_run, quiet_seconds=0.1,
                      health_interval=0.1)
    await w.start()
    try:
        dead = w._observer
        await asyncio.to_thread(lambda: (dead.stop(), dead.join(5)))  # overflow, drive gone…
        assert await calls.next() is None  # None: a full rescan, nothing missed
        assert w.restarts == 1 and w._observer is not dead and w._observer.is_alive()
        (tmp_path / "after.md").write_text("x")  # and watching goes on
        assert await calls.next() == {str((tmp_path / "after.md").resolve())}
    finally:
        await w.stop()


async def test_moves_report_both_ends(tmp_path: Path) -> None:
    (tmp_path / "old.md").write_text("x")
    calls = Calls()
    w = FolderWatcher(agent_for(tmp_path), calls.start_run, calls.wait_run, quiet_seconds=0.2)
    await w.start()
    try:
        await asyncio.sleep(0.2)
        (tmp_path / "old.md").rename(tmp_path / "new.md")
        only = await calls.next()
        real = tmp_path.resolve()
        assert only is not None and {str(real / "old.md"), str(real / "new.md")} <= only
    finally:
        await w.stop()


async def test_a_file_still_growing_after_the_events_went_quiet_is_not_run_half_written(
        tmp_path: Path) -> None:
    """A network folder (polling): events come once per poll, the copy goes on in between.

    The watcher sees no event for longer than its quiet period while the file still grows;
    only the file's size and mtime tell it the copy is not done.
    """
    quiet, poll, step, lines = 0.6, 2.0, 0.04, 150  # the copy takes ~6 s: three polls
    target = tmp_path / "report.md"
    calls = Calls(watch_size_of=target)
    w = FolderWatcher(agent_for(tmp_path, poll=True), calls.start_run, calls.wait_run,
                      quiet_seconds=quiet, poll_interval=poll)
    events: list[float] = []
    on_event = w._on_event

    def seen(paths: list[str], is_dir: bool) -> None:
        events.append(time.monotonic())
        on_event(paths, is_dir)

    w._on_event = seen  # type: ignore[method-assign]
    await w.start()
    try:
        def copy() -> tuple[float, float, float]:
            gaps, start = [], time.monotonic()
            with target.open("w", encoding="utf-8") as f:
                for i in range(lines):
                    t = time.monotonic()
                    f.write(f"- [ ] Line {i:04} of the quarterly report, still arriving\n")
                    f.flush()
                    time.sleep(step)
                    gaps.append(time.monotonic() - t)
            return start, time.monotonic(), max(gaps)

        started, finished, longest_write_gap = await asyncio.to_thread(copy)
        final = target.stat().st_size
        await calls.next(timeout=poll * 3 + quiet * 3)
        # preconditions: the writer never paused as long as the quiet period, yet the
        # watcher's events did (so only the size check can keep it waiting)
        assert longest_write_gap < quiet, longest_write_gap
        during = [t for t in events if started <= t <= finished]
        gaps = [b - a for a, b in itertools.pairwise(during)]
        assert during and (max(gaps, default=0) > quiet or finished - during[-1] > quiet), (
            "the events never went quiet during the copy", during)
        assert finished - started > poll + quiet
        assert calls.times[0] >= finished, "a run was asked for while the file was being written"
        assert calls.sizes[0] == final, (calls.sizes, final)
        assert calls.runs[0] == {str(target.resolve())}
    finally:
        await w.stop()


async def test_a_folder_moved_in_rescans_everything(tmp_path: Path) -> None:
    """Its files were never reported one by one: only a full rescan is sure to see them all."""
    watched, outside = tmp_path / "watched", tmp_path / "outside"
    watched.mkdir()
    (outside / "Client A" / "2025").mkdir(parents=True)
    (outside / "Client A" / "brief.md").write_text("- [ ] Send the quote to Dana\n")
    (outside / "Client A" / "2025" / "notes.md").write_text("- [ ] Book the venue\n")
    calls = Calls()
    w = FolderWatcher(agent_for(watched), calls.start_run, calls.wait_run, quiet_seconds=0.2)
    await w.start()
    try:
        await asyncio.sleep(0.3)
        assert calls.runs == []  # precondition: nothing ran before the move
        (outside / "Client A").rename(watched / "Client A")
        assert (watched / "Client A" / "2025" / "notes.md").is_file()
        assert await calls.next() is None  # None: the whole tree is scanned
        assert calls.runs == [None]
    finally:
        await w.stop()
