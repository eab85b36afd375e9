"""Private files: what the sidecar keeps (extracted task text, file names, the token) is the
user's alone on POSIX. Directories 0700, files 0600, whatever the umask; files a previous
version left readable by others are tightened at start (never loosened: a file its owner
made read-only stays read-only).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.client import DaemonProcess
from tests.reliability.taskdocs import make_agent

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX modes (Windows: ACLs)")

Figure = Callable[[str, str, Any], None]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    """The daemon inherits it: 0 would make every file created without a mode 0666/0777."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def expected(data: Path, logs: Path) -> dict[Path, int]:
    db = data / "sidecar.sqlite3"
    return {data: 0o700, logs: 0o700, db: 0o600, Path(f"{db}-wal"): 0o600,
            Path(f"{db}-shm"): 0o600, data / "sidecar.lock": 0o600, data / "token": 0o600,
            logs / "sidecar.log": 0o600}


async def run_daemon_and_write(data: Path, tmp_path: Path) -> dict[Path, int]:
    """Start without SIDECAR_TOKEN (token file), save an agent (WAL, SHM); modes while up."""
    d = await DaemonProcess.start(data, token="")  # empty: the daemon generates one
    try:
        assert d.ready.token_file == str(data / "token")
        d.token = (data / "token").read_text()
        c = await d.connect()
        folder = tmp_path / "notes"
        folder.mkdir(exist_ok=True)
        await make_agent(c, folder, "Private")
        await c.close()
        return {p: mode(p) for p in expected(data, data / "logs") if p.exists()}
    finally:
        assert await d.stop() == 0


async def test_fresh_files_are_private_whatever_the_umask(tmp_path: Path,
                                                          figure: Figure) -> None:
    data = tmp_path / "data"
    with umask(0):
        seen = await run_daemon_and_write(data, tmp_path)
    want = expected(data, data / "logs")
    assert set(seen) == set(want), f"missing: {sorted(map(str, set(want) - set(seen)))}"
    wrong = {str(p): f"{m:o}" for p, m in seen.items() if m != want[p]}
    assert not wrong, wrong
    figure("private files", "fresh data/log dirs and files (umask 0): modes seen",
           ", ".join(sorted({f"{m:04o}" for m in seen.values()})) + f" over {len(seen)} paths")


async def test_loose_files_from_before_are_tightened_at_start(tmp_path: Path,
                                                              figure: Figure) -> None:
    data = tmp_path / "data"
    logs = data / "logs"
    with umask(0o022):
        await run_daemon_and_write(data, tmp_path)  # a previous run leaves its files
    db = data / "sidecar.sqlite3"
    for p in (data, logs):
        p.chmod(0o755)
    loose = [db, data / "sidecar.lock", data / "token", logs / "sidecar.log"]
    rotated = logs / "sidecar.log.1"
    rotated.write_text("an old rotated log naming /home/me/Clients/secret-plan.md\n")
    read_only = logs / "sidecar.log.2"
    read_only.write_text("older\n")
    for p in [*loose, rotated]:
        p.chmod(0o644)
    read_only.chmod(0o444)
    with umask(0o022):
        seen = await run_daemon_and_write(data, tmp_path)
    want = expected(data, logs)
    wrong = {str(p): f"{m:o}" for p, m in seen.items() if m != want[p]}
    assert not wrong, wrong
    assert mode(rotated) == 0o600
    assert mode(read_only) == 0o400, "tightened, not made writable"
    figure("private files", "0755/0644 left by an older version, at next start",
           ", ".join(sorted({f"{m:04o}" for m in seen.values()}))
           + f"; the read-only one {mode(read_only):04o}")


def test_a_rotated_log_starts_private(tmp_path: Path) -> None:
    """Each new log file after a rotation is created 0600 (the handler, not the umask)."""
    from sidecar.logging_setup import PrivateRotatingFileHandler

    path = tmp_path / "sidecar.log"
    with umask(0):
        h = PrivateRotatingFileHandler(path, maxBytes=200, backupCount=2, encoding="utf-8")
        try:
            for i in range(20):
                h.emit(logging.LogRecord("t", logging.INFO, __file__, 1, "line %d " + "x" * 40,
                                         (i,), None))
        finally:
            h.close()
    files = sorted(tmp_path.glob("sidecar.log*"))
    assert [f.name for f in files] == ["sidecar.log", "sidecar.log.1", "sidecar.log.2"]
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
