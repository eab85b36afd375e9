"""Start-up faults: each one ends the real daemon within 2 s with a fatal line and its exit code.

Every case spawns ``sidecar serve`` as Electron does and reads its first stdout line. Instead
of the ready line it must be ``{"event":"fatal","code":N,"error":"…","message":"…"}``; the
process must exit with that N within 2 s of the line, print the same message as one line on
stderr and no traceback. The faults are real: a second process holding ``BEGIN IMMEDIATE``
(or an exclusive lock) on the database, a read-only database file, unwritable data and log
directories, a folder where the database should be, a damaged file, a parent that is gone.
The tests run as root, whom file modes do not stop; where a mode is the fault, the daemon is
started without the capabilities that let root ignore modes (``setpriv --bounding-set``), as
an ordinary user's process would be. The expected codes are the documented ones, written
here by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.taskdocs import make_agent

Figure = Callable[[str, str, Any], None]

#: root without the capabilities that bypass file modes (what an ordinary user has)
AS_USER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
TOKEN = "tok-startup-faults-0123456789"


@dataclass
class Outcome:
    line: dict[str, Any]
    returncode: int
    stdout_rest: bytes
    stderr: list[str]
    line_s: float  # spawn → fatal line
    exit_after_line_s: float  # fatal line → process gone

    @property
    def total_s(self) -> float:
        return self.line_s + self.exit_after_line_s


async def start(data_dir: Path, *, log_dir: Path | None = None, prefix: Sequence[str] = (),
                extra: Sequence[str] = (), env: dict[str, str] | None = None,
                on_spawn: Callable[[int], Awaitable[None]] | None = None) -> Outcome:
    """Spawn the daemon; its first stdout line, exit code, timing, and everything else."""
    cmd = [*prefix, sys.executable, "-m", "sidecar", "serve", "--port", "0",
           "--data-dir", str(data_dir), "--log-dir", str(log_dir or data_dir / "logs"), *extra]
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env={**os.environ, "SIDECAR_TOKEN": TOKEN, **(env or {})})
    assert proc.stdout is not None and proc.stderr is not None
    try:
        if on_spawn is not None:
            await asyncio.wait_for(on_spawn(proc.pid), 30)
        raw = await asyncio.wait_for(proc.stdout.readline(), 30)
        t_line = time.monotonic()
        await asyncio.wait_for(proc.wait(), 15)  # a hang guard, not the 2 s check
        t_exit = time.monotonic()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        err = (await proc.stderr.read()).decode(errors="replace")
        raise AssertionError(f"the daemon did not exit; stderr: {err[-1500:]}") from None
    rest = await proc.stdout.read()
    err = (await proc.stderr.read()).decode(errors="replace").splitlines()
    assert raw, f"exit {proc.returncode} without any stdout line; stderr: {err[-10:]}"
    return Outcome(json.loads(raw), proc.returncode or 0, rest, err, t_line - t0,
                   t_exit - t_line)


def check_fatal(o: Outcome, code: int, error: str) -> str:
    """The contract every start-up fault keeps; returns the message."""
    assert o.line.get("event") == "fatal", o.line
    assert set(o.line) == {"event", "code", "error", "message"}, o.line
    assert (o.line["code"], o.line["error"], o.returncode) == (code, error, code), \
        (o.line, o.returncode, o.stderr[-5:])
    message = o.line["message"]
    assert isinstance(message, str) and message and "\n" not in message
    assert o.stdout_rest == b"", "nothing may follow the fatal line on stdout"
    assert not any("Traceback" in line for line in o.stderr), "\n".join(o.stderr)
    said = [line for line in o.stderr if line.startswith("sidecar: ")]
    assert said == [f"sidecar: {message}"], o.stderr
    assert TOKEN not in "\n".join(o.stderr) + json.dumps(o.line)
    assert o.exit_after_line_s < 2.0, f"exited {o.exit_after_line_s:.2f}s after the fatal line"
    from sidecar.lifecycle import FATAL_ERRORS  # docs/protocol.md's table

    assert (error, code) in {(e, c) for e, c, _ in FATAL_ERRORS}, "undocumented"
    return message


@pytest.fixture
async def healthy_db(data_dir: Path, tmp_path: Path) -> AsyncIterator[Path]:
    """The database a previous daemon left: schema, WAL mode, one agent ("Kept")."""
    from sidecar.client import DaemonProcess

    folder = tmp_path / "kept"
    folder.mkdir()
    d = await DaemonProcess.start(data_dir, token=TOKEN)
    try:
        c = await d.connect()
        await make_agent(c, folder, "Kept")
        await c.close()
    finally:
        assert await d.stop() == 0
    path = data_dir / "sidecar.sqlite3"
    yield path
    if path.exists():
        path.chmod(0o600)


class Holder:
    """A second process with the database open and a write lock held, until stopped."""

    def __init__(self, db: Path, how: str) -> None:
        script = ("import sqlite3, sys, time\n"
                  f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
                  + ("c.execute('PRAGMA locking_mode=EXCLUSIVE')\nc.execute('BEGIN EXCLUSIVE')\n"
                     "c.execute('SELECT count(*) FROM sqlite_master').fetchall()\n"
                     if how == "exclusive" else "c.execute('BEGIN IMMEDIATE')\n")
                  + "print('holding', flush=True)\ntime.sleep(120)\n")
        self.proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == b"holding"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.mark.parametrize("how", ["begin_immediate", "exclusive"])
async def test_database_locked_by_another_process(data_dir: Path, healthy_db: Path, how: str,
                                                  figure: Figure) -> None:
    holder = Holder(healthy_db, how)
    try:
        o = await start(data_dir)
    finally:
        holder.stop()
    message = check_fatal(o, 6, "database_locked")
    assert "locked" in message and str(healthy_db) in message
    assert f"pid {holder.proc.pid}" in message, "the holder is named (Linux /proc/locks)"
    lowered = message.lower()
    assert "move it aside" not in lowered and "damaged" not in lowered.replace(
        "not damaged", "") and "not a valid" not in lowered, message
    # the file was fine all along: once the holder is gone the daemon starts on it
    from sidecar.client import DaemonProcess

    d = await DaemonProcess.start(data_dir, token=TOKEN)
    try:
        c = await d.connect()
        agents = (await c.request({"type": "agent_list"}))
        assert [a["name"] for a in agents["agents"]] == ["Kept"], agents
        await c.close()
    finally:
        await d.stop()
    figure("start-up faults", f"database locked ({how}): exit 6, s from spawn",
           round(o.total_s, 2))


async def test_an_upgrade_waits_for_a_program_holding_the_old_database(
        data_dir: Path, healthy_db: Path, figure: Figure) -> None:
    """A database from the version before (schema v3: no held records yet) that another
    program holds when the new version starts: exit 6, the file is left as it was (still v3,
    the agent kept), and the next start migrates it."""
    from sidecar.client import DaemonProcess
    from sidecar.store.migrations import LATEST

    db = healthy_db
    assert LATEST == 4, "undo the newer migrations here too"
    con = sqlite3.connect(db, isolation_level=None)  # what v3 left: migration 4 undone
    con.executescript("DROP TABLE held; DROP TABLE thread_tasks; "
                      "ALTER TABLE outbox DROP COLUMN result_id; PRAGMA user_version = 3;")
    con.close()
    holder = Holder(db, "begin_immediate")
    try:
        o = await start(data_dir)
    finally:
        holder.stop()
    message = check_fatal(o, 6, "database_locked")
    assert "locked" in message and str(db) in message
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 3
    assert con.execute("SELECT name FROM sqlite_master WHERE name = 'held'").fetchall() == []
    con.close()
    d = await DaemonProcess.start(data_dir, token=TOKEN)
    try:
        c = await d.connect()
        agents = await c.request({"type": "agent_list"})
        assert [a["name"] for a in agents["agents"]] == ["Kept"], agents
        await c.close()
    finally:
        await d.stop()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == LATEST
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    figure("start-up faults", "v3 database locked during the upgrade: exit 6, s from spawn",
           round(o.total_s, 2))


async def test_read_only_database_file(data_dir: Path, healthy_db: Path,
                                       figure: Figure) -> None:
    healthy_db.chmod(0o444)
    o = await start(data_dir, prefix=AS_USER)
    message = check_fatal(o, 4, "database_read_only")
    assert "read-only" in message and str(healthy_db) in message
    assert "move it aside" not in message
    mode = healthy_db.stat().st_mode & 0o777
    assert mode == 0o400, f"{mode:o}: still read-only for its owner, private to them"
    figure("start-up faults", "read-only database file: exit 4, s from spawn",
           round(o.total_s, 2))


async def test_immutable_database_file_even_for_root(data_dir: Path, healthy_db: Path,
                                                     figure: Figure) -> None:
    """``chattr +i``: not even root may write (or chmod) it; the daemon, as root, says
    read-only (0644 left by an older version: tightening it fails too, and is not fatal)."""
    healthy_db.chmod(0o644)
    r = subprocess.run(["chattr", "+i", str(healthy_db)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"chattr +i not supported here: {r.stderr.strip()}")
    try:
        o = await start(data_dir)
    finally:
        subprocess.run(["chattr", "-i", str(healthy_db)], check=True)
    message = check_fatal(o, 4, "database_read_only")
    assert "immutable" in message and "move it aside" not in message
    figure("start-up faults", "immutable database file (root): exit 4, s from spawn",
           round(o.total_s, 2))


async def test_read_only_file_system(tmp_path: Path, figure: Figure) -> None:
    """The data directory on a file system mounted read-only (a locked USB stick)."""
    mnt = tmp_path / "stick"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        (mnt / "data").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        o = await start(mnt / "data", log_dir=tmp_path / "logs")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    message = check_fatal(o, 7, "data_dir_unwritable")
    assert "Read-only file system" in message and str(mnt / "data") in message
    figure("start-up faults", "data directory on a read-only file system: exit 7, s from spawn",
           round(o.total_s, 2))


async def test_folder_at_the_database_path(data_dir: Path, figure: Figure) -> None:
    (data_dir / "sidecar.sqlite3").mkdir()
    (data_dir / "sidecar.sqlite3" / "keep.txt").write_text("mine")
    o = await start(data_dir)
    message = check_fatal(o, 4, "database_not_a_file")
    assert "folder" in message and str(data_dir / "sidecar.sqlite3") in message
    assert (data_dir / "sidecar.sqlite3" / "keep.txt").read_text() == "mine"
    figure("start-up faults", "folder at the database path: exit 4, s from spawn",
           round(o.total_s, 2))


async def test_damaged_database(data_dir: Path, figure: Figure) -> None:
    (data_dir / "sidecar.sqlite3").write_bytes(b"this is not a database at all" * 100)
    o = await start(data_dir)
    message = check_fatal(o, 4, "database_corrupt")
    assert "not a valid SQLite file" in message and "move it aside" in message
    figure("start-up faults", "damaged database: exit 4, s from spawn", round(o.total_s, 2))


async def test_unwritable_data_directory(tmp_path: Path, figure: Figure) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o500)
    data.chmod(0o500)  # r-x: the owner may not create files in it
    o = await start(data, log_dir=tmp_path / "logs", prefix=AS_USER)
    message = check_fatal(o, 7, "data_dir_unwritable")
    assert str(data) in message and "Permission denied" in message
    figure("start-up faults", "unwritable data directory: exit 7, s from spawn",
           round(o.total_s, 2))


@pytest.mark.parametrize("what", ["directory", "log file"])
async def test_unwritable_log_directory(tmp_path: Path, what: str, figure: Figure) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    if what == "log file":
        (logs / "sidecar.log").write_text("old lines\n")
        (logs / "sidecar.log").chmod(0o400)
    else:
        logs.chmod(0o500)
    o = await start(tmp_path / "data", log_dir=logs, prefix=AS_USER)
    message = check_fatal(o, 7, "log_dir_unwritable")
    assert str(logs) in message
    figure("start-up faults", f"unwritable log {what}: exit 7, s from spawn",
           round(o.total_s, 2))


async def test_parent_already_gone(data_dir: Path, figure: Figure) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    o = await start(data_dir, extra=["--parent-pid", str(gone.pid)])
    message = check_fatal(o, 1, "no_parent")
    assert str(gone.pid) in message
    figure("start-up faults", "parent already gone: exit 1, s from spawn", round(o.total_s, 2))


async def test_fault_while_the_parent_dies(data_dir: Path, healthy_db: Path,
                                           figure: Figure) -> None:
    """The parent dies while start-up waits on a locked database: the daemon still ends."""
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    holder = Holder(healthy_db, "begin_immediate")

    async def kill_parent_once_the_database_is_open(pid: int) -> None:
        fds = Path(f"/proc/{pid}/fd")
        while True:
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) == str(healthy_db) for fd in fds.iterdir()):
                    break
            await asyncio.sleep(0.005)
        parent.kill()
        parent.wait()

    try:
        o = await start(data_dir, extra=["--parent-pid", str(parent.pid)],
                        on_spawn=kill_parent_once_the_database_is_open)
    finally:
        holder.stop()
        parent.kill()
    assert parent.returncode is not None
    check_fatal(o, 6, "database_locked")
    figure("start-up faults", "locked database, parent killed meanwhile: exit 6, s from spawn",
           round(o.total_s, 2))


async def test_port_taken_after_everything_else_started(data_dir: Path, healthy_db: Path,
                                                        figure: Figure) -> None:
    """The last step fails (--port already bound): the store, runner and the rest that had
    started are closed again, and the process still ends within 2 s."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        o = await start(data_dir, extra=["--port", str(taken.getsockname()[1])])
    message = check_fatal(o, 1, "port_in_use")
    assert "--port 0" in message
    figure("start-up faults", "port already taken: exit 1, s from spawn", round(o.total_s, 2))


async def test_locked_while_running_is_a_clear_error_then_heals(
        data_dir: Path, healthy_db: Path, tmp_path: Path, figure: Figure) -> None:
    """After start-up: another program holds the database past the 5 s busy wait. Requests
    get a ``database_locked`` error frame naming it (not ``internal_error``), the daemon
    stays up, and the next save after the lock is gone works."""
    from sidecar.client import DaemonProcess

    d = await DaemonProcess.start(data_dir, token=TOKEN)
    try:
        c = await d.connect()
        await c.hello()
        folder = tmp_path / "later"
        folder.mkdir()
        save = {"type": "agent_upsert", "agent": {
            "kind": "local", "name": "After the lock", "directories": [str(folder)],
            "extensions": [".md"], "data_types": ["tasks"], "schedule_cron": "0 3 * * *",
            "watch": False}}
        holder = Holder(healthy_db, "begin_immediate")  # a DB browser's pending edit
        try:
            t0 = time.monotonic()
            reply = await c.request(save, timeout=30)
            waited = time.monotonic() - t0
            listed = await c.request({"type": "agent_list"})  # reads still work meanwhile
        finally:
            holder.stop()
        assert reply["type"] == "error" and reply["code"] == "database_locked", reply
        assert f"pid {holder.proc.pid}" in reply["message"], reply
        assert "move it aside" not in reply["message"]
        assert [a["name"] for a in listed["agents"]] == ["Kept"], listed
        saved = await c.request(save)
        assert saved["type"] == "agent_upsert_result", saved
        agents = await c.request({"type": "agent_list"})
        assert sorted(a["name"] for a in agents["agents"]) == ["After the lock", "Kept"]
        await c.close()
    finally:
        assert await d.stop() == 0
    assert not any("Traceback" in line for line in d.stderr_lines)
    figure("storage faults", "database locked while running: error frame after, s",
           round(waited, 1))


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs filled to the last block (root may mount; skipped where it may not)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs",
                        str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        with contextlib.suppress(OSError), (mnt / "filler").open("wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_data_disk_full_at_start(full_disk: Path, tmp_path: Path,
                                       figure: Figure) -> None:
    o = await start(full_disk / "data", log_dir=tmp_path / "logs")
    message = check_fatal(o, 7, "disk_full")
    assert str(full_disk / "data") in message and "free some space" in message
    figure("start-up faults", "data disk full: exit 7, s from spawn", round(o.total_s, 2))


async def test_log_disk_full_is_said_once_and_the_daemon_runs(
        full_disk: Path, data_dir: Path) -> None:
    """Only the log's disk is full: not fatal; one stderr line says so, no tracebacks."""
    from sidecar.client import DaemonProcess

    logs = full_disk / "logs"
    d = await DaemonProcess.start(data_dir, token=TOKEN, extra_args=["--log-dir", str(logs)])
    try:
        c = await d.connect()
        for _ in range(5):  # each request logs; each log write fails
            await c.hello()
        await c.close()
    finally:
        assert await d.stop() == 0
    told = [line for line in d.stderr_lines if "cannot write the log file" in line]
    assert len(told) == 1, d.stderr_lines[-10:]
    assert not any("Traceback" in line or "Logging error" in line for line in d.stderr_lines)


@pytest.mark.parametrize("fault", ["locked", "unwritable"])
async def test_other_commands_say_the_same(data_dir: Path, healthy_db: Path, tmp_path: Path,
                                           fault: str) -> None:
    """`sidecar agents list` beside a locked database or over an unwritable directory: the
    same one line and exit code as the daemon, no traceback, nothing on stdout."""
    prefix: list[str] = []
    holder = Holder(healthy_db, "begin_immediate") if fault == "locked" else None
    target = data_dir
    if fault == "unwritable":
        target = tmp_path / "ro" / "data"
        target.parent.mkdir(mode=0o500)
        target.parent.chmod(0o500)
        prefix = AS_USER
    try:
        r = await asyncio.to_thread(
            subprocess.run, [*prefix, sys.executable, "-m", "sidecar", "agents", "list",
                             "--data-dir", str(target), "--log-dir", str(tmp_path / "logs")],
            capture_output=True, text=True, timeout=30)
    finally:
        if holder is not None:
            holder.stop()
    assert r.returncode == (6 if fault == "locked" else 7), r
    assert r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("sidecar: ")]
    assert len(lines) == 1, r.stderr
    assert ("locked by another program" in lines[0]) if fault == "locked" else (
        "Permission denied" in lines[0] and str(target) in lines[0])


@pytest.mark.parametrize(("env", "extra", "error", "named"), [
    ({"SIDECAR_TOKEN": "short"}, [], "weak_token", "SIDECAR_TOKEN"),
    ({}, ["--port", "99999"], "invalid_config", "--port"),
    ({"SIDECAR_INSERT_TIMEOUT_SECONDS": "soon"}, [], "invalid_config",
     "SIDECAR_INSERT_TIMEOUT_SECONDS"),
])
async def test_invalid_configuration(data_dir: Path, env: dict[str, str], extra: list[str],
                                     error: str, named: str) -> None:
    o = await start(data_dir, extra=extra, env=env)
    message = check_fatal(o, 5, error)
    assert named in message, message


def test_setpriv_really_drops_roots_override(tmp_path: Path) -> None:
    """The premise of the mode-based cases: without these capabilities root obeys modes."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    d = tmp_path / "ro"
    d.mkdir(mode=0o500)
    d.chmod(0o500)
    r = subprocess.run([*AS_USER, sys.executable, "-c",
                        f"open({str(d / 'x')!r}, 'w')"], capture_output=True)
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    with sqlite3.connect(tmp_path / "probe.db") as c:  # and SQLite itself is there
        c.execute("SELECT 1")
