"""Folder watching: watchdog events become one debounced, incremental run per quiet burst.

watchdog calls us on its own threads; events cross to the event loop with
``call_soon_threadsafe`` and nothing else happens on those threads. A burst of events
(a copy of 500 files, an editor's save dance) is gathered until the folder has been quiet
for ``quiet_seconds`` and every changed file's size and mtime have stopped moving, then
handed to the runner as one run over just those paths. An observer that dies (buffer
overflow, a network drive that went away) is restarted and followed by a full rescan, so no
change is missed; ``poll`` agents use watchdog's polling observer for network folders.

A native observer that cannot start (the inotify instance or watch limit used up by editors
and IDEs: EMFILE / ENOSPC) never fails the agent or the daemon: that agent polls instead,
says so in ``status`` (``watch_mode``, ``watch_reason``), and tries native watching again
every ``native_retry_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sidecar.domain import Agent
from sidecar.observers import NATIVE_NAMES, polling_observer, why_not_native

log = logging.getLogger(__name__)

#: ``start_run(agent_id, trigger, only)`` → (run_id, already_running); ``only=None`` = full.
StartRun = Callable[[str, str, "set[str] | None"], Awaitable[tuple[str, bool]]]
WaitRun = Callable[[str], Awaitable[Any]]


class _UnwatchedSubfolders(logging.Handler):
    """watchdog (7.x) logs "Unable to watch <path>: <error>" and leaves that subfolder
    unwatched when the inotify watch limit runs out after start-up (a new folder): files
    there would never be seen. The watcher whose folder it is hears it and polls instead."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.watchers: set[FolderWatcher] = set()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if str(record.msg).startswith("Unable to watch") and len(args) >= 2:
            path = os.fsdecode(args[0]) if isinstance(args[0], (bytes, str)) else ""
            for w in list(self.watchers):
                if any(path == d or path.startswith(d.rstrip(os.sep) + os.sep)
                       for d in map(str, w.agent.directories)):
                    w.native_lost(args[1])
        shown = logging.getLogger("watchdog")  # the log itself obeys the user's level
        if shown.isEnabledFor(record.levelno):
            shown.handle(record)


_UNWATCHED = _UnwatchedSubfolders()
# heard whatever the log level (--log-level error must not blind the watcher); passed on
# to the log by the handler, as the level allows
_inotify_log = logging.getLogger("watchdog.observers.inotify")
_inotify_log.setLevel(logging.WARNING)
_inotify_log.propagate = False
_inotify_log.addHandler(_UNWATCHED)


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class FolderWatcher:
    """Watches one agent's folders and triggers incremental runs."""

    def __init__(self, agent: Agent, start_run: StartRun, wait_run: WaitRun, *,
                 quiet_seconds: float = 2.0, poll_interval: float = 5.0,
                 health_interval: float = 2.0, native_retry_seconds: float = 60.0) -> None:
        self.agent = agent
        self.start_run = start_run
        self.wait_run = wait_run
        self.quiet_seconds = quiet_seconds
        self.poll_interval = poll_interval
        self.health_interval = health_interval
        self.native_retry_seconds = native_retry_seconds
        #: "inotify" (or the platform's native name), "polling", or "off" (nothing works).
        self.mode = "off"
        #: Why the mode is not the native one (None when it is, or when ``poll`` asked).
        self.reason: str | None = None
        self._native_failed_at: float | None = None
        self._swap = threading.Lock()
        self._closed = False
        #: Set (from a watchdog thread) when native watching lost part of the tree.
        self._lost: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: Any = None
        self._pending: dict[str, tuple[int, int] | None] = {}
        self._last_event = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rescan = False
        self.restarts = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        _UNWATCHED.watchers.add(self)
        await asyncio.to_thread(self._start_observer)
        self._task = asyncio.create_task(self._main(), name=f"watch-{self.agent.id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        _UNWATCHED.watchers.discard(self)
        with self._swap:  # a restart still running in its thread installs nothing now
            self._closed = True
        await asyncio.to_thread(self._stop_observer)

    def _start_observer(self) -> None:
        """Native observer if it starts, else polling; never raises for a used-up limit."""
        if self.agent.poll:
            self._install(self._build(polling=True), "polling", None)
            return
        try:
            obs = self._build(polling=False)
        except Exception as exc:  # EMFILE/ENOSPC, or anything a platform observer raises
            self._poll_instead(exc)
            return
        self._native_failed_at = None
        self._install(obs, NATIVE_NAMES.get(type(obs).__name__, "native"), None)

    def _poll_instead(self, exc: BaseException, context: str = "") -> None:
        """Native watching failed (``exc``): poll, say why (log, status), retry it later."""
        self._native_failed_at = time.monotonic()
        reason = why_not_native(exc, self.poll_interval)
        log.warning("agent %s: %s%s", self.agent.id, context, reason)
        try:
            polling = self._build(polling=True)
        except Exception as exc2:
            self._install(None, "off", f"{reason}; polling failed too "
                                       f"({type(exc2).__name__}: {exc2})")
            log.error("agent %s: not watched: %s", self.agent.id, self.reason)
            return
        self._install(polling, "polling", reason)

    def _install(self, obs: Any, mode: str, reason: str | None) -> bool:
        """Make ``obs`` the observer, unless the watcher was stopped meanwhile (then it is
        stopped: an observer started in a thread after stop() would never be)."""
        with self._swap:
            if not self._closed:
                old, self._observer = self._observer, obs
                self.mode, self.reason = mode, reason
                obs = old if old is not obs else None
        if obs is not None:
            with contextlib.suppress(Exception):
                obs.stop()
                obs.join(timeout=5)
        return not self._closed

    def _build(self, *, polling: bool) -> Any:
        """A started observer over the agent's folders; a failed one is taken down again."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:  # watchdog thread
                if event.event_type in ("opened", "closed_no_write"):
                    return
                if event.is_directory and event.event_type == "modified":
                    return  # a folder's listing changed: its files are reported themselves
                paths = [event.src_path, getattr(event, "dest_path", "") or ""]
                watcher._threadsafe(paths, bool(event.is_directory))

        observer = polling_observer(self.poll_interval) if polling else Observer()
        handler = Handler()
        try:
            for d in self.agent.directories:
                if Path(d).is_dir():
                    observer.schedule(handler, str(d), recursive=True)
                else:
                    log.warning("agent %s: folder %s does not exist; not watched",
                                self.agent.id, d)
            observer.daemon = True
            observer.start()
        except BaseException:
            with contextlib.suppress(Exception):  # release what did start (inotify fds)
                observer.stop()
            raise
        return observer

    def _stop_observer(self) -> None:
        with self._swap:
            obs, self._observer = self._observer, None
        if obs is not None:
            with contextlib.suppress(Exception):
                obs.stop()
                obs.join(timeout=5)

    def _threadsafe(self, paths: list[str], is_dir: bool) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closing
            loop.call_soon_threadsafe(self._on_event, paths, is_dir)

    # -- event-loop side ---------------------------------------------------------------------

    def _on_event(self, paths: list[str], is_dir: bool) -> None:
        for raw in paths:
            if not raw:
                continue
            # the folder as the scan sees it (resolved), the entry itself left unresolved so
            # the scan can still judge a symlink
            path = os.fsdecode(raw)
            path = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
            if is_dir:
                # a folder moved in or out: its files were not reported one by one
                self._rescan = True
            self._pending[path] = _stat(path)
        self._last_event = time.monotonic()
        self._wake.set()

    async def _main(self) -> None:
        failures = 0
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that races
            # with the event being set, and stop() would then wait forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.health_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._check_observer()
                if not self._pending and not self._rescan:
                    continue
                await self._settle()
                await self._fire()
                failures = 0
            except Exception:  # a failed restart or run start must not end the watching
                failures += 1
                log.exception("agent %s: folder watcher step failed (%d in a row); trying "
                              "again with a full rescan", self.agent.id, failures)
                self._rescan = True
                await asyncio.sleep(min(self.health_interval * 2 ** failures, 300.0))

    def native_lost(self, exc: BaseException) -> None:
        """A subfolder could not be watched (any thread): poll instead, from the next check."""
        if self.mode in ("polling", "off") or self._lost is not None:
            return
        self._lost = exc
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    async def _check_observer(self) -> None:
        lost, self._lost = self._lost, None
        if lost is not None and self.mode not in ("polling", "off"):
            await asyncio.to_thread(self._poll_instead, lost, "a new folder could not be "
                                    "watched: ")
            self._rescan = True  # what arrived in the unwatched folder is found now
            return
        obs = self._observer
        if obs is not None and not (obs.is_alive() and all(e.is_alive() for e in obs.emitters)):
            self.restarts += 1
            log.warning("agent %s: folder watcher stopped (overflow or drive gone); restarting "
                        "and rescanning", self.agent.id)
            await asyncio.to_thread(self._stop_observer)
            await asyncio.to_thread(self._start_observer)
            self._rescan = True
        elif (self._native_failed_at is not None
              and time.monotonic() - self._native_failed_at >= self.native_retry_seconds):
            await asyncio.to_thread(self._retry_native)

    def _retry_native(self) -> None:
        """Polling because native watching failed: try native again (a limit may be free)."""
        try:
            obs = self._build(polling=False)
        except Exception as exc:
            self._native_failed_at = time.monotonic()
            log.debug("agent %s: native watching still unavailable: %s", self.agent.id, exc)
            return
        self._native_failed_at = None
        if self._install(obs, NATIVE_NAMES.get(type(obs).__name__, "native"), None):
            self._rescan = True  # changes during the swap are caught by one full scan
            log.info("agent %s: native folder watching works again (%s)", self.agent.id,
                     self.mode)

    async def _settle(self) -> None:
        """Wait for quiet, then until every pending file's size and mtime stop changing."""
        while True:
            quiet_for = time.monotonic() - self._last_event
            if quiet_for < self.quiet_seconds:
                await asyncio.sleep(self.quiet_seconds - quiet_for)
                continue
            now = {p: await asyncio.to_thread(_stat, p) for p in list(self._pending)}
            moving = [p for p, st in now.items() if st != self._pending.get(p)]
            self._pending.update(now)
            if not moving:
                return
            self._last_event = time.monotonic()  # still being written: wait another period

    async def _fire(self) -> None:
        full = self._rescan
        paths = None if full else set(self._pending)
        self._pending.clear()
        self._rescan = False
        while True:
            run_id, already = await self.start_run(self.agent.id, "watch", paths)
            if not already:
                return
            # a run is going: it may have scanned before these changes; go again after it
            with contextlib.suppress(Exception):
                await self.wait_run(run_id)


class WatchManager:
    """One watcher per enabled local agent with ``watch`` on; kept in sync with agent edits."""

    def __init__(self, start_run: StartRun, wait_run: WaitRun, *, quiet_seconds: float = 2.0,
                 poll_interval: float = 5.0) -> None:
        self.start_run = start_run
        self.wait_run = wait_run
        self.quiet_seconds = quiet_seconds
        self.poll_interval = poll_interval
        self.watchers: dict[str, FolderWatcher] = {}
        #: Agents whose watcher could not start at all, and why.
        self.failed: dict[str, str] = {}
        self._lock = asyncio.Lock()

    @staticmethod
    def wants_watch(agent: Agent) -> bool:
        return agent.kind == "local" and agent.enabled and agent.watch

    async def sync(self, agent: Agent | None, agent_id: str) -> None:
        """(Re)start, or stop, the watcher of ``agent_id`` (``agent`` None: deleted).

        Never raises for a watcher that cannot start: the agent stays stored and scheduled,
        and ``state`` says why it is not watched."""
        async with self._lock:
            self.failed.pop(agent_id, None)
            old = self.watchers.pop(agent_id, None)
            if old is not None:
                await old.stop()
            if agent is not None and self.wants_watch(agent):
                w = FolderWatcher(agent, self.start_run, self.wait_run,
                                  quiet_seconds=self.quiet_seconds,
                                  poll_interval=self.poll_interval)
                try:
                    await w.start()
                except Exception as exc:
                    log.exception("agent %s: folder watcher failed to start", agent_id)
                    with contextlib.suppress(Exception):
                        await w.stop()
                    self.failed[agent_id] = f"not watched: {type(exc).__name__}: {exc}"
                    return
                self.watchers[agent_id] = w

    def state(self, agent_id: str) -> dict[str, str | None]:
        """``watch_mode`` ("inotify", "polling", "off") and ``watch_reason`` for ``status``."""
        w = self.watchers.get(agent_id)
        if w is not None:
            return {"watch_mode": w.mode, "watch_reason": w.reason}
        return {"watch_mode": "off", "watch_reason": self.failed.get(agent_id)}

    async def close(self) -> None:
        async with self._lock:
            for w in self.watchers.values():
                await w.stop()
            self.watchers.clear()
