"""An agent's folders change (the user points it elsewhere, or moves the folder): files under
a folder it no longer reads are out of its scope, not "gone", and the run is not an error."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sidecar.delivery import Delivery
from sidecar.domain import validate_agent
from sidecar.extractors.rules import RulesExtractor
from sidecar.runner import Runner
from sidecar.services import source_factory
from sidecar.settings import Config
from sidecar.store import Store
from tests.test_runner_cancel import RecordingHub


async def _run(runner: Runner, agent_id: str) -> dict[str, Any]:
    run_id, already = await runner.start(agent_id, "manual")
    assert not already
    record = await runner.wait(run_id)
    assert record is not None
    return record


async def test_a_folder_the_agent_no_longer_reads_is_not_reported_gone(tmp_path: Path) -> None:
    old, new = tmp_path / "old-clone" / "examples", tmp_path / "new-clone" / "examples"
    old.mkdir(parents=True)
    (old / "plan.md").write_text("- [ ] Ana to send the quote by Friday\n", encoding="utf-8")
    (old / "notes.md").write_text("- [ ] Tom to book the venue\n", encoding="utf-8")
    raw = {"kind": "local", "name": "Demo", "directories": [str(old)], "extensions": [".md"]}
    async with Store(tmp_path / "sidecar.sqlite3") as store:
        agent = validate_agent(raw, allowed_roots=[tmp_path])
        await store.agents.upsert(agent)
        hub = RecordingHub()

        async def extractors(_agent: Any) -> RulesExtractor:
            return RulesExtractor()

        runner = Runner(store, hub, Delivery(hub, store.outbox), extractors=extractors,
                        sources=source_factory(store,
                                               Config.load().replace(allowed_roots=(tmp_path,))))
        first = await _run(runner, agent.id)
        assert first["status"] == "success" and first["extracted"] == 2, first
        # a second clone of the same examples, the first one deleted, the agent pointed there
        shutil.copytree(old, new)
        shutil.rmtree(tmp_path / "old-clone")
        moved = validate_agent({**raw, "directories": [str(new)]}, existing=agent,
                               allowed_roots=[tmp_path])
        await store.agents.upsert(moved)
        second = await _run(runner, agent.id)
        # the same bytes again: nothing suggested twice, and nothing to call an error
        assert second["status"] == "success", second
        assert second["extracted"] == 0 and not second["errors"], second
        # a file the user deletes from the folder the agent reads is still noticed
        (new / "notes.md").unlink()
        third = await _run(runner, agent.id)
        assert [e for e in third["errors"] if "no longer present" in str(e)], third
