"""A cancel that lands before a run's task took its first step still closes the run.

A task cancelled before it starts never runs its body, so nothing inside it (not even a
``finally``) can send run_finished: the runner must close such a run itself, or the agent
stays "running" for good and every later run_agent answers already_running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sidecar import protocol as p
from sidecar.delivery import Delivery
from sidecar.domain import validate_agent
from sidecar.extractors.rules import RulesExtractor
from sidecar.hub import Hub
from sidecar.runner import Runner
from sidecar.services import source_factory
from sidecar.settings import Config
from sidecar.store import Store


class RecordingHub(Hub):
    """The real hub, keeping what it broadcasts (no sockets needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[p.Frame] = []

    async def broadcast(self, frame: p.Frame) -> int:
        self.sent.append(frame)
        return 0


async def test_cancel_before_the_first_step_closes_the_run(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("- [ ] Ana to send the quote\n", encoding="utf-8")
    async with Store(tmp_path / "sidecar.sqlite3") as store:
        agent = validate_agent({"kind": "local", "name": "Docs", "directories": [str(folder)],
                                "extensions": [".md"]}, allowed_roots=[tmp_path])
        await store.agents.upsert(agent)
        hub = RecordingHub()
        delivery = Delivery(hub, store.outbox)

        async def extractors(_agent: Any) -> RulesExtractor:
            return RulesExtractor()

        runner = Runner(store, hub, delivery, extractors=extractors,
                        sources=source_factory(store,
                                               Config.load().replace(allowed_roots=(tmp_path,))))
        run_id, already = await runner.start(agent.id, "manual")
        assert not already
        # no await between start and cancel: the task has not taken a step yet
        assert await runner.cancel(run_id) is True
        finished = [f for f in hub.sent if isinstance(f, p.RunFinished)]
        assert [f.run["id"] for f in finished] == [run_id]
        assert finished[0].run["status"] == "cancelled"
        assert runner.running_run(agent.id) is None
        assert (await store.runs.get(run_id))["status"] == "cancelled"
        # the agent is free again: the next run starts and ends normally
        again, already = await runner.start(agent.id, "manual")
        assert not already and again != run_id
        record = await runner.wait(again)
        assert record is not None and record["status"] == "success", record
