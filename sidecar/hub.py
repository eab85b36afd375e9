"""Connected clients: decode each frame once, route it, answer every bad frame with an error."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web

from sidecar import protocol as p
from sidecar.diskfull import DISK_FULL, disk_full_message, is_disk_full
from sidecar.errors import ConfigError, SidecarError
from sidecar.redaction import redact

log = logging.getLogger(__name__)

Handler = Callable[["Client", Any], Awaitable[p.Frame]]
ToolResultSink = Callable[["Client", p.ToolResult], Awaitable[bool]]
ClientListener = Callable[["Client"], Awaitable[None]]

_ids = itertools.count(1)
_hellos = itertools.count(1)


WRITER, OBSERVER = "writer", "observer"


@dataclass(eq=False)
class Client:
    """One WebSocket peer; ``ready`` once it said hello; inserts go to writers only."""

    ws: web.WebSocketResponse
    id: int = field(default_factory=lambda: next(_ids))
    ready: bool = False
    name: str | None = None
    role: str = WRITER
    #: Order of the last hello: the newest writer is preferred for new inserts.
    hello_seq: int = 0
    _send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def open(self) -> bool:
        return not self.ws.closed

    @property
    def writer(self) -> bool:
        """Said hello as a writer and is still connected: may be sent tool_calls."""
        return self.ready and self.role == WRITER and self.open

    async def send(self, frame: p.Frame) -> bool:
        """Send one frame; False if the peer is gone (the caller keeps the item)."""
        if self.ws.closed:
            return False
        try:
            async with self._send_lock:
                await self.ws.send_str(p.encode(frame))
            return True
        except (ConnectionError, RuntimeError) as exc:
            log.info("client %d: send failed: %s", self.id, exc)
            return False


class Hub:
    """Registry of clients and of request handlers keyed by frame class."""

    def __init__(self, max_frame_bytes: int = p.MAX_FRAME_BYTES) -> None:
        self.clients: dict[int, Client] = {}
        self.handlers: dict[type[p.Frame], Handler] = {}
        self.max_frame_bytes = max_frame_bytes
        self.tool_result_sink: ToolResultSink | None = None
        self.hello_listeners: list[ClientListener] = []
        self.disconnect_listeners: list[ClientListener] = []
        self.closing = False

    def route(self, frame_type: type[p.Frame]) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            self.handlers[frame_type] = fn
            return fn

        return deco

    def add(self, ws: web.WebSocketResponse) -> Client:
        client = Client(ws)
        self.clients[client.id] = client
        log.info("client %d connected (%d open)", client.id, len(self.clients))
        return client

    async def remove(self, client: Client) -> None:
        self.clients.pop(client.id, None)
        client.ready = False
        log.info("client %d disconnected (%d open)", client.id, len(self.clients))
        for listener in self.disconnect_listeners:
            await listener(client)

    def ready_clients(self) -> list[Client]:
        return [c for c in self.clients.values() if c.ready and c.open]

    def writers(self) -> list[Client]:
        """Clients that take inserts, oldest hello first."""
        return sorted((c for c in self.clients.values() if c.writer),
                      key=lambda c: c.hello_seq)

    async def broadcast(self, frame: p.Frame) -> int:
        """Send to every client that said hello; returns how many got it."""
        sent = await asyncio.gather(*(c.send(frame) for c in self.ready_clients()))
        return sum(sent)

    async def handle_text(self, client: Client, data: str | bytes) -> None:
        """Decode, dispatch, reply; never raises for anything the peer sent."""
        try:
            frame = p.decode(data, max_bytes=self.max_frame_bytes)
        except p.ProtocolError as exc:
            log.info("client %d: bad frame: %s", client.id, exc.message)
            await client.send(exc.to_frame())
            return
        if isinstance(frame, p.ToolResult):
            await self._tool_result(client, frame)
            return
        request_id = getattr(frame, "request_id", None)
        handler = self.handlers.get(type(frame))
        if handler is None:
            await client.send(p.Error(code="unsupported", request_id=request_id,
                                      message=f"{frame.TYPE} is not supported by this sidecar"))
            return
        try:
            reply = await handler(client, frame)
        except ConfigError as exc:
            reply = p.Error(code="invalid_field", message=redact(exc.message),
                            request_id=request_id, field=exc.field)
        except SidecarError as exc:  # the text may quote a server's answer, which may quote a key
            reply = p.Error(code=exc.code, message=redact(exc.message), request_id=request_id)
        except Exception as exc:
            if is_disk_full(exc):
                log.warning("client %d: %s failed: %s", client.id, frame.TYPE, DISK_FULL)
                reply = p.Error(code="disk_full", request_id=request_id,
                                message=disk_full_message("the sidecar's data"))
            else:
                log.exception("client %d: handler for %s failed", client.id, frame.TYPE)
                reply = p.Error(code="internal_error", request_id=request_id,
                                message=f"{frame.TYPE} failed inside the sidecar; see its log")
        try:
            await client.send(reply)
        except (ValueError, RecursionError):  # a value JSON cannot carry: answer, stay up
            log.exception("client %d: the reply to %s could not be encoded", client.id,
                          frame.TYPE)
            await client.send(p.Error(code="internal_error", request_id=request_id,
                                      message=f"the reply to {frame.TYPE} could not be "
                                      "encoded; see the sidecar's log"))
            return
        if isinstance(frame, p.Hello | p.DeviceHello) and isinstance(reply, p.HelloResult):
            client.ready = True
            client.name = frame.client
            client.role = frame.role or WRITER
            client.hello_seq = next(_hellos)
            log.info("client %d: hello from %s as %s", client.id, frame.client or "?",
                     client.role)
            for listener in self.hello_listeners:
                await listener(client)

    async def _tool_result(self, client: Client, frame: p.ToolResult) -> None:
        known = False
        if self.tool_result_sink is not None:
            known = await self.tool_result_sink(client, frame)
        if not known:
            log.warning("client %d: tool_result for unknown call id %r", client.id, frame.id)
            await client.send(p.Error(code="unknown_tool_call",
                                      message=f"no tool_call with id {frame.id!r} is waiting "
                                      "for a result", field="id"))

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY,
                        message: bytes = b"sidecar shutting down") -> None:
        self.closing = True
        await asyncio.gather(*(c.ws.close(code=code, message=message)
                               for c in list(self.clients.values())), return_exceptions=True)
