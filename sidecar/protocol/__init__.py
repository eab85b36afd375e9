"""The wire protocol: frames (types), codec (decode/encode), schema (JSON Schema export)."""

from __future__ import annotations

from sidecar.protocol.codec import decode, encode, from_dict, to_dict
from sidecar.protocol.frames import *  # noqa: F403
from sidecar.protocol.frames import __all__ as _frames_all
from sidecar.protocol.schema import all_schemas, json_schema

__all__ = [*_frames_all, "all_schemas", "decode", "encode", "from_dict", "json_schema", "to_dict"]
