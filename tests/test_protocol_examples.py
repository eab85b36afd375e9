"""docs/protocol.md's examples cannot drift from what the daemon sends.

Every frame's ``EXAMPLE`` (the docs print exactly these) is checked twice: against the frame's
typed fields (every field's type, no unknown key, the required ones present) and against
real frames captured from the real daemon over a real socket: at every level, the keys of
the example are the keys the daemon sends (an example showing ``models[].present`` while the
daemon sends ``state`` fails here). Frames that need a third-party account to be produced
are listed apart, and a new frame must join one list or the other.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import typing
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from sidecar import protocol as p
from sidecar.client import DaemonProcess, SidecarClient
from sidecar.protocol.codec import _type_ok
from sidecar.store import Store
from sidecar.store.outbox import NewEntry
from tests.reliability.taskdocs import make_agent, write_task_docs

#: Frames only a connected Google/Microsoft account or the OS keyring produce; their shapes
#: are checked in tests/test_cloud_agents.py against fake provider servers.
NOT_CAPTURED = {"oauth_start_result", "oauth_status", "secret_set_result",
                "agent_needs_reauth"}
#: Values whose keys depend on the record or the document (what was extracted, from where).
FREE_FORM = {("tool_call", "data"), ("tool_call", "source")}


@pytest.mark.parametrize("frame_type", sorted(p.FRAME_TYPES))
def test_every_example_has_the_fields_of_its_frame_with_their_types(frame_type: str) -> None:
    cls = p.FRAME_TYPES[frame_type]
    example = dict(cls.EXAMPLE)
    assert example.pop("type") == frame_type
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(example) - set(fields)
    assert not unknown, f"keys the frame does not have: {unknown}"
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required:
            assert name in example, f"the example leaves out required {name!r}"
        if name in example:
            assert _type_ok(example[name], hints[name]), f"{name}: {example[name]!r}"
    if cls.DIRECTION == "client":  # what the docs show is what the decoder takes
        assert p.to_dict(p.decode(json.dumps(cls.EXAMPLE))) == cls.EXAMPLE


def shape_problems(example: Any, real: list[Any], where: str) -> list[str]:
    """Where ``example`` has other keys than the ``real`` values (dicts compared key by key,
    lists by their elements)."""
    dicts = [r for r in real if isinstance(r, dict)]
    if isinstance(example, dict) and dicts:
        seen = set().union(*dicts)
        out = []
        if set(example) != seen:
            out.append(f"{where}: example has {sorted(set(example) - seen)} extra, "
                       f"{sorted(seen - set(example))} missing")
        for key in set(example) & seen:
            if (where.split(".")[0], key) in FREE_FORM:
                continue
            out += shape_problems(example[key], [d[key] for d in dicts if key in d],
                                  f"{where}.{key}")
        return out
    lists = [r for r in real if isinstance(r, list)]
    if isinstance(example, list) and example and lists:
        items = [x for r in lists for x in r]
        return [p for e in example for p in shape_problems(e, items, f"{where}[]")]
    return []


def top_problems(frame_type: str, real: list[dict[str, Any]]) -> list[str]:
    """Top level: optional fields the daemon leaves out when null are fine to show."""
    example = p.FRAME_TYPES[frame_type].EXAMPLE
    seen = set().union(*real)
    out = [f"{frame_type}: the daemon sends {sorted(seen - set(example))}, the example "
           "does not show them"] if seen - set(example) else []
    for key in set(example) & seen:
        if (frame_type, key) not in FREE_FORM:
            out += shape_problems(example[key], [r[key] for r in real if key in r],
                                  f"{frame_type}.{key}")
    return out


async def capture(c: SidecarClient, frames: dict[str, list[dict[str, Any]]],
                  frame: dict[str, Any]) -> dict[str, Any]:
    reply = await c.request(frame)
    frames[reply["type"]].append(reply)
    return reply


async def test_every_example_has_the_keys_the_daemon_really_sends(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    write_task_docs(tmp_path / "docs", files=2, per_file=2, seed=11)
    async with Store(data_dir / "sidecar.sqlite3") as store:  # a record from an earlier run
        await store.outbox.enqueue([NewEntry(idempotency_key="a_x:k", agent_id="a_x",
                                            run_id=None, table="tasks", data={"title": "T"},
                                            meta={"source": {"path": "/x.md"},
                                                  "confidence": 0.5})])
    frames: dict[str, list[dict[str, Any]]] = defaultdict(list)
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await capture(c, frames, {"type": "hello", "protocol": 1, "client": "t"})
        await capture(c, frames, p.ProjectsSync.EXAMPLE)
        agent = (await capture(c, frames, {**p.AgentUpsert.EXAMPLE, "agent": {
            **p.AgentUpsert.EXAMPLE["agent"], "directories": [str(tmp_path / "docs")]}}))
        agent_id = agent["agent"]["id"]
        await make_agent(c, tmp_path / "docs", name="Second")
        run = await capture(c, frames, {"type": "run_agent", "agent_id": agent_id})
        while not frames["run_delivered"]:
            frame = await c.next_push(None, timeout=120)
            frames[frame["type"]].append(frame)
            if frame["type"] == "tool_call":
                await c.ack(frame, result={"id": 1})
        await capture(c, frames, {"type": "agent_list"})
        await capture(c, frames, {"type": "run_list", "agent_id": agent_id})
        await capture(c, frames, {"type": "status"})
        await capture(c, frames, {"type": "cancel_run", "run_id": run["run_id"]})
        await capture(c, frames, {"type": "oauth_cancel", "flow_id": "f_none"})
        await capture(c, frames, {"type": "agent_delete", "agent_id": "nope"})
        c2 = await d.connect()  # hello once runs exist: last_runs filled in
        await capture(c2, frames, {"type": "hello", "protocol": 1, "client": "t2"})
        await asyncio.sleep(0.2)
        await c2.close()
        await capture(c, frames, {"type": "agent_delete", "agent_id": agent_id})
        await c.close()
    finally:
        await d.stop()

    sidecar_types = {t for t, cls in p.FRAME_TYPES.items() if cls.DIRECTION == "sidecar"}
    assert sidecar_types - NOT_CAPTURED <= set(frames), (
        f"no real frame of {sorted(sidecar_types - NOT_CAPTURED - set(frames))}: capture it "
        "here, or list it in NOT_CAPTURED with where its shape is checked")
    problems = [x for t in sorted(sidecar_types - NOT_CAPTURED)
                for x in top_problems(t, frames[t])]
    assert not problems, "\n".join(problems)
