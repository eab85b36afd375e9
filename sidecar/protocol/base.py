"""Frame base types (no I/O): the tag, the direction, request/reply pairing, protocol errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

MAX_FRAME_BYTES = 1024 * 1024


class ProtocolError(Exception):
    """A frame the sidecar cannot accept; becomes an ``error`` frame, never a disconnect."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.field = field

    def to_frame(self) -> Error:
        return Error(code=self.code, message=self.message, request_id=self.request_id,
                     field=self.field)


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """Base of all frames; ``TYPE`` is the wire tag, ``DIRECTION`` who sends it."""

    TYPE: ClassVar[str] = ""
    DIRECTION: ClassVar[str] = ""  # "client" (client → sidecar) or "sidecar"
    EXAMPLE: ClassVar[dict[str, Any]] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Request(Frame):
    """A client request; the reply echoes ``request_id``."""

    DIRECTION: ClassVar[str] = "client"
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply(Frame):
    """A reply to a :class:`Request`."""

    DIRECTION: ClassVar[str] = "sidecar"
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(Frame):
    """Why a frame was refused; ``request_id`` echoes the request when it could be read."""

    TYPE: ClassVar[str] = "error"
    DIRECTION: ClassVar[str] = "sidecar"
    EXAMPLE: ClassVar[dict[str, Any]] = {
        "type": "error", "request_id": "r3", "code": "invalid_field",
        "message": "agent.schedule_cron: invalid cron expression '61 * * * *'",
        "field": "agent.schedule_cron"}
    code: str
    message: str
    request_id: str | None = None
    field: str | None = None
