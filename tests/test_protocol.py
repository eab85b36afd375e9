"""The protocol module alone: every frame type round-trips; decode refuses with precise codes."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Any

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


#: Each client frame's fields as docs/protocol.md states them, written by hand (not read from
#: the frame classes): name → (JSON type, required). "any" is any JSON value.
GOLD_FIELDS: dict[str, dict[str, tuple[str, bool]]] = {
    "hello": {"request_id": ("str", True), "protocol": ("int", False),
              "client": ("str", False), "device_id": ("str", False)},
    "agent_list": {"request_id": ("str", True), "kind": ("str", False)},
    "agent_upsert": {"request_id": ("str", True), "agent": ("object", True)},
    "agent_delete": {"request_id": ("str", True), "agent_id": ("str", True)},
    "run_list": {"request_id": ("str", True), "agent_id": ("str", False),
                 "limit": ("int", False), "before": ("str", False)},
    "status": {"request_id": ("str", True)},
    "run_agent": {"request_id": ("str", True), "agent_id": ("str", True),
                  "full": ("bool", False)},
    "cancel_run": {"request_id": ("str", True), "run_id": ("str", True)},
    "tool_result": {"id": ("str", True), "result": ("any", False), "error": ("str", False)},
    "oauth_start": {"request_id": ("str", True), "provider": ("str", True),
                    "client": ("object", True), "account_hint": ("str", False),
                    "flow": ("str", False)},
    "oauth_cancel": {"request_id": ("str", True), "flow_id": ("str", True)},
    "secret_set": {"request_id": ("str", True), "kind": ("str", True),
                   "account": ("str", True), "value": ("str", False)},
}
#: Values of the wrong JSON type for each type (bool is not an integer, 1 is not a bool).
WRONG: dict[str, list[Any]] = {
    "str": [7, 2.5, True, [], {"a": 1}],
    "int": ["3", 2.5, True, [], {}],
    "bool": [1, 0, "true", [], {}],
    "object": [[], "x", 3, False],
}


def _value_fits(value: Any, kind: str, required: bool) -> bool:
    if value is None:
        return not required or kind == "any"
    return {"str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "bool": isinstance(value, bool), "object": isinstance(value, dict),
            "any": True}[kind]


def oracle(obj: Any) -> set[str]:
    """What decode may answer for a parsed JSON value: the frame type, or the error codes."""
    if not isinstance(obj, dict):
        return {"not_an_object"}
    kind = obj.get("type")
    if not isinstance(kind, str):
        return {"missing_type"}
    if kind not in GOLD_FIELDS:
        return {"unknown_type"}
    if obj.get("protocol") is not None and obj["protocol"] != 1:
        return {"unsupported_protocol"}
    problems = set()
    for name, (json_type, required) in GOLD_FIELDS[kind].items():
        if name not in obj:
            problems |= {"missing_field"} if required else set()
        elif not _value_fits(obj[name], json_type, required):
            problems.add("invalid_field")
    if obj.get("request_id") == "" and "request_id" in GOLD_FIELDS[kind]:
        problems.add("missing_field")
    return problems or {kind}


def test_the_gold_table_names_every_client_frame() -> None:
    assert set(GOLD_FIELDS) <= set(p.CLIENT_FRAMES)
    for kind, gold in GOLD_FIELDS.items():
        assert set(gold) <= {f.name for f in dataclasses.fields(p.CLIENT_FRAMES[kind])}, kind


@pytest.mark.parametrize(("kind", "name"), [(k, n) for k, g in GOLD_FIELDS.items() for n in g])
def test_a_field_of_the_wrong_type_is_refused_and_named(kind: str, name: str) -> None:
    json_type, required = GOLD_FIELDS[kind][name]
    base = valid_example(kind)
    assert p.decode(json.dumps(base)).TYPE == kind  # precondition: the frame is fine as is
    wrong_values = [*WRONG.get(json_type, [])] + ([None] if required else [])
    if name == "protocol":  # any other number is another protocol, refused as such
        wrong_values = [True, 1.0]
    assert wrong_values or json_type == "any"
    words = {"str": "string", "int": "integer", "bool": "boolean", "object": "object"}
    for wrong in wrong_values:
        with pytest.raises(p.ProtocolError) as info:
            p.decode(json.dumps({**base, name: wrong}))
        assert (info.value.code, info.value.field) == ("invalid_field", name), wrong
        said = (f"{kind}: field {name!r} must be {words[json_type]}"
                f"{'' if required else ' or null'}, got {type(wrong).__name__}")
        assert info.value.message == said, (info.value.message, said)
        expect_rid = base.get("request_id") if name != "request_id" else None
        assert info.value.request_id == expect_rid, wrong
    if required:
        missing = {k: v for k, v in base.items() if k != name}
        with pytest.raises(p.ProtocolError) as info:
            p.decode(json.dumps(missing))
        assert info.value.code == "missing_field", name


def test_other_protocol_versions_and_empty_request_ids_are_refused() -> None:
    for proto in (2, 0, "1"):
        with pytest.raises(p.ProtocolError) as info:
            p.decode(json.dumps({"type": "hello", "request_id": "r", "protocol": proto}))
        assert (info.value.code, info.value.request_id) == ("unsupported_protocol", "r")
    with pytest.raises(p.ProtocolError) as info:
        p.decode('{"type": "status", "request_id": ""}')
    assert info.value.code == "missing_field"


def valid_example(kind: str) -> dict[str, Any]:
    """Every field of ``kind`` with a value of its documented type."""
    sample = {"str": "x", "int": 5, "bool": True, "object": {"k": [1]}, "any": {"id": 3}}
    obj: dict[str, Any] = {"type": kind}
    for name, (json_type, _required) in GOLD_FIELDS[kind].items():
        obj[name] = 1 if name == "protocol" else sample[json_type]
    return obj


texts = st.text(max_size=12)  # no lone surrogates: hypothesis leaves category Cs out
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children,
                                                                        max_size=4),
    max_leaves=20,
)
_JSON_TYPE = {"str": texts.filter(bool), "int": st.integers(-(2**53), 2**53),
              "bool": st.booleans(), "object": st.dictionaries(texts, json_values, max_size=4),
              "any": json_values}


@st.composite
def valid_frames(draw: st.DrawFn) -> dict[str, Any]:
    """A client frame built from the gold table: required fields, some optional ones or null."""
    kind = draw(st.sampled_from(sorted(GOLD_FIELDS)))
    obj: dict[str, Any] = {"type": kind}
    for name, (json_type, required) in GOLD_FIELDS[kind].items():
        if not required and not draw(st.booleans()):
            continue
        if name == "protocol":
            obj[name] = draw(st.sampled_from([1, None]))
        elif not required and draw(st.integers(0, 3)) == 0:
            obj[name] = None
        else:
            obj[name] = draw(_JSON_TYPE[json_type])
    return obj


def test_decode_accepts_every_valid_frame_with_its_values() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=400, deadline=None, derandomize=True, database=None)
    @given(valid_frames(), st.booleans())
    def run(obj: dict[str, Any], ascii_: bool) -> None:
        frame = p.decode(json.dumps(obj, ensure_ascii=ascii_))
        assert type(frame).TYPE == obj["type"]
        for name in GOLD_FIELDS[obj["type"]]:
            assert getattr(frame, name) == obj.get(name), name
        seen[obj["type"]] += 1

    run()
    assert set(seen) == set(GOLD_FIELDS), seen  # every frame type was tried, and accepted
    assert sum(seen.values()) >= 300, seen


def _one_field_replaced(obj: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    names = sorted(set(GOLD_FIELDS[obj["type"]]) - {"protocol"})
    return st.builds(lambda name, value: {**obj, name: value}, st.sampled_from(names),
                     json_values | st.sampled_from(["", "type"]))


def test_decode_answers_like_the_documented_rules() -> None:
    """Random frame-shaped objects: accepted exactly when the gold table says they are valid."""
    outcomes: Counter[str] = Counter()

    @settings(max_examples=600, deadline=None, derandomize=True, database=None)
    @given(st.dictionaries(st.sampled_from(["type", "request_id", "id", "agent", "agent_id",
                                            "limit", "result", "error", "protocol", "kind",
                                            "full", "run_id", "account", "before"]),
                           json_values | st.sampled_from([*GOLD_FIELDS, "tool_call", "nope"]),
                           max_size=6)
           | valid_frames() | valid_frames().flatmap(_one_field_replaced))
    def run(obj: dict[str, Any]) -> None:
        want = oracle(obj)
        try:
            got = p.decode(json.dumps(obj)).TYPE
        except p.ProtocolError as exc:
            assert exc.message
            got = exc.code
        assert got in want, (obj, got, want)
        outcomes["accepted" if got in GOLD_FIELDS else got] += 1

    run()
    # both sides were exercised: a decoder that refuses all, or accepts all, cannot pass
    assert outcomes["accepted"] >= 100 and outcomes["invalid_field"] >= 50, outcomes
    assert outcomes["missing_field"] and outcomes["unknown_type"], outcomes


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


def test_node_client_types_are_generated_from_the_schema() -> None:
    """clients/node's TypeScript types follow docs/protocol.schema.json (gen_docs reruns them)."""
    import shutil
    import subprocess
    from pathlib import Path

    if shutil.which("node") is None:
        pytest.skip("node is not installed: the Node client's own tests check this too")
    script = Path(__file__).resolve().parents[1] / "clients" / "node" / "scripts" / "gen-types.js"
    done = subprocess.run(["node", str(script), "--check"], capture_output=True, text=True,
                          cwd=script.parents[1], timeout=60)
    assert done.returncode == 0, (
        f"clients/node types are stale: run python scripts/gen_docs.py\n{done.stdout}"
        f"{done.stderr}")


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


def _nested(levels: int) -> str:
    """An agent_upsert whose frame nests ``levels`` JSON containers deep (the frame is 1)."""
    return ('{"type":"agent_upsert","request_id":"n","agent":{"f":'
            + "[" * (levels - 2) + "]" * (levels - 2) + "}}")


#: Raw input → (error code, request_id echoed, words the message must hold), by hand.
REFUSED: list[tuple[str | bytes, str, str | None, str]] = [  # + field below
    (b'{"type":"status","request_id":"b"}', "binary_frame", None, "binary frames"),
    ('{"type":"status","request_id":"x"', "invalid_json", None, "not valid JSON"),
    ('{"type":"status","request_id":"n","x":NaN}', "invalid_json", None, "NaN is not valid"),
    ('{"type":"status","request_id":"i","x":-Infinity}', "invalid_json", None, "Infinity"),
    ('{"type":"run_list","request_id":"f","limit":1e400}', "invalid_json", None,
     "out of range"),
    ('[{"type":"status"}]', "not_an_object", None, "got list"),
    ('"status"', "not_an_object", None, "got str"),
    ('{"request_id":"t"}', "missing_type", "t", "no string 'type'"),
    ('{"type":7,"request_id":"t"}', "missing_type", "t", "no string 'type'"),
    ('{"type":"tool_call","request_id":"u"}', "unknown_type", "u", "'tool_call'"),
    ('{"type":"status","request_id":"s","v":"\\ud800"}', "invalid_json", "s",
     "a string holds an unpaired UTF-16 surrogate"),
    ('{"type":"status","request_id":"s","v":[["\\udfff"]]}', "invalid_json", "s",
     "a string holds an unpaired UTF-16 surrogate"),
    ('{"v":"\\ud800","w":"fine","type":"status","request_id":"o"}', "invalid_json", "o",
     "a string holds an unpaired UTF-16 surrogate"),  # found whatever comes after it
    ('{"type":"status","request_id":"k","\\udc80":1}', "invalid_json", "k",
     "a key holds an unpaired UTF-16 surrogate"),
    ('{"type":"status","request_id":"\\ud800"}', "invalid_json", None, "surrogate"),
    ('{"type":"status","request_id":"s","v":"\ud800"}', "invalid_json", "s", "surrogate"),
    ("[" * 100_000 + "]" * 100_000, "invalid_json", None, "nested too deeply"),
    (_nested(65), "invalid_json", "n", "nested deeper than 64 levels"),
    ('{"type":"hello","request_id":"p","protocol":2}', "unsupported_protocol", "p",
     "protocol 2 is not supported"),
    ('{"type":"run_list","request_id":"l","limit":"5"}', "invalid_field", "l",
     "field 'limit' must be integer or null, got str"),
    ('{"type":"run_agent","request_id":"a"}', "missing_field", "a",
     "missing required field 'agent_id'"),
    ('{"type":"status","request_id":""}', "missing_field", None, "'request_id' must be"),
]


#: The field an error names, by code (None: the frame as a whole).
FIELD_BY_CODE = {"missing_type": "type", "unknown_type": "type",
                 "unsupported_protocol": "protocol", "invalid_field": "limit"}


@pytest.mark.parametrize(("raw", "code", "rid", "words"), REFUSED,
                         ids=[f"{c}-{i}" for i, (_r, c, _q, _w) in enumerate(REFUSED)])
def test_refusals_name_the_problem(raw: str | bytes, code: str, rid: str | None,
                                   words: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode(raw)
    err = info.value
    assert (err.code, err.request_id) == (code, rid), err.message
    field = FIELD_BY_CODE.get(code)
    if code == "missing_field":
        field = "request_id" if "request_id" in words else "agent_id"
    assert err.field == field, (err.field, field)
    assert words in err.message, err.message
    frame = json.loads(p.encode(err.to_frame()))
    assert frame["type"] == "error" and frame["code"] == code and frame["message"] == err.message


def test_nesting_up_to_the_limit_and_surrogate_pairs_are_fine() -> None:
    frame = p.decode(_nested(64))
    assert isinstance(frame, p.AgentUpsert)
    deep = frame.agent["f"]
    for _ in range(61):
        (deep,) = deep
    assert deep == []
    ok = p.decode('{"type":"status","request_id":"\\ud83d\\ude00","v":["\\ud83d\\ude00"]}')
    assert ok == p.Status(request_id="😀")


def test_encode_writes_utf8_refuses_nan_and_escapes_lone_surrogates() -> None:
    hello = p.HelloResult(request_id="r", version="1", protocol=1, capabilities=["é"],
                          models=[])
    text = p.encode(hello)
    assert '"capabilities":["é"]' in text and " " not in text  # UTF-8, compact separators
    with pytest.raises(ValueError):
        p.encode(p.ToolCall(id="c", action="insert", table="tasks", data={"x": float("nan")}))
    wire = p.encode(p.RunProgress(run_id="r", agent_id="a", files_done=0, files_total=1,
                                  items_found=0, current="/x/\udcff.md"))
    assert wire.isascii() and '"current":"/x/\\udcff.md"' in wire
    assert wire.startswith('{"type":"run_progress","run_id":"r"')
    with pytest.raises(ValueError):
        p.encode(p.RunProgress(run_id="\udcff", agent_id="a", files_done=0, files_total=1,
                               items_found=float("inf"), current=None))


def test_the_size_limit_is_inclusive() -> None:
    head = '{"type":"status","request_id":"r","pad":"'
    exact = head + "x" * (1000 - len(head) - 2) + '"}'
    assert len(exact.encode()) == 1000
    assert p.decode(exact, max_bytes=1000) == p.Status(request_id="r")
    with pytest.raises(p.ProtocolError) as info:
        p.decode(exact, max_bytes=999)
    assert info.value.code == "frame_too_large"
    assert info.value.message == "frame is 1000 bytes; the limit is 999 bytes"


def test_a_field_with_named_choices_takes_only_those() -> None:
    """hello.role is 'writer' or 'observer' (docs/protocol.md); anything else is refused."""
    for role in ("writer", "observer", None):
        frame = p.decode(json.dumps({"type": "hello", "request_id": "r", "role": role}))
        assert frame.role == role  # type: ignore[attr-defined]
    for wrong, got in (("boss", "'boss'"), ("Writer", "'Writer'"), (1, "int"), (True, "bool"),
                       (["writer"], "list"), ("w" * 41, "str"), ("w" * 40, repr("w" * 40))):
        with pytest.raises(p.ProtocolError) as info:
            p.decode(json.dumps({"type": "hello", "request_id": "r", "role": wrong}))
        assert (info.value.code, info.value.field) == ("invalid_field", "role")
        assert info.value.message == (
            f"hello: field 'role' must be one of 'writer', 'observer' or null, got {got}")
