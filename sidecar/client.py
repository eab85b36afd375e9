"""TEST AND TOOLING ONLY, never imported by the daemon: a Python client for the sidecar, as
Electron uses it (spawn, read the ready line, talk on /ws).

Used by the tests, the benchmarks and the bundle smoke test, so all of them exercise the
same real process and wire protocol Electron does (``tests/test_import_cycles.py`` checks
that no daemon module imports it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp


@dataclass(frozen=True, slots=True)
class Ready:
    """The parsed ready line."""

    port: int
    pid: int
    version: str
    protocol: int
    token_file: str | None = None


class SidecarFatal(RuntimeError):
    """The daemon could not start: its fatal line (``code`` is also its exit code)."""

    def __init__(self, code: int, error: str, message: str) -> None:
        super().__init__(f"sidecar could not start ({error}, exit {code}): {message}")
        self.code = code
        self.error = error
        self.message = message


@dataclass
class DaemonProcess:
    """A spawned ``sidecar serve`` (the venv module or a bundled executable)."""

    proc: asyncio.subprocess.Process
    ready: Ready
    token: str
    stderr_lines: list[str] = field(default_factory=list)
    _stderr_task: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        data_dir: Path,
        *,
        token: str,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
        timeout: float = 30.0,
        stdin_pipe: bool = False,
    ) -> DaemonProcess:
        cmd = list(command or [sys.executable, "-m", "sidecar"])
        cmd += ["serve", "--port", "0", "--data-dir", str(data_dir),
                "--log-dir", str(Path(data_dir) / "logs"), *extra_args]
        full_env = {**os.environ, **(env or {}), "SIDECAR_TOKEN": token}
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.PIPE if stdin_pipe else asyncio.subprocess.DEVNULL,
            env=full_env,
        )
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError("sidecar printed no ready line in time") from None
        if not line:
            err = await proc.stderr.read() if proc.stderr else b""
            await proc.wait()
            raise RuntimeError(f"sidecar exited {proc.returncode} before ready: "
                               f"{err.decode(errors='replace')[-2000:]}")
        obj = json.loads(line)
        if obj.get("event") == "fatal":
            await proc.wait()
            raise SidecarFatal(int(obj["code"]), str(obj["error"]), str(obj["message"]))
        if obj.get("event") != "ready":
            raise RuntimeError(f"unexpected first line: {line!r}")
        ready = Ready(port=obj["port"], pid=obj["pid"], version=obj["version"],
                      protocol=obj["protocol"], token_file=obj.get("token_file"))
        self = cls(proc=proc, ready=ready, token=token)
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        return self

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr_lines.append(line.decode("utf-8", "replace").rstrip())

    def url(self, path: str = "/ws") -> str:
        return f"http://127.0.0.1:{self.ready.port}{path}"

    async def connect(self, **kwargs: Any) -> SidecarClient:
        return await SidecarClient.connect(self.url(), self.token, **kwargs)

    async def read_stdout_rest(self) -> bytes:
        """Everything printed to stdout after the ready line (must stay empty)."""
        assert self.proc.stdout is not None
        return await self.proc.stdout.read()

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stderr_task, 5)
        return self.proc.returncode  # type: ignore[return-value]

    async def kill(self) -> int:
        return await self.stop(signal.SIGKILL)


class SidecarClient:
    """Request/reply by ``request_id``; pushed frames (tool_call, run_*) wait in a queue."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = ws
        self.pushed: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.errors: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read())
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, url: str, token: str | None, *, origin: str | None = None,
                      use_query: bool = False, heartbeat: float | None = None) -> SidecarClient:
        headers: dict[str, str] = {}
        if token and not use_query:
            headers["Authorization"] = f"Bearer {token}"
        if origin:
            headers["Origin"] = origin
        if token and use_query:
            url = f"{url}?token={token}"
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, headers=headers, heartbeat=heartbeat,
                                          max_msg_size=64 * 1024 * 1024)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                rid = frame.get("request_id")
                fut = self._waiting.pop(rid, None) if rid else None
                if fut is not None and not fut.done():
                    fut.set_result(frame)
                elif frame.get("type") == "error":
                    await self.errors.put(frame)
                else:
                    await self.pushed.put(frame)
        finally:
            self.closed.set()
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("websocket closed"))

    async def send_raw(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    async def request(self, frame: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """Send a request (``request_id`` filled in) and return its reply or error frame."""
        rid = frame.get("request_id") or f"q{next(self._ids)}"
        frame = {**frame, "request_id": rid}
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        await self.ws.send_str(json.dumps(frame))
        return await asyncio.wait_for(fut, timeout)

    async def hello(self, **extra: Any) -> dict[str, Any]:
        return await self.request({"type": "hello", "protocol": 1, "client": "py-test", **extra})

    async def next_push(self, type_: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """The next pushed frame (of ``type_`` if given; others are dropped while waiting)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await asyncio.wait_for(self.pushed.get(), max(0.0, deadline - loop.time()))
            if type_ is None or frame.get("type") == type_:
                return frame

    async def next_error(self, timeout: float = 10.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.errors.get(), timeout)

    async def ack(self, call: dict[str, Any], result: Any = None, error: str | None = None) -> None:
        frame: dict[str, Any] = {"type": "tool_result", "id": call["id"]}
        if error is not None:
            frame["error"] = error
        else:
            frame["result"] = result if result is not None else {"ok": True}
        await self.ws.send_str(json.dumps(frame))

    async def close(self) -> None:
        """Close with the handshake: everything sent before reaches the sidecar's handlers."""
        await self.ws.close()
        # If the reader task saw the closing first, it runs the handshake and aiohttp's
        # close() returns at once; dropping the session then would close a socket with
        # unread frames, i.e. send a TCP reset, and the sidecar loses what we sent last.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._reader), 10)
        await self.session.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader

    async def __aenter__(self) -> SidecarClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
