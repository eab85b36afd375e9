"""``sidecar serve``: bind loopback, print the ready line, live until stopped or orphaned."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from typing import TextIO

from aiohttp import web

from sidecar import PROTOCOL_VERSION, __version__
from sidecar.connlimits import GuardedRunner
from sidecar.lifecycle import InstanceLock, resolve_token, threadsafe_setter, watch_parent
from sidecar.lifecycle import watch_stdin as start_stdin_watch
from sidecar.logging_setup import register_secret
from sidecar.paths import Paths
from sidecar.server import create_app
from sidecar.settings import Config
from sidecar.stdio import write_line

log = logging.getLogger(__name__)

BIND_HOST = "127.0.0.1"  # never anything else: the token is the only other guard
SHUTDOWN_TIMEOUT = 5.0


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
    lock = InstanceLock(paths.lock_file).acquire()
    try:
        token, token_file = resolve_token(paths.token_file)
        register_secret(token)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        _install_signal_handlers(loop, stop)
        if parent_pid is not None:
            watch_parent(parent_pid, threadsafe_setter(loop, stop))
        if watch_stdin:
            start_stdin_watch(threadsafe_setter(loop, stop))

        app = create_app(config, paths, token)
        runner = GuardedRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            site = web.TCPSite(runner, BIND_HOST, config.port)
            await site.start()
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
            await runner.cleanup()
        log.info("stopped cleanly")
        return 0
    finally:
        lock.release()


def run(config: Config, paths: Paths, ready: TextIO, **kwargs: object) -> int:
    """The synchronous edge: ``asyncio.run`` lives here and only here for the daemon."""
    if sys.platform == "win32":  # pragma: no cover
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())  # type: ignore[attr-defined]
    return asyncio.run(serve(config, paths, ready, **kwargs))  # type: ignore[arg-type]
