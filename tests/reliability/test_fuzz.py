"""Fuzzing: the decoder in-process (hypothesis) and the real daemon's /ws with 10,000 frames.

Every bad frame must be answered with an error frame that echoes the request_id a strict
JSON parser can read, and nothing may die: not the connection, not the daemon. The hub
answers one frame at a time, so with frames pipelined on one connection reply i belongs to
frame i; that is how each reply is checked against its own frame.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import string
import time
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import protocol as p
from sidecar.client import DaemonProcess
from tests.reliability.conftest import Record

CODES = {"invalid_json", "not_an_object", "missing_type", "unknown_type", "missing_field",
         "invalid_field", "frame_too_large", "binary_frame", "unsupported_protocol"}
TYPES = sorted(p.CLIENT_FRAMES)
FIELDS = {t: [f.name for f in fields(c)] for t, c in p.CLIENT_FRAMES.items()}
SOCKET_FRAMES = 10_000
IN_PROCESS_EXTRA = 5_000
HYPOTHESIS_EXAMPLES = 800
PROBE_EVERY = 500
LIMIT = p.MAX_FRAME_BYTES
NEST = 100_000
SURROGATES = ["\ud800", "\udfff", "\udc80", "\ud83d"]  # unpaired halves

SPECIALS: list[str] = [
    "", " ", "null", "true", "0", '""', "[]", "{}", '{"type":null}', '{"type":""}',
    '{"type":"status","request_id":NaN}', '{"type":"status","request_id":"r","x":Infinity}',
    '{"type":"hello","request_id":"r","protocol":-Infinity}',
    '{"type":"run_list","request_id":"r","limit":1e400}', '{"type":"hello","request_id":"r",'
    '"protocol":1.0}', '{"type":"status","request_id":"a","request_id":"b"}',
    '{"type":"status","type":"nope","request_id":"d"}', '{"type":"run_list","request_id":"h",'
    f'"limit":{10**4000}}}', '{"type":"run_list","request_id":"h","limit":' + "9" * 5000 + "}",
    '{"type":"hello","request_id":"h","protocol":' + "1" * 4300 + "}",
    '{"type":"status","request_id":"\\ud800"}', '{"type":"\\udfff","request_id":"s"}',
    '{"type":"status","request_id":"s","\\ud800":1}', '{"type":"status","request_id":"\\ud83d'
    '\\ude00"}', '{"type":"agent_upsert","request_id":"deep","agent":' + "[" * 70 + "]" * 70
    + "}", '{"type":"tool_result","id":"c","result":' + "{" * 40 + "}" * 40 + "}",
    '{"type":"hello","request_id":"rtl","client":"\u202egnp.exe\u200b\x00"}',
]
#: 100k-deep arrays and objects, frames over max_frame_bytes (under the 4 MB transport cap).
GIANTS: list[str] = [
    "[" * NEST + "]" * NEST, '{"a":' * NEST + "1" + "}" * NEST,
    '{"type":"status","request_id":"big","pad":"' + "x" * (LIMIT + 10) + '"}',
    '"' + "é" * LIMIT + '"', '{"type":"hello","request_id":"huge","client":"' + "y" * 3_900_000
    + '"}', '{"type":"agent_upsert","request_id":"n","agent":' + "[" * NEST + "]" * NEST + "}",
]


def _strict_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(text)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def parsed_request_id(raw: str | bytes) -> str | None:
    """What an independent strict JSON parser reads as the request_id (an error must echo it)."""
    if isinstance(raw, bytes) or len(raw.encode("utf-8", "surrogatepass")) > LIMIT:
        return None
    try:
        obj = json.loads(raw, parse_constant=_no_constant, parse_float=_strict_float)
    except (ValueError, RecursionError):
        return None
    rid = obj.get("request_id") if isinstance(obj, dict) else None
    if not isinstance(rid, str) or not rid:
        return None
    try:
        rid.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate can never be echoed on a UTF-8 wire
        return None
    return rid


def _valid_projects(projects: list[Any]) -> bool:
    """The documented rules: at most 5,000 objects with a non-empty ``id`` and ``name``, an
    optional string ``client``, ``aliases`` a list of strings, no id twice."""
    if len(projects) > 5000:
        return False
    ids = set()
    for item in projects:
        if not isinstance(item, dict):
            return False
        for key in ("id", "name"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                return False
        if item.get("client") is not None and not isinstance(item["client"], str):
            return False
        aliases = item.get("aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            return False
        if item["id"] in ids:
            return False
        ids.add(item["id"])
    return True


def expected_reply(raw: str | bytes) -> tuple[str, frozenset[str | None]]:
    """The one reply a frame must get from this daemon (no agent, run or flow ever exists in
    it; its keyring refuses everything): (reply type, acceptable error codes)."""
    try:
        frame: Any = p.decode(raw)
    except p.ProtocolError as exc:
        return "error", frozenset({exc.code})
    kind = frame.TYPE
    ok = frozenset({None})
    if kind in ("status", "hello", "agent_list", "oauth_cancel"):
        return f"{kind}_result", ok
    if kind == "device_hello":  # the seed's hello: the same session, the same answer
        return "hello_result", ok
    if kind == "projects_sync":
        return (("projects_sync_result", ok) if _valid_projects(frame.projects)
                else ("error", frozenset({"invalid_field"})))
    if kind == "run_list":
        if frame.limit is None or 1 <= frame.limit <= 500:
            return "run_list_result", ok
        return "error", frozenset({"invalid_field"})
    if kind in ("agent_delete", "run_agent", "cancel_run"):
        return "error", frozenset({"not_found"})
    if kind == "agent_upsert":  # random agents: never a valid one
        return "error", frozenset({"invalid_field"})
    if kind == "tool_result":
        return "error", frozenset({"unknown_tool_call"})
    if kind == "secret_set":
        if frame.kind != "remote_api_key":
            return "error", frozenset({"invalid_field"})
        return "error", frozenset({"no_keyring"})  # storing or deleting: no keyring at all
    if kind == "oauth_start":
        return "error", frozenset({"invalid_field", "no_keyring"})
    raise AssertionError(f"no expectation written for {kind}: add one")


def check_decode(raw: str | bytes) -> tuple[str, str | None]:
    """Decode in-process and check the outcome is sound; returns (code or type, request_id)."""
    try:
        frame = p.decode(raw)
    except p.ProtocolError as exc:
        assert exc.code in CODES, (exc.code, exc.message)
        assert exc.message
        wire = p.encode(exc.to_frame())
        wire.encode("utf-8")  # sendable on a UTF-8 socket
        assert json.loads(wire)["code"] == exc.code
        assert exc.request_id == parsed_request_id(raw), (exc.code, exc.request_id)
        return exc.code, exc.request_id
    assert frame.TYPE in p.CLIENT_FRAMES
    wire = p.encode(frame)
    wire.encode("utf-8")
    assert p.decode(wire) == frame
    rid = getattr(frame, "request_id", None)
    if rid is not None:
        assert rid == parsed_request_id(raw)
    return frame.TYPE, rid


# -- in-process: hypothesis ----------------------------------------------------------------

texts = st.text(max_size=20) | st.builds(lambda a, s, b: a + s + b, st.text(max_size=4),
                                         st.sampled_from(SURROGATES), st.text(max_size=4))
scalars = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.sampled_from([10**300, -(10**4000), 2**63, 1e308]) | texts)
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4)
                      | st.dictionaries(texts, kids, max_size=4), max_leaves=8)
frame_objects = st.sampled_from(TYPES).flatmap(lambda t: st.fixed_dictionaries(
    {"type": st.just(t)}, optional={name: values | st.sampled_from(TYPES) for name in FIELDS[t]}))
frame_texts = st.builds(lambda obj, ascii_: json.dumps(obj, ensure_ascii=ascii_),
                        frame_objects | values, st.booleans())
mutated = frame_texts.flatmap(lambda s: st.integers(0, len(s)).map(lambda i: s[:i] + s[i + 1:]))
duplicates = st.builds(lambda t, a, b: f'{{"type":{json.dumps(t)},"request_id":{json.dumps(a)},'
                       f'"request_id":{json.dumps(b)}}}', st.sampled_from(TYPES), values, values)
raw_inputs = (frame_texts | mutated | duplicates | st.text(max_size=60) | st.binary(max_size=60))
HYPOTHESIS = settings(derandomize=True, max_examples=HYPOTHESIS_EXAMPLES, deadline=None,
                      database=None, suppress_health_check=list(HealthCheck))


@pytest.mark.slow
def test_decoder_answers_anything_with_a_frame_or_a_protocol_error(figure: Record) -> None:
    """Hypothesis, derandomized: no input makes decode raise anything but ProtocolError."""
    outcomes: Counter[str] = Counter()

    @HYPOTHESIS
    @given(raw_inputs)
    def run(raw: str | bytes) -> None:
        outcomes[check_decode(raw)[0]] += 1

    t0 = time.monotonic()
    run()
    gen = Gen(seed=7)  # hypothesis shrinks well but generates slowly: 5,000 more, seeded
    for raw in [*SPECIALS, *GIANTS, *(gen.frame() for _ in range(IN_PROCESS_EXTRA))]:
        outcomes[check_decode(raw)[0]] += 1
    total = sum(outcomes.values())
    assert total >= HYPOTHESIS_EXAMPLES + IN_PROCESS_EXTRA
    assert outcomes["invalid_json"] and outcomes["invalid_field"] and outcomes["binary_frame"]
    assert sum(n for k, n in outcomes.items() if k in p.CLIENT_FRAMES) > 50, outcomes
    figure("fuzz", "decoder inputs (in-process: hypothesis + seeded)", total)
    figure("fuzz", "decoder: frames accepted / refused",
           f"{total - sum(outcomes[c] for c in CODES):,} / {sum(outcomes[c] for c in CODES):,}")
    figure("fuzz", "decoder fuzz seconds", time.monotonic() - t0)


def test_error_frames_echo_the_request_id_and_refuse_what_replies_cannot_carry() -> None:
    """The cases the fuzzer found: each once used to kill the connection or reach SQLite."""
    assert check_decode('{"type":"status","request_id":"\\ud800"}') == ("invalid_json", None)
    assert check_decode('{"type":"\\udfff","request_id":"s"}') == ("invalid_json", "s")
    assert check_decode('{"type":"agent_upsert","request_id":"x","agent":{"kind":"cloud",'
                        '"filter_config":{"a":1e400}}}') == ("invalid_json", None)
    deep = '{"type":"agent_upsert","request_id":"d","agent":{"f":' + "[" * 64 + "]" * 64 + "}}"
    assert check_decode(deep) == ("invalid_json", "d")
    assert check_decode('{"type":"status","request_id":"\\ud83d\\ude00"}') == ("status", "😀")
    # a value with an unpaired surrogate from elsewhere (a file name) is escaped, not dropped
    wire = p.encode(p.RunProgress(run_id="r", agent_id="a", files_done=0, files_total=1,
                                  items_found=0, current="/x/\udcff.md"))
    assert "\\udcff" in wire and json.loads(wire)["current"] == "/x/\udcff.md"


# -- the real daemon ---------------------------------------------------------------------------


class Gen:
    """Frames from a seeded RNG: random JSON, typed frames with wrong fields, garbage, bytes."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.pools = [string.printable, "éß中文😀\u202e\u200b\u0000\u001f\\\"{}[]:,",
                      "".join(SURROGATES)]

    def text(self, n: int = 12) -> str:
        pool = self.r.choice(self.pools)
        return "".join(self.r.choice(pool) for _ in range(self.r.randint(0, n)))

    def value(self, depth: int = 0) -> Any:
        r = self.r
        kind = r.randint(0, 9 if depth < 4 else 6)
        if kind == 0:
            return None
        if kind == 1:
            return r.random() < 0.5
        if kind == 2:
            return r.choice([0, -1, 2**53 + 1, 10 ** r.randint(20, 600), -(10**4000)])
        if kind == 3:
            return r.choice([r.uniform(-1e6, 1e6), 1e308, -0.0, 5e-324])
        if kind in (4, 5, 6):
            return r.choice(TYPES) if r.random() < 0.1 else self.text()
        if kind in (7, 8):
            return [self.value(depth + 1) for _ in range(r.randint(0, 4))]
        return {self.text(6): self.value(depth + 1) for _ in range(r.randint(0, 4))}

    def dumps(self, obj: Any) -> str:
        text = json.dumps(obj, ensure_ascii=self.r.random() < 0.3)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # the surrogates go as \\u escapes, as a peer would send
            text = json.dumps(obj)
        return text

    def typed(self) -> dict[str, Any]:
        kind = self.r.choice(TYPES)
        obj: dict[str, Any] = {"type": kind}
        for name in FIELDS[kind]:
            if self.r.random() < 0.7:
                obj[name] = self.value()
        if self.r.random() < 0.5:
            obj["request_id"] = f"f{self.r.randrange(10**9)}"
        return obj

    def valid(self) -> dict[str, Any]:
        rid = f"v{self.r.randrange(10**9)}"
        return self.r.choice([
            {"type": "status"}, {"type": "agent_list", "kind": self.r.choice(["local", "x"])},
            {"type": "run_list", "limit": self.r.choice([0, 1, 50, 501])},
            {"type": "agent_delete", "agent_id": self.text()}, {"type": "hello", "protocol": 1},
            {"type": "run_agent", "agent_id": self.text()}, {"type": "cancel_run",
                                                             "run_id": self.text()},
            {"type": "agent_upsert", "agent": {"kind": self.text(), "name": self.text()}},
            {"type": "tool_result", "id": self.text(), "result": self.value()},
            {"type": "secret_set", "kind": "remote_api_key", "account": "x", "value": None},
            {"type": "oauth_start", "client": {"client_id": self.text()},
             "provider": self.r.choice(["gmail", "outlook", "teams", self.text()])},
            {"type": "device_hello", "device_id": self.text()},
            {"type": "oauth_cancel", "flow_id": self.text()},
            {"type": "projects_sync", "projects": self.r.choice([
                [], [{"id": "p1", "name": "Harbor Bakery", "aliases": ["HB"]}],
                [{"id": "p1", "name": " "}], [{"id": "p1", "name": "A"}, {"id": "p1", "name": "B"}],
                [{"id": "p2", "name": "Spring", "client": 7}], [self.value()]])},
        ]) | {"request_id": rid}

    def frame(self) -> str | bytes:
        raw = self._frame()
        if isinstance(raw, str):  # a text frame is UTF-8: an unpaired surrogate goes as \\u
            raw = raw.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw

    def _frame(self) -> str | bytes:
        r, roll = self.r, self.r.random()
        if roll < 0.10:
            return self.dumps(self.value())
        if roll < 0.45:
            return self.dumps(self.typed())
        if roll < 0.60:
            return self.dumps(self.valid())
        if roll < 0.75:
            s = self.dumps(self.typed())
            i = r.randrange(len(s) + 1)
            return r.choice([s[:i], s[:i] + self.text(3) + s[i:], s[:i] + s[i + 1:]])
        if roll < 0.80:
            return self.text(80).encode("utf-8", "replace").decode("utf-8")
        if roll < 0.86:
            return r.choice([r.randbytes(r.randint(0, 64)), b"", b"\xff\xfe\xfd",
                             self.dumps(self.valid()).encode()])
        return r.choice(SPECIALS)


async def _tap(ws: aiohttp.ClientWebSocketResponse, into: list[dict[str, Any]], want: int,
               done: asyncio.Event) -> None:
    """Keep every frame received; ``done`` once ``want`` replies came (or the socket closed)."""
    replies = 0
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            into.append(json.loads(msg.data))
            replies += _is_reply(into[-1])
            if replies >= want:
                done.set()
    done.set()


@pytest.mark.slow
async def test_daemon_answers_10k_fuzzed_frames_and_stays_up(
        data_dir: Path, token: str, figure: Record) -> None:
    """10,000 frames pipelined on one socket: one well-formed reply each, in order, 0 crashes."""
    d = await DaemonProcess.start(data_dir, token=token, env={
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})  # secret_set writes nothing
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(d.url(), headers={"Authorization": f"Bearer {token}"},
                                      max_msg_size=0)
        gen = Gen(seed=20261201)
        frames: list[str | bytes] = [gen.frame() for _ in range(SOCKET_FRAMES)]
        for i, raw in enumerate(GIANTS):  # among the others, not all at the end
            frames.insert(1500 * (i + 1), raw)
        got: list[dict[str, Any]] = []
        done = asyncio.Event()
        want = len(frames) + len(frames) // PROBE_EVERY + 1
        reader = asyncio.create_task(_tap(ws, got, want, done))
        expected: list[tuple[str, str | None]] = []
        wants: list[tuple[str, frozenset[str | None]]] = []
        t0 = time.monotonic()
        for i, raw in enumerate(frames, 1):
            expected.append(check_decode(raw))
            wants.append(expected_reply(raw))
            await (ws.send_bytes(raw) if isinstance(raw, bytes) else ws.send_str(raw))
            if i % PROBE_EVERY == 0:  # the same connection keeps answering, all along
                expected.append(("probe", f"probe-{i}"))
                wants.append(("status_result", frozenset({None})))
                await ws.send_str(json.dumps({"type": "status", "request_id": f"probe-{i}"}))
        expected.append(("probe", "last"))
        wants.append(("hello_result", frozenset({None})))
        await ws.send_str(json.dumps({"type": "hello", "request_id": "last", "protocol": 1}))
        assert len(expected) == want
        await asyncio.wait_for(done.wait(), 60)
        elapsed = time.monotonic() - t0
        replies = [f for f in got if _is_reply(f)]
        assert not reader.done() and not ws.closed, f"connection dropped ({ws.close_code})"
        assert len(replies) == len(expected), (len(replies), len(expected))
        wrong: list[tuple[str, Any, Any]] = []
        codes, kinds = Counter[str](), Counter[str]()
        for (what, rid), (want, want_codes), reply in zip(expected, wants, replies,
                                                           strict=True):
            codes[reply.get("code") or reply["type"]] += 1
            kinds[what] += 1
            if what == "tool_result":
                rid = None
            if what == "device_hello" and rid is None:  # documented: the seed sent none
                rid = "device_hello"
            ok = reply["type"] == want and reply.get("code") in want_codes
            if not ok or reply.get("request_id") != rid:
                wrong.append((what, (want, sorted(map(str, want_codes))), reply))
        # every kind of frame reached its handler, many times over, and was answered as such
        assert all(kinds[t] >= 20 for t in TYPES), kinds
        assert all(codes[f"{t}_result"] >= 10 for t in ("status", "hello", "agent_list",
                                                         "run_list")), codes
        assert codes["not_found"] >= 30 and codes["invalid_field"] >= 100, codes
        assert not wrong, (len(wrong), wrong[:5])
        assert replies[-1]["type"] == "hello_result"
        assert codes["internal_error"] == 0, codes
        assert d.proc.returncode is None
        errors = sum(1 for r in replies if r["type"] == "error")
        figure("fuzz", "frames sent to the daemon", len(frames))
        figure("fuzz", "error frames received (request_id correct)", errors)
        figure("fuzz", "replies with a wrong type, code or request_id", len(wrong))
        figure("fuzz", "internal_error replies", codes["internal_error"])
        figure("fuzz", "daemon frames/s (pipelined, one socket)", len(frames) / elapsed)
        await ws.close()
        reader.cancel()
        await _connection_closers(d, figure)
        alive = d.proc.returncode is None
    finally:
        await session.close()
        rc = await d.stop()
    tracebacks = [line for line in d.stderr_lines if "Traceback" in line]
    tracebacks += [line for line in (data_dir / "logs" / "sidecar.log").read_text().splitlines()
                   if "Traceback" in line]
    figure("fuzz", "crashes (daemon exit, traceback)", int(not alive) + len(tracebacks))
    assert alive and rc == 0
    assert await d.read_stdout_rest() == b""
    assert not tracebacks, tracebacks[:3]


def _is_reply(frame: dict[str, Any]) -> bool:
    return frame.get("type") == "error" or str(frame.get("type")).endswith("_result")


async def _connection_closers(d: DaemonProcess, figure: Record) -> None:
    """Invalid UTF-8 text and > 4 MB close that socket (RFC 6455); others and the daemon live."""
    bystander = await d.connect()
    closed = 0
    for opcode_data, code in ((b'{"type":"status","request_id":"\xff"}', 1007),
                              (b'"' + b"a" * (4 * LIMIT + 1) + b'"', 1009)):
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(d.url(), headers={"Authorization": f"Bearer {d.token}"})
            try:
                await ws._writer.send_frame(opcode_data, aiohttp.WSMsgType.TEXT)
            except (ConnectionError, aiohttp.ClientError):
                pass  # the server may reset while the 4 MB are still going out
            msg = await ws.receive(timeout=10)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.ERROR), msg
            if msg.type == aiohttp.WSMsgType.CLOSE:
                assert msg.data == code, msg
            closed += 1
        assert (await bystander.request({"type": "status"}))["type"] == "status_result"
    async with await d.connect() as again:
        assert (await again.hello())["type"] == "hello_result"
    await bystander.close()
    figure("fuzz", "sockets closed by design (bad UTF-8 1007, > 4 MB 1009)", closed)
