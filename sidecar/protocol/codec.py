"""Decode and validate client frames in one place; encode any frame to the wire."""

from __future__ import annotations

import json
import math
import re
import types
import typing
from dataclasses import MISSING, fields
from typing import Any, Literal, Union

from sidecar import PROTOCOL_VERSION
from sidecar.protocol.frames import (
    CLIENT_FRAMES,
    FRAME_TYPES,
    MAX_FRAME_BYTES,
    Frame,
    ProtocolError,
    Request,
)


def _hints(cls: type[Frame]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_specs(cls: type[Frame]) -> list[tuple[str, Any, bool]]:
    hints = _hints(cls)
    out = []
    for f in fields(cls):
        required = f.default is MISSING and f.default_factory is MISSING
        out.append((f.name, hints[f.name], required))
    return out


_SPECS: dict[type[Frame], list[tuple[str, Any, bool]]] = {
    c: _field_specs(c) for c in FRAME_TYPES.values()
}


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list or hint is list:
        if not isinstance(value, list):
            return False
        args = typing.get_args(hint)
        return not args or all(_type_ok(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return False  # pragma: no cover - a frame field with an unsupported hint


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    names = {str: "string", int: "integer", float: "number", bool: "boolean",
             type(None): "null", Any: "any JSON value"}
    if hint in names:
        return names[hint]
    if origin is list or hint is list:
        return "array"
    if origin is dict or hint is dict:
        return "object"
    return str(hint)  # pragma: no cover


def _got(value: Any, hint: Any) -> str:
    """What the peer sent: a short string itself where only some strings do, else its type."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else ()
    choices = any(typing.get_origin(h) is Literal for h in (hint, *args))
    if choices and isinstance(value, str) and len(value) <= 40 and is_utf8(value):
        return repr(value)
    return type(value).__name__


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """``1e400`` parses to infinity, which no reply could carry back: refuse it like NaN."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


#: Deeper frames are refused: nothing in the protocol nests like that, and echoing or storing
#: such values recurses in the handlers (an agent's filter_config, a tool_result's result).
MAX_DEPTH = 64
#: A ``\uD800``-``\uDFFF`` escape: the only way an unpaired surrogate gets into a frame.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def is_utf8(text: str) -> bool:
    """False for text holding lone surrogates (how Python carries undecodable bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _value_problem(obj: Any, check_strings: bool) -> str | None:
    """Why a parsed frame cannot be taken: nesting beyond MAX_DEPTH, an unpaired surrogate
    (SQLite and the UTF-8 wire refuse those later, far from the frame)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if not is_utf8(value):
                return "a string holds an unpaired UTF-16 surrogate (\\ud800-\\udfff)"
            continue
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        children = value.values() if isinstance(value, dict) else value
        if check_strings and isinstance(value, dict) and not all(map(is_utf8, value)):
            return "a key holds an unpaired UTF-16 surrogate (\\ud800-\\udfff)"
        for child in children:
            if isinstance(child, dict | list) or (check_strings and isinstance(child, str)):
                stack.append((child, depth + 1))
    return None


def decode(raw: str | bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> Frame:
    """Parse and validate one client frame or raise :class:`ProtocolError` saying what is wrong."""
    if isinstance(raw, bytes | bytearray):
        raise ProtocolError("binary_frame", "binary frames are not supported; send JSON text")
    try:
        size, raw_surrogates = len(raw.encode("utf-8")), False
    except UnicodeEncodeError:  # only in-process: a socket's text is valid UTF-8
        size, raw_surrogates = len(raw.encode("utf-8", "surrogatepass")), True
    if size > max_bytes:
        raise ProtocolError("frame_too_large",
                            f"frame is {size} bytes; the limit is {max_bytes} bytes")
    try:
        obj = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ProtocolError("invalid_json", f"frame is not valid JSON: {detail}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("not_an_object",
                            f"frame must be a JSON object, got {type(obj).__name__}")
    check_strings = raw_surrogates or _SURROGATE_ESCAPE.search(raw) is not None
    rid = obj.get("request_id")
    request_id = (rid if isinstance(rid, str) and rid and (not check_strings or is_utf8(rid))
                  else None)
    problem = _value_problem(obj, check_strings)
    if problem is not None:
        raise ProtocolError("invalid_json", f"frame is not usable JSON: {problem}",
                            request_id=request_id)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("missing_type", "frame has no string 'type' field",
                            request_id=request_id, field="type")
    cls = CLIENT_FRAMES.get(kind)
    if cls is None:
        known = ", ".join(sorted(CLIENT_FRAMES))
        raise ProtocolError("unknown_type", f"unknown frame type {kind!r}; expected one of {known}",
                            request_id=request_id, field="type")
    proto = obj.get("protocol")
    if proto is not None and proto != PROTOCOL_VERSION:
        raise ProtocolError("unsupported_protocol",
                            f"protocol {proto!r} is not supported; this sidecar speaks "
                            f"{PROTOCOL_VERSION}", request_id=request_id, field="protocol")
    kwargs: dict[str, Any] = {}
    for name, hint, required in _SPECS[cls]:
        if name not in obj:
            if required:
                raise ProtocolError("missing_field", f"{kind}: missing required field {name!r}",
                                    request_id=request_id, field=name)
            continue
        value = obj[name]
        if not _type_ok(value, hint):
            raise ProtocolError("invalid_field",
                                f"{kind}: field {name!r} must be {_type_name(hint)}, "
                                f"got {_got(value, hint)}",
                                request_id=request_id, field=name)
        kwargs[name] = value
    if issubclass(cls, Request) and not kwargs.get("request_id"):
        raise ProtocolError("missing_field", f"{kind}: 'request_id' must be a non-empty string",
                            field="request_id")
    return cls(**kwargs)


def to_dict(frame: Frame) -> dict[str, Any]:
    """The frame as a JSON object; ``None`` optionals are omitted (the seed's shapes exactly)."""
    out: dict[str, Any] = {"type": frame.TYPE}
    for name, _hint, required in _SPECS[type(frame)]:
        value = getattr(frame, name)
        if value is None and not required:
            continue
        out[name] = value
    return out


def encode(frame: Frame) -> str:
    text = json.dumps(to_dict(frame), ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)
    if not (text.isascii() or is_utf8(text)):  # an unpaired surrogate (a file name from a
        # non-UTF-8 disk): the wire is UTF-8, so send a \\udcxx escape, not a failed send
        text = json.dumps(to_dict(frame), ensure_ascii=True, separators=(",", ":"),
                          allow_nan=False)
    return text


def from_dict(obj: dict[str, Any]) -> Frame:
    """Build any frame (either direction) from a dict; used by tests and the Python client."""
    cls = FRAME_TYPES[obj["type"]]
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in obj.items() if k in names})
