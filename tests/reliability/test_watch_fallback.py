"""A used-up inotify limit: the daemon and the agent go on, that agent polls, and says so.

The limit is really used up, not simulated: the daemon runs as a user id of its own
(``setpriv``), and a helper process running as that same user holds inotify instances until
the kernel refuses one more (``fs.inotify.max_user_instances`` counts per user, so the
other processes on this machine keep theirs). The daemon then cannot create a single
inotify instance. Because the daemon is not root it cannot read root's model file, so the
engine is a fake OpenAI-compatible server on loopback (tests/fakes/openai_server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sidecar.client import DaemonProcess, SidecarClient
from tests.fakes.openai_server import FakeOpenAI, echo_first_line
from tests.reliability.conftest import Record
from tests.test_local_agent import collect_until_finished, titles

needs_other_user = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("setpriv"),
    reason="needs Linux, root and setpriv to run the daemon as a user of its own")

#: Holds inotify instances as the current user until the kernel says EMFILE, reports how
#: many it holds on stdout, then keeps them until its stdin closes.
_HOG = r"""
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while True:
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        break
    fds.append(fd)
print(len(fds), errno.errorcode.get(err, err), flush=True)
sys.stdin.read()
"""


#: Adds inotify watches as the current user until the kernel says ENOSPC (the per-user
#: watch limit, fs.inotify.max_user_watches), keeping one instance free for the daemon;
#: reports how many it holds, then keeps them until its stdin closes.
_WATCH_HOG = r"""
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
base = sys.argv[1]
dirs = []
for i in range(4000):
    d = os.path.join(base, str(i))
    os.mkdir(d)
    dirs.append(os.fsencode(d))
held, err, fds = 0, None, []
while err is None:
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        break
    fds.append(fd)
    for d in dirs:
        if libc.inotify_add_watch(fd, d, 0x2) < 0:  # IN_MODIFY
            err = ctypes.get_errno()
            break
        held += 1
if err == errno.EMFILE:  # instances ran out first: leave one for the daemon
    os.close(fds.pop())
print(held, errno.errorcode.get(err, err), flush=True)
sys.stdin.read()
"""


@dataclass
class OtherUser:
    """A user id no one else uses, and a folder it owns (under /tmp, which it can reach)."""

    uid: int
    base: Path

    def command(self, *argv: str) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                *argv]

    def mkdir(self, name: str) -> Path:
        d = self.base / name
        d.mkdir()
        os.chown(d, self.uid, self.uid)
        return d

    def env(self) -> dict[str, str]:
        return {"HOME": str(self.base / "home"), "SIDECAR_REMOTE_API_KEY": "not-a-secret"}

    async def daemon(self, data_dir: Path, token: str, *extra: str) -> DaemonProcess:
        return await DaemonProcess.start(
            data_dir, token=token, env=self.env(),
            command=self.command(sys.executable, "-m", "sidecar"),
            extra_args=["--watch-quiet-seconds", "0.3", "--watch-poll-seconds", "0.5", *extra])


@pytest.fixture
def other_user() -> Iterator[OtherUser]:
    uid = 62_000 + secrets.randbelow(3_000)
    base = Path(tempfile.mkdtemp(prefix="sidecar-u", dir="/tmp"))
    os.chmod(base, 0o755)
    user = OtherUser(uid, base)
    user.mkdir("home")
    try:
        yield user
    finally:
        shutil.rmtree(base, ignore_errors=True)


class InotifyHog:
    """Every inotify instance (or watch) ``user`` may have, held by a process of that user."""

    def __init__(self, user: OtherUser, *, watches: bool = False) -> None:
        argv = [sys.executable, "-c", _HOG]
        if watches:
            argv = [sys.executable, "-c", _WATCH_HOG, str(user.mkdir("watched-by-hog"))]
        self.proc = subprocess.Popen(user.command(*argv), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        held, err = self.proc.stdout.readline().split()
        self.held, self.errno = int(held), err

    def release(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def inotify_hog(other_user: OtherUser) -> Iterator[Any]:
    hogs: list[InotifyHog] = []

    def take(*, watches: bool = False) -> InotifyHog:
        hog = InotifyHog(other_user, watches=watches)
        hogs.append(hog)
        return hog

    try:
        yield take
    finally:
        for hog in hogs:
            hog.release()


@pytest.fixture
async def engine() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI(echo_first_line).start()
    try:
        yield fake
    finally:
        await fake.close()


async def save_watched_agent(c: SidecarClient, folder: Path, engine: FakeOpenAI
                             ) -> dict[str, Any]:
    reply = await c.request({"type": "agent_upsert", "agent": {
        "kind": "local", "name": "Watched", "directories": [str(folder)],
        "extensions": [".md"], "data_types": ["tasks"], "schedule_cron": "0 3 * * *",
        "watch": True, "engine": "remote",
        "remote": {"base_url": engine.url, "model": "fake"}}})
    assert reply["type"] == "agent_upsert_result", reply
    return reply["agent"]


async def agent_line(c: SidecarClient, agent_id: str) -> dict[str, Any]:
    status = await c.request({"type": "status"})
    return next(a for a in status["agents"] if a["id"] == agent_id)


async def new_file_arrives(c: SidecarClient, folder: Path, name: str, title: str
                           ) -> tuple[dict[str, Any], float]:
    """Write a file; return the watch run that delivered its record and the seconds taken
    (a catch-up run of the new agent, or the rescan after a switch back to native
    watching, may come and go first, empty)."""
    t0 = time.monotonic()
    (folder / name).write_text(f"- [ ] {title}\n")
    while True:
        run, calls = await collect_until_finished(c, None, timeout=60)
        if run["trigger"] == "watch" and calls:
            break
        assert run["status"] == "success" and not calls, (run, run["errors"])
    took = time.monotonic() - t0
    assert run["status"] == "success", run["errors"]
    assert titles(calls) == [title.lower()], titles(calls)
    return run, took


@needs_other_user
async def test_an_agent_saved_while_inotify_is_used_up_polls_is_scheduled_and_delivers(
        other_user: OtherUser, inotify_hog: Any, engine: FakeOpenAI, token: str,
        figure: Record) -> None:
    data_dir = other_user.mkdir("data")
    folder = other_user.mkdir("docs")
    d = await other_user.daemon(data_dir, token)
    try:
        hog = inotify_hog()
        assert hog.errno == "EMFILE" and hog.held > 0, (hog.held, hog.errno)
        c = await d.connect()
        try:
            await c.hello()
            agent = await save_watched_agent(c, folder, engine)  # today: an error frame
            line = await agent_line(c, agent["id"])
            assert line["scheduled"] is True, line  # today: stored but never scheduled
            assert line["next_run_at"], line
            assert line["watch_mode"] == "polling", line
            assert "max_user_instances" in line["watch_reason"], line
            _, took = await new_file_arrives(c, folder, "new.md", "Call Dana about the oven")
        finally:
            await c.close()
    finally:
        await d.stop()
    assert any("max_user_instances" in x and "polling" in x for x in d.stderr_lines), \
        d.stderr_lines[-20:]
    figure("inotify used up", "instances held before the agent was saved", hog.held)
    figure("inotify used up", "agent saved: watch mode (scheduled)",
           f"{line['watch_mode']} ({line['scheduled']})")
    figure("inotify used up", "new file → record, polling 0.5 s (s)", round(took, 1))


@needs_other_user
async def test_an_agent_saved_while_the_inotify_watch_limit_is_used_up_polls_and_delivers(
        other_user: OtherUser, inotify_hog: Any, engine: FakeOpenAI, token: str,
        figure: Record) -> None:
    data_dir = other_user.mkdir("data")
    folder = other_user.mkdir("docs")
    d = await other_user.daemon(data_dir, token)
    try:
        hog = inotify_hog(watches=True)
        assert hog.errno == "ENOSPC" and hog.held > 0, (hog.held, hog.errno)
        c = await d.connect()
        try:
            await c.hello()
            agent = await save_watched_agent(c, folder, engine)
            line = await agent_line(c, agent["id"])
            assert line["watch_mode"] == "polling", line
            assert "max_user_watches" in line["watch_reason"], line
            assert line["scheduled"] is True, line
            _, took = await new_file_arrives(c, folder, "w.md", "Check the freezer seals")
        finally:
            await c.close()
    finally:
        await d.stop()
    figure("inotify used up", "watches held (max_user_watches used up)", hog.held)
    figure("inotify used up", "watch limit: new file → record, polling (s)", round(took, 1))


@needs_other_user
async def test_a_new_folder_made_after_the_watch_limit_ran_out_is_not_left_unwatched(
        other_user: OtherUser, inotify_hog: Any, engine: FakeOpenAI, token: str,
        figure: Record) -> None:
    """The agent watched natively; then the limit ran out and the user made a folder. The
    native watcher cannot watch it (watchdog only logs that), so a file saved there later
    was never seen: the agent polls instead, and the file arrives."""
    data_dir = other_user.mkdir("data")
    folder = other_user.mkdir("docs")
    # watchdog only logs the failure, as a warning: a quiet log must not hide it
    d = await other_user.daemon(data_dir, token, "--log-level", "error")
    try:
        c = await d.connect()
        try:
            await c.hello()
            agent = await save_watched_agent(c, folder, engine)
            assert (await agent_line(c, agent["id"]))["watch_mode"] == "inotify"
            await new_file_arrives(c, folder, "before.md", "Label the spice jars")
            hog = inotify_hog(watches=True)
            assert hog.errno == "ENOSPC", hog.errno
            (folder / "new-folder").mkdir()
            # the new folder alone makes a rescan (it finds nothing yet); the file comes after
            rescan, calls = await collect_until_finished(c, None, timeout=60)
            assert rescan["trigger"] == "watch" and not calls, rescan
            _, took = await new_file_arrives(c, folder / "new-folder", "inside.md",
                                             "Call the flour mill")
            line = await agent_line(c, agent["id"])
            assert line["watch_mode"] == "polling", line
            assert "max_user_watches" in line["watch_reason"], line
        finally:
            await c.close()
    finally:
        await d.stop()
    figure("inotify used up", "watch limit hit after start: file in a new folder → record (s)",
           round(took, 1))


@needs_other_user
async def test_the_daemon_starts_with_inotify_used_up_and_that_agent_polls(
        other_user: OtherUser, inotify_hog: Any, engine: FakeOpenAI, token: str,
        figure: Record) -> None:
    data_dir = other_user.mkdir("data")
    folder = other_user.mkdir("docs")
    d = await other_user.daemon(data_dir, token)
    try:
        c = await d.connect()
        await c.hello()
        agent = await save_watched_agent(c, folder, engine)
        line = await agent_line(c, agent["id"])
        assert line["watch_mode"] == "inotify" and line["watch_reason"] is None, line
        await c.close()
    finally:
        await d.stop()

    hog = inotify_hog()
    assert hog.errno == "EMFILE" and hog.held > 0, (hog.held, hog.errno)
    t0 = time.monotonic()
    d = await other_user.daemon(data_dir, token)  # today: a traceback and no ready line
    started = time.monotonic() - t0
    try:
        c = await d.connect()
        try:
            await c.hello()
            line = await agent_line(c, agent["id"])
            assert line["watch_mode"] == "polling", line
            assert "max_user_instances" in line["watch_reason"], line
            assert line["scheduled"] is True and line["next_run_at"], line
            _, took = await new_file_arrives(c, folder, "after.md", "Order more flour")
        finally:
            await c.close()
    finally:
        await d.stop()
    figure("inotify used up", "daemon start-up with the limit used up (s)", round(started, 1))
    figure("inotify used up", "after restart: new file → record, polling (s)", round(took, 1))



@needs_other_user
async def test_native_watching_comes_back_when_the_limit_frees(
        other_user: OtherUser, inotify_hog: Any, engine: FakeOpenAI, token: str,
        figure: Record) -> None:
    """Polling is a fallback, not a sentence: once an editor closes its instances the agent
    watches natively again (tried every minute), with nothing missed in between."""
    data_dir = other_user.mkdir("data")
    folder = other_user.mkdir("docs")
    d = await other_user.daemon(data_dir, token)
    try:
        hog = inotify_hog()
        assert hog.errno == "EMFILE", hog.errno
        c = await d.connect()
        try:
            await c.hello()
            agent = await save_watched_agent(c, folder, engine)
            assert (await agent_line(c, agent["id"]))["watch_mode"] == "polling"
            hog.release()
            t0 = time.monotonic()
            while (line := await agent_line(c, agent["id"]))["watch_mode"] != "inotify":
                assert time.monotonic() - t0 < 120, line
                await asyncio.sleep(0.5)
            back = time.monotonic() - t0
            assert line["watch_reason"] is None, line
            await new_file_arrives(c, folder, "back.md", "Sweep the bakery floor")
        finally:
            await c.close()
    finally:
        await d.stop()
    assert any("native folder watching works again" in x for x in d.stderr_lines)
    figure("inotify used up", "limit freed → native watching again (s)", round(back, 1))


async def test_a_failed_run_start_does_not_end_the_watching(tmp_path: Path) -> None:
    """A store that refused one run start (locked, disk full) used to end the watcher's task
    for good: every later change went unseen until a restart."""
    from sidecar.domain import validate_agent
    from sidecar.watcher import FolderWatcher

    started: asyncio.Queue[set[str] | None] = asyncio.Queue()
    refusals = ["database is locked"]

    async def start_run(agent_id: str, trigger: str, only: set[str] | None
                        ) -> tuple[str, bool]:
        if refusals:
            raise RuntimeError(refusals.pop())
        await started.put(only)
        return f"r{started.qsize()}", False

    async def wait_run(run_id: str) -> None:
        return None

    agent = validate_agent({"kind": "local", "name": "w", "directories": [str(tmp_path)],
                            "watch": True})
    w = FolderWatcher(agent, start_run, wait_run, quiet_seconds=0.1, health_interval=0.1)
    await w.start()
    try:
        (tmp_path / "a.md").write_text("- [ ] first\n")
        # the refused start is made good by a full rescan …
        assert await asyncio.wait_for(started.get(), 10) is None and not refusals
        (tmp_path / "b.md").write_text("- [ ] second\n")  # … and watching goes on
        assert await asyncio.wait_for(started.get(), 10) == {str((tmp_path / "b.md").resolve())}
    finally:
        await w.stop()
