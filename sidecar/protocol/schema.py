"""JSON Schema for every frame, derived from the same field specs the decoder checks."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

from sidecar.protocol.codec import _SPECS
from sidecar.protocol.frames import FRAME_TYPES, Frame


def _schema_for_hint(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    if hint is Any:
        return {}
    if origin is Literal:
        return {"enum": list(typing.get_args(hint))}
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema_for_hint(h) for h in typing.get_args(hint)]}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean",
              type(None): "null"}
    if hint in simple:
        return {"type": simple[hint]}
    if origin is list or hint is list:
        args = typing.get_args(hint)
        return {"type": "array", **({"items": _schema_for_hint(args[0])} if args else {})}
    return {"type": "object"}


def json_schema(cls: type[Frame]) -> dict[str, Any]:
    props: dict[str, Any] = {"type": {"const": cls.TYPE}}
    required = ["type"]
    for name, hint, req in _SPECS[cls]:
        props[name] = _schema_for_hint(hint)
        if req:
            required.append(name)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": cls.__name__,
        "description": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": True,
    }


def all_schemas() -> dict[str, dict[str, Any]]:
    return {t: json_schema(c) for t, c in FRAME_TYPES.items()}
