"""Frames kept for apps written against the old server (the seed's device WebSocket)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from sidecar.protocol.base import Frame


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceHello(Frame):
    """The old server's ``hello``, accepted as an alias: the same ``hello_result`` reply and
    session (a writer unless ``role`` says otherwise); ``request_id`` is optional here, and
    the reply carries ``"device_hello"`` when it is absent."""

    TYPE: ClassVar[str] = "device_hello"
    DIRECTION: ClassVar[str] = "client"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "device_hello", "device_id": "dev_5b1e"}
    #: The reply's ``request_id`` when the frame carries none.
    DEFAULT_REQUEST_ID: ClassVar[str] = "device_hello"
    request_id: str | None = None
    device_id: str | None = None
    protocol: int | None = None
    client: str | None = None
    role: Literal["writer", "observer"] | None = None
