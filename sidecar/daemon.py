"""``sidecar serve``: bind loopback, print the ready line, live until stopped or orphaned.

Start-up either prints the ready line or fails with a fatal line (lifecycle.Fatal) on stdout,
one sentence on stderr and its exit code, and the process ends within two seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from typing import TextIO

from aiohttp import web

from sidecar import PROTOCOL_VERSION, __version__
from sidecar.connlimits import GuardedRunner, raise_descriptor_limit
from sidecar.errors import ConfigError
from sidecar.lifecycle import (
    InstanceLock,
    classify,
    exit_soon,
    resolve_token,
    threadsafe_setter,
    watch_parent,
)
from sidecar.lifecycle import watch_stdin as start_stdin_watch
from sidecar.logging_setup import FILE_ONLY, redact, register_secret
from sidecar.paths import Paths
from sidecar.server import create_app
from sidecar.settings import Config
from sidecar.stdio import write_line

log = logging.getLogger(__name__)

BIND_HOST = "127.0.0.1"  # never anything else: the token is the only other guard
SHUTDOWN_TIMEOUT = 5.0
#: After a fatal line: time to close what had started, then the process ends regardless.
FATAL_CLEANUP = 1.0
FATAL_EXIT_AFTER = 1.5
#: After a stop: how long a library thread may keep the process alive before it is ended.
STOPPED_EXIT_AFTER = 10.0


def fatal(ready: TextIO, exc: BaseException, paths: Paths | None) -> int:
    """Report a start-up failure (stdout line, one stderr sentence, log) and return its code.

    From here the process ends within ``FATAL_EXIT_AFTER`` seconds whatever else is running.
    """
    f = classify(exc, paths)
    message = redact(f.message)
    exit_soon(f.exit_code, FATAL_EXIT_AFTER)
    log.error("start-up failed (%s, exit %d): %s", f.error, f.exit_code, message,
              exc_info=exc if f.error == "internal_error" else None, extra=FILE_ONLY)
    with contextlib.suppress(OSError, ValueError):
        print(f"sidecar: {message}", file=sys.stderr, flush=True)
    with contextlib.suppress(OSError, ValueError):  # stdout gone: Electron is gone too
        write_line(ready, dataclasses.replace(f, message=message).line())
    return f.exit_code


def _install_signal_handlers(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
            signal.signal(sig, lambda *_: threadsafe_setter(loop, stop)())
    if hasattr(signal, "SIGBREAK"):  # pragma: no cover - Windows console close
        signal.signal(signal.SIGBREAK, lambda *_: threadsafe_setter(loop, stop)())


async def serve(
    config: Config,
    paths: Paths,
    ready: TextIO,
    *,
    parent_pid: int | None = None,
    watch_stdin: bool = False,
) -> int:
    """Run until SIGTERM/SIGINT, parent death or stdin EOF; return the exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    lock: InstanceLock | None = None
    runner: web.AppRunner | None = None
    try:
        if not 0 <= config.port <= 65535:
            raise ConfigError(f"--port must be 0 (any free port) to 65535, got {config.port}",
                              field="port")
        raise_descriptor_limit()
        lock = InstanceLock(paths.lock_file).acquire()
        token, token_file = resolve_token(paths.token_file)
        register_secret(token)
        _install_signal_handlers(loop, stop)
        if parent_pid is not None:
            watch_parent(parent_pid, threadsafe_setter(loop, stop))
        if watch_stdin:
            start_stdin_watch(threadsafe_setter(loop, stop))
        runner = GuardedRunner(create_app(config, paths, token), access_log=None,
                               shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, BIND_HOST, config.port)
        await site.start()
    except Exception as exc:
        code = fatal(ready, exc, paths)
        if runner is not None:  # close what had started (the store's thread, above all)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runner.cleanup(), FATAL_CLEANUP)
        if lock is not None:
            lock.release()
        return code
    assert lock is not None
    try:
        port = runner.addresses[0][1]
        line: dict[str, object] = {
            "event": "ready", "port": port, "pid": os.getpid(), "version": __version__,
            "protocol": PROTOCOL_VERSION, "host": BIND_HOST,
        }
        if token_file is not None:
            line["token_file"] = str(token_file)
        write_line(ready, json.dumps(line, separators=(",", ":")))
        log.info("listening on %s:%d (data dir %s)", BIND_HOST, port, paths.data_dir)
        await stop.wait()
        log.info("shutting down")
    finally:
        try:
            await runner.cleanup()
        finally:
            lock.release()
    log.info("stopped cleanly")
    return 0


def run(config: Config, paths: Paths, ready: TextIO, **kwargs: object) -> int:
    """The synchronous edge: ``asyncio.run`` lives here and only here for the daemon."""
    if sys.platform == "win32":  # pragma: no cover
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())  # type: ignore[attr-defined]
    os.umask(0o077)  # whatever the sidecar or a library creates is the user's alone
    code = asyncio.run(serve(config, paths, ready, **kwargs))  # type: ignore[arg-type]
    exit_soon(code, STOPPED_EXIT_AFTER)
    return code
