"""What a spawning app sees at start: a typed fatal error, and a soft descriptor limit raised."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from sidecar.client import DaemonProcess, SidecarFatal


async def test_fatal_line_is_a_typed_error_with_the_exit_code(data_dir: Path,
                                                              token: str) -> None:
    (data_dir / "sidecar.sqlite3").mkdir()  # a folder where the database should be
    with pytest.raises(SidecarFatal) as info:
        await DaemonProcess.start(data_dir, token=token)
    err = info.value
    assert err.code == 4  # documented: the database is unusable
    assert err.error and err.message
    assert "sidecar.sqlite3" in err.message


@pytest.mark.skipif(shutil.which("prlimit") is None or sys.platform != "linux",
                    reason="needs prlimit and /proc (Linux)")
async def test_low_soft_descriptor_limit_is_raised_toward_the_hard_one(
        data_dir: Path, token: str) -> None:
    proc = await DaemonProcess.start(
        data_dir, token=token,
        command=["prlimit", "--nofile=256:4096", "--", sys.executable, "-m", "sidecar"])
    try:
        limits = Path(f"/proc/{proc.ready.pid}/limits").read_text()
        line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
        soft, hard = line.split()[3:5]
        assert (soft, hard) == ("4096", "4096")
    finally:
        await proc.stop()


async def test_sigterm_with_stdin_watched_and_open_exits_zero(data_dir: Path,
                                                              token: str) -> None:
    """Electron keeps the pipe open and sends SIGTERM: the stdin watcher, still blocked in its
    read, must not abort the interpreter at exit (it did: SIGABRT, _enter_buffered_busy)."""
    import asyncio
    import signal

    d = await DaemonProcess.start(data_dir, token=token, extra_args=["--watch-stdin"],
                                  stdin_pipe=True)
    c = await d.connect()
    await c.hello()
    await c.close()
    d.proc.send_signal(signal.SIGTERM)
    rc = await asyncio.wait_for(d.proc.wait(), 15)
    await d.stop()
    assert rc == 0, (rc, d.stderr_lines[-5:])
    assert not any("Fatal Python error" in line for line in d.stderr_lines)
