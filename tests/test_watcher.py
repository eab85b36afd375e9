"""The folder watcher on its own: polling mode for network folders, recovery when it dies."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sidecar.agents import validate_agent
from sidecar.watcher import FolderWatcher


class Calls:
    def __init__(self) -> None:
        self.runs: list[set[str] | None] = []
        self.event = asyncio.Event()

    async def start_run(self, agent_id: str, trigger: str, only: set[str] | None
                        ) -> tuple[str, bool]:
        assert trigger == "watch"
        self.runs.append(only)
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
