"""Connections without the token cannot use up the process's file descriptors.

Every accepted connection is *pending* until a request on it shows the launch token (the ``/ws``
handler calls :meth:`ConnectionGuard.trust`). A pending connection is closed after the handshake
timeout whatever it did meanwhile (sent nothing, half a request line, one idle ``/health``
keep-alive); at most ``max_pending`` are held, and fewer when the descriptors left under
``RLIMIT_NOFILE`` fall below the reserve kept for the real client and the store (at most half
the limit; it must cover what is open but not yet counted: sockets asyncio accepted before their
``connection_made`` ran, up to two backlogs of 128, and those aborted whose descriptor closes on
the next loop pass): the oldest pending ones are closed first. The cap spares connections
younger than :data:`GRACE`: the real client's upgrade request may still wait in the socket
behind a burst of accepts; only the descriptor reserve closes those. What is closed is logged as
a count, rate-limited, so a flood cannot rotate the useful history out of the log file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections import OrderedDict
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from sidecar.ratelimit import RateLimitedLog, RateLimitFilter

log = logging.getLogger(__name__)

#: Seconds a new connection is spared by the cap (not by the descriptor reserve).
GRACE = 1.0
#: Where the process's open descriptors are listed (Linux, then macOS/BSD).
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def descriptor_limit() -> int | None:
    """The soft RLIMIT_NOFILE, or None where there is none to respect."""
    if sys.platform == "win32":  # pragma: no cover - select() on Windows caps sockets at 512
        return 512
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


#: Soft descriptor limit the daemon asks for at start (macOS gives 256, some Linux 1,024).
WANTED_DESCRIPTORS = 8192


def raise_descriptor_limit(wanted: int = WANTED_DESCRIPTORS) -> int | None:
    """Lift the soft RLIMIT_NOFILE toward the hard one: a low default leaves little reserve."""
    if sys.platform == "win32":  # pragma: no cover
        return None
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # a sandbox may refuse: keep what we have
            log.info("could not raise the open-file limit from %d: %s", soft, exc)
            return int(soft)
        log.info("open-file limit raised from %d to %d", soft, target)
        return target
    return int(soft)


def open_descriptors() -> int | None:
    """How many descriptors the process holds now, or None if the OS does not say."""
    for d in _FD_DIRS:
        try:
            return len(os.listdir(d)) - 1  # listdir holds one itself while it reads
        except OSError:
            continue
    return None


class ConnectionGuard:
    """Bounds pending (not yet authenticated) connections in number, age and descriptors."""

    def __init__(self, *, handshake_timeout: float = 5.0, max_pending: int = 64,
                 reserve: int = 512) -> None:
        self.handshake_timeout = handshake_timeout
        self.max_pending = max(1, max_pending)
        self.reserve = max(0, reserve)
        #: handler → (when accepted, its deadline), oldest first
        self._pending: OrderedDict[RequestHandler, tuple[float, asyncio.TimerHandle]] = (
            OrderedDict())
        #: aborted, their descriptor not closed yet (that happens on the next loop pass):
        #: counted as free, or one burst of accepts would close far too many
        self._aborting: set[RequestHandler] = set()
        self._quiet = RateLimitedLog(log, interval=60.0)
        self.timed_out = 0
        self.evicted = 0
        self.trusted = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def opened(self, handler: RequestHandler) -> None:
        loop = asyncio.get_running_loop()
        self._pending[handler] = (loop.time(), loop.call_later(self.handshake_timeout,
                                                               self._expire, handler))
        self._make_room(loop.time())

    def closed(self, handler: RequestHandler) -> None:
        self._aborting.discard(handler)
        entry = self._pending.pop(handler, None)
        if entry is not None:
            entry[1].cancel()

    def trust(self, handler: Any) -> None:
        """The connection showed the token: no deadline, no eviction from now on."""
        if handler in self._pending:
            self.closed(handler)
            self.trusted += 1

    def _expire(self, handler: RequestHandler) -> None:
        if self._pending.pop(handler, None) is None:
            return
        self.timed_out += 1
        self._abort(handler)
        self._quiet.info("timeout", "closed a connection that showed no token within %.0fs "
                         "(%d so far)", self.handshake_timeout, self.timed_out)

    def _abort(self, handler: RequestHandler) -> None:
        transport = handler.transport
        if transport is not None:
            self._aborting.add(handler)
            transport.abort()  # no lingering close: the descriptor goes on the next pass

    def _make_room(self, now: float) -> None:
        """Close the oldest pending connections beyond the cap (sparing the young) and, all
        ages alike, while the descriptors left are fewer than the reserve."""
        limit, used = descriptor_limit(), open_descriptors()
        short = 0
        if limit is not None and used is not None:
            short = used - len(self._aborting) - (limit - min(self.reserve, limit // 2))
        over = len(self._pending) - self.max_pending
        closed = 0
        while self._pending and (short > 0 or over > 0):
            handler, (since, timer) = next(iter(self._pending.items()))
            if short <= 0 and now - since < GRACE:
                break  # only the cap is exceeded, and the oldest is still young
            del self._pending[handler]
            timer.cancel()
            self._abort(handler)
            short, over, closed = short - 1, over - 1, closed + 1
        if closed:
            self.evicted += closed
            self._quiet.warning(
                "evict", "too many connections without a token (%d pending, %s of %s "
                "descriptors in use): closed the oldest; %d closed so far",
                len(self._pending), used, limit, self.evicted)




CONN_GUARD = web.AppKey("conn_guard", ConnectionGuard)


def http_logger() -> logging.Logger:
    """The logger aiohttp's request handler writes to (``handler_args["logger"]``): what a
    peer sends wrong (garbage, a bad Content-Length, TLS to a plain port) is one line, and
    each kind at most once a minute, so no flood of requests rotates the log."""
    from aiohttp.http_exceptions import HttpProcessingError

    logger = logging.getLogger("sidecar.http")
    if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
        logger.addFilter(RateLimitFilter(60.0, peer_faults=(HttpProcessingError,)))
    return logger


class GuardedServer(web.Server):
    """aiohttp's low-level server, telling the guard of every connection made and lost."""

    guard: ConnectionGuard

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.guard.opened(handler)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None
                        ) -> None:
        self.guard.closed(handler)
        super().connection_lost(handler, exc)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose server reports to the app's :data:`CONN_GUARD`, if it has one."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        guard = self.app.get(CONN_GUARD)
        if guard is not None:
            # aiohttp builds the Server inside Application._make_handler; re-class it rather
            # than copy that private code (GuardedServer adds two hooks and no state of its
            # own but the guard).
            server.__class__ = GuardedServer
            server.guard = guard  # type: ignore[attr-defined]
        return server
