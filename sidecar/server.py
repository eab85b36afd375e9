"""The aiohttp app: ``/ws`` for Electron (token and origin checked), ``/health`` for liveness."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web

from sidecar import PROTOCOL_VERSION, __version__
from sidecar.access import origin_allowed, token_ok
from sidecar.appkeys import (
    ACCOUNTS,
    AGENT_LISTENERS,
    CONFIG,
    DELIVERY,
    HUB,
    RUNNER,
    SCHEDULER,
    STARTED_AT,
    STORE,
    TOKEN,
    WATCHERS,
)
from sidecar.connlimits import CONN_GUARD, ConnectionGuard, http_logger
from sidecar.handlers import register_account_handlers, register_handlers
from sidecar.hub import Hub
from sidecar.paths import Paths
from sidecar.ratelimit import RateLimitedLog
from sidecar.settings import Config
from sidecar.store import Store

log = logging.getLogger(__name__)


async def health(request: web.Request) -> web.Response:
    app = request.app
    return web.json_response({
        "status": "ok",
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "uptime_s": round(time.monotonic() - app[STARTED_AT], 3),
        "clients": len(app[HUB].clients),
    })


#: Refused handshakes, one line a minute per kind: a flood must not rotate the log away.
_refusals = RateLimitedLog(log, interval=60.0)


async def websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    if not token_ok(request, app[TOKEN]):
        _refusals.warning("token", "refused /ws from %s: missing or wrong token",
                          request.remote)
        raise web.HTTPUnauthorized(text="missing or wrong token",
                                   headers={"WWW-Authenticate": 'Bearer realm="sidecar"'})
    origin = request.headers.get("Origin")
    if not origin_allowed(origin):
        _refusals.warning("origin", "refused /ws: foreign Origin %r", origin)
        raise web.HTTPForbidden(text=f"origin {origin!r} is not allowed")
    if CONN_GUARD in app:
        app[CONN_GUARD].trust(request.protocol)  # the token holder: no handshake deadline
    hub = app[HUB]
    if hub.closing:
        raise web.HTTPServiceUnavailable(text="sidecar is shutting down")
    config = app[CONFIG]
    ws = web.WebSocketResponse(
        heartbeat=config.heartbeat_seconds,
        # aiohttp drops the connection above this; below it, our own limit answers with an
        # error frame and keeps the connection (max_frame_bytes).
        max_msg_size=max(4 * config.max_frame_bytes, 4 * 1024 * 1024),
    )
    await ws.prepare(request)
    client = hub.add(ws)
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await hub.handle_text(client, msg.data)
            elif msg.type == WSMsgType.ERROR:
                log.info("client %d: websocket error %s", client.id, ws.exception())
    finally:
        await hub.remove(client)
    return ws


def store_ctx(paths: Paths) -> object:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = await Store(paths.database).open()
        closed = await store.runs.close_interrupted()
        if closed:
            log.warning("closed %d run(s) interrupted by the last stop", closed)
        app[STORE] = store
        yield
        await store.close()

    return ctx


def services_ctx(paths: Paths) -> object:
    """The run services (:func:`sidecar.services.build_services`, the one wiring point);
    delivery starts here, where the app receives the records."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        from sidecar.services import build_services

        services = build_services(app[STORE], app[HUB], app[CONFIG], paths)
        await services.delivery.start()
        app[DELIVERY] = services.delivery
        app[RUNNER] = services.runner
        app[ACCOUNTS] = services.accounts
        yield
        await services.close()

    return ctx


async def watch_ctx(app: web.Application) -> AsyncIterator[None]:
    """Folder watchers for local agents, re-synced whenever an agent changes."""
    from sidecar.watcher import WatchManager

    runner, store, config = app[RUNNER], app[STORE], app[CONFIG]

    async def start_run(agent_id: str, trigger: str, only: set[str] | None
                        ) -> tuple[str, bool]:
        return await runner.start(agent_id, trigger, only=only)

    manager = WatchManager(start_run, runner.wait, quiet_seconds=config.watch_quiet_seconds,
                           poll_interval=config.watch_poll_seconds)
    app[WATCHERS] = manager

    async def on_agent(agent_id: str) -> None:
        await manager.sync(await store.agents.get_agent(agent_id), agent_id)

    for record in await store.agents.records(kind="local"):
        try:  # one agent's watcher never keeps the daemon from starting
            await on_agent(record["id"])
        except Exception:
            log.exception("agent %s: folder watcher not started", record["id"])
    app[AGENT_LISTENERS].append(on_agent)
    yield
    await manager.close()


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cron jobs per agent; catch-up of overdue agents at start-up and after sleep."""
    from sidecar.scheduler import Scheduler

    runner, config = app[RUNNER], app[CONFIG]

    async def start_run(agent_id: str, trigger: str) -> tuple[str, bool]:
        return await runner.start(agent_id, trigger)

    scheduler = Scheduler(app[STORE], start_run, defer_on_battery=config.defer_on_battery,
                          battery_threshold=config.battery_threshold_percent)
    app[SCHEDULER] = scheduler
    await scheduler.start()

    async def on_agent(agent_id: str) -> None:
        await scheduler.sync(agent_id)

    app[AGENT_LISTENERS].append(on_agent)
    yield
    await scheduler.stop()


async def close_websockets(app: web.Application) -> None:
    """Runs before the server waits for handlers: open sockets would hold shutdown up."""
    await app[HUB].close_all()


def create_app(config: Config, paths: Paths, token: str) -> web.Application:
    # at least a second: 0 would close every connection, the app's too, before its request
    handshake = max(1.0, config.handshake_timeout_seconds)
    # keepalive_timeout: aiohttp's own idle limit, also from the moment a connection opens
    app = web.Application(client_max_size=1024 * 1024, handler_args={
        "keepalive_timeout": handshake, "logger": http_logger()})
    app[CONN_GUARD] = ConnectionGuard(
        handshake_timeout=handshake,
        max_pending=config.max_unauthenticated_connections,
        reserve=config.reserved_descriptors)
    app[CONFIG] = config
    app[TOKEN] = token
    app[STARTED_AT] = time.monotonic()
    app[HUB] = Hub(max_frame_bytes=config.max_frame_bytes)
    app[AGENT_LISTENERS] = []
    app.cleanup_ctx.append(store_ctx(paths))  # type: ignore[arg-type]
    app.cleanup_ctx.append(services_ctx(paths))  # type: ignore[arg-type]
    app.cleanup_ctx.append(watch_ctx)
    app.cleanup_ctx.append(scheduler_ctx)
    app.on_shutdown.append(close_websockets)
    register_handlers(app)
    register_account_handlers(app)
    app.router.add_get("/health", health)
    app.router.add_get("/ws", websocket)
    return app

