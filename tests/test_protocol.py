"""The protocol module alone: every frame type round-trips; decode refuses with precise codes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar import protocol as p


@pytest.mark.parametrize("frame_type", sorted(p.FRAME_TYPES))
def test_every_frame_type_round_trips_through_its_example(frame_type: str) -> None:
    cls = p.FRAME_TYPES[frame_type]
    example = cls.EXAMPLE
    assert example["type"] == frame_type, "each frame documents itself with an example"
    frame = p.from_dict(example)
    assert isinstance(frame, cls)
    assert p.to_dict(frame) == example
    assert json.loads(p.encode(frame)) == example
    if cls.DIRECTION == "client":
        assert p.decode(p.encode(frame)) == frame


def test_frames_are_immutable() -> None:
    frame = p.Hello(request_id="r")
    with pytest.raises(AttributeError):
        frame.request_id = "other"  # type: ignore[misc]


def test_seed_insert_shape_is_exact() -> None:
    call = p.ToolCall(id="c1", action="insert", table="tasks",
                      data={"title": "t", "isAiSuggested": 1, "isApproved": 0})
    assert p.encode(call) == (
        '{"type":"tool_call","id":"c1","action":"insert","table":"tasks",'
        '"data":{"title":"t","isAiSuggested":1,"isApproved":0}}'
    )
    ok = p.decode('{"type":"tool_result","id":"c1","result":{"id":3}}')
    assert ok == p.ToolResult(id="c1", result={"id": 3})
    failed = p.decode('{"type":"tool_result","id":"c1","error":"constraint failed"}')
    assert isinstance(failed, p.ToolResult) and failed.error == "constraint failed"


def test_unknown_extra_keys_are_ignored_for_forward_compatibility() -> None:
    assert p.decode('{"type":"status","request_id":"r","future":1}') == p.Status(request_id="r")


def test_server_frames_are_not_accepted_from_clients() -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode(json.dumps(p.ToolCall.EXAMPLE))
    assert info.value.code == "unknown_type"


def test_size_limit_counts_utf8_bytes() -> None:
    obj = {"type": "hello", "request_id": "r", "client": "é" * 600}
    frame = json.dumps(obj, ensure_ascii=False)
    with pytest.raises(p.ProtocolError) as info:
        p.decode(frame, max_bytes=1000)
    assert info.value.code == "frame_too_large"
    assert p.decode(frame, max_bytes=2000)


def test_schemas_cover_every_frame_and_mark_required_fields() -> None:
    schemas = p.all_schemas()
    assert set(schemas) == set(p.FRAME_TYPES)
    assert schemas["tool_call"]["required"] == ["type", "id", "action", "table", "data"]
    assert schemas["hello"]["properties"]["protocol"] == {
        "anyOf": [{"type": "integer"}, {"type": "null"}]}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children,
                                                                        max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "request_id", "id", "agent", "agent_id", "limit",
                                        "result", "error", "protocol", "kind"]),
                       json_values | st.sampled_from(sorted(p.CLIENT_FRAMES)), max_size=6))
def test_decode_either_returns_a_valid_frame_or_a_protocol_error(obj: dict) -> None:
    raw = json.dumps(obj)
    try:
        frame = p.decode(raw)
    except p.ProtocolError as exc:
        assert exc.code and exc.message
        return
    assert frame.TYPE == obj["type"]
    assert p.decode(p.encode(frame)) == frame


def test_protocol_docs_are_generated_from_the_code() -> None:
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("gen_docs", root / "scripts" / "gen_docs.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (root / "docs" / "protocol.md").read_text() == mod.protocol_md(), (
        "docs/protocol.md is stale: run python scripts/gen_docs.py")
    assert json.loads((root / "docs" / "protocol.schema.json").read_text()) == p.all_schemas()


class _Socket:
    """Stands in for the aiohttp socket: keeps what the hub sends."""

    closed = False

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_str(self, data: str) -> None:
        self.sent.append(data)


@pytest.mark.parametrize("error", ["sidecar", "config"])
async def test_error_frames_never_carry_a_registered_secret(error: str) -> None:
    """A handler's error text may quote a server's answer, which may quote a key."""
    from sidecar.errors import ConfigError, SidecarError
    from sidecar.hub import Client, Hub
    from sidecar.logging_setup import register_secret

    secret = "sk-test-" + "q" * 24
    register_secret(secret)
    hub = Hub()

    @hub.route(p.Status)
    async def failing(client: Client, frame: p.Frame) -> p.Frame:
        if error == "config":
            raise ConfigError(f"bad remote.api_key {secret}", field="remote")
        raise SidecarError(f"server said: 401 invalid key {secret}")

    sock = _Socket()
    await hub.handle_text(Client(sock), '{"type": "status", "request_id": "r1"}')  # type: ignore[arg-type]
    (reply,) = [json.loads(s) for s in sock.sent]
    assert reply["type"] == "error" and reply["request_id"] == "r1"
    assert secret not in sock.sent[0] and "***" in reply["message"]
