"""A folder of meeting notes whose task lines carry unique tags, and a local agent over it."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from sidecar.client import SidecarClient
from tests.reliability.corpus import CHORES, PEOPLE


def write_task_docs(folder: Path, files: int, per_file: int, *, seed: int,
                    prefix: str = "notes") -> set[str]:
    """``files`` Markdown notes with ``per_file`` task lines each; returns the lines' tags."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tags: set[str] = set()
    for i in range(files):
        lines = []
        for j in range(per_file):
            tag = f"{prefix}{i}x{j}"
            tags.add(tag)
            lines.append(f"- [ ] {rng.choice(PEOPLE)} to {rng.choice(CHORES[:10])} for the "
                         f"{tag} account\n")
        (folder / f"{prefix}-{i:03}.md").write_text(
            f"# Weekly sync {i}\n\n## Notes\n- We keep the hosting.\n\n## Action items\n"
            + "".join(lines), encoding="utf-8")
    return tags


async def make_agent(c: SidecarClient, folder: Path, name: str = "Notes") -> str:
    reply = await c.request({"type": "agent_upsert", "agent": {
        "kind": "local", "name": name, "directories": [str(folder)], "extensions": [".md"],
        "data_types": ["tasks"], "schedule_cron": "0 3 * * *", "watch": False}})
    assert reply["type"] == "agent_upsert_result", reply
    return str(reply["agent"]["id"])


async def run_and_ack(c: SidecarClient, agent_id: str, *, until: str = "run_delivered",
                      timeout: float = 120) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the agent, ack every insert; (the ``until`` frame's run, the tool_calls seen)."""
    run_id = (await c.request({"type": "run_agent", "agent_id": agent_id}))["run_id"]
    calls: list[dict[str, Any]] = []
    while True:
        frame = await c.next_push(None, timeout=timeout)
        if frame["type"] == "tool_call":
            calls.append(frame)
            await c.ack(frame)
        elif frame["type"] == until and frame["run"]["id"] == run_id:
            return frame["run"], calls
