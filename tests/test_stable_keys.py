"""Stable idempotency keys through the real daemon: the same record from the same document
keeps its key when the agent is re-created over the same folder or the data dir is reset,
and an upgrade from the old key format (agent id and absolute path in it) re-suggests
nothing the app already has."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sidecar.client import DaemonProcess
from sidecar.store import Store
from tests.reliability.taskdocs import make_agent, run_and_ack, write_task_docs


async def keys_of_a_fresh_daemon(data_dir: Path, token: str, model_dir: Path, folder: Path
                                 ) -> tuple[str, list[dict]]:
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        agent = await make_agent(c, folder)
        _, calls = await run_and_ack(c, agent)
        await c.close()
    finally:
        await d.stop()
    return agent, calls


async def test_a_data_dir_reset_gives_the_same_keys(token: str, model_dir: Path,
                                                    tmp_path: Path) -> None:
    write_task_docs(tmp_path / "docs", files=2, per_file=2, seed=5)
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    agent1, first = await keys_of_a_fresh_daemon(tmp_path / "d1", token, model_dir,
                                                 tmp_path / "docs")
    agent2, second = await keys_of_a_fresh_daemon(tmp_path / "d2", token, model_dir,
                                                  tmp_path / "docs")
    assert agent1 != agent2 and len(first) >= 4
    assert sorted(c["idempotency_key"] for c in first) == sorted(
        c["idempotency_key"] for c in second)
    for call in first:  # no agent id, no path, no user text in a key
        key = call["idempotency_key"]
        assert agent1 not in key and "docs" not in key and "notes" not in key.lower()
        assert len(set(c["idempotency_key"] for c in first)) == len(first)


async def test_re_creating_the_agent_over_the_same_folder_re_suggests_nothing(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    write_task_docs(tmp_path / "docs", files=2, per_file=2, seed=6)
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        agent = await make_agent(c, tmp_path / "docs")
        run1, calls1 = await run_and_ack(c, agent)
        assert run1["delivered"] == len(calls1) >= 4
        assert (await c.request({"type": "agent_delete", "agent_id": agent}))["deleted"]
        again = await make_agent(c, tmp_path / "docs", name="Notes again")
        assert again != agent
        run2, calls2 = await run_and_ack(c, again)
        assert run2["items_processed"] == 2, "the new agent read both documents"
        assert calls2 == [], [c["data"]["title"] for c in calls2]
        # a new line in one document is new: it alone is suggested
        note = next((tmp_path / "docs").glob("*.md"))
        note.write_text(note.read_text() + "- [ ] Rosa to renew the fresh77tag domain\n")
        _, calls3 = await run_and_ack(c, again)
        assert [("fresh77tag" in x["data"]["title"]) for x in calls3] == [True]
        await c.close()
    finally:
        await d.stop()


def old_format(agent_id: str, path: str, table: str, title: str) -> str:
    """The key format before this change, written out by hand."""
    def h(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return ":".join([agent_id, h(path), table, h(" ".join(title.lower().split()))])


async def test_records_keyed_the_old_way_are_not_suggested_again_after_the_upgrade(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    write_task_docs(tmp_path / "docs", files=1, per_file=3, seed=8)
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        agent = await make_agent(c, tmp_path / "docs")
        _, calls = await run_and_ack(c, agent)
        await c.close()
    finally:
        await d.stop()
    assert len(calls) >= 3
    # the outbox as an older sidecar left it: the same records under the old keys
    async with Store(data_dir / "sidecar.sqlite3") as store:
        rows = await store.db.fetchall("SELECT seq, table_name, data, meta FROM outbox")
        for row in rows:
            old = old_format(agent, json.loads(row["meta"])["source"]["key"],
                             row["table_name"], json.loads(row["data"])["title"])
            call_id = "c_" + hashlib.sha256(old.encode()).hexdigest()[:24]
            await store.db.execute("UPDATE outbox SET idempotency_key = ?, call_id = ? "
                                   "WHERE seq = ?", (old, call_id, row["seq"]))
    note = next((tmp_path / "docs").glob("*.md"))
    note.write_text(note.read_text() + "- [ ] Omar to book the fresh88tag venue\n")

    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        _, after = await run_and_ack(c, agent)  # the edited document is extracted again
        await c.close()
    finally:
        await d.stop()
    assert [("fresh88tag" in x["data"]["title"]) for x in after] == [True], \
        [x["data"]["title"] for x in after]
    assert after[0]["idempotency_key"].startswith("k2:")


def test_the_title_rule_ignores_case_spacing_width_and_end_punctuation() -> None:
    from sidecar.store.outbox import stable_key

    same = [{"title": "Send the revised logo."}, {"title": "  send the REVISED   logo"},
            {"title": "Ｓｅｎｄ the revised logo!"}, {"name": "send the revised logo"}]
    keys = {stable_key("local:Clients/brief.md", "tasks", d) for d in same}
    assert len(keys) == 1, keys
    assert stable_key("local:Clients/brief.md", "notes", same[0]) not in keys
    assert stable_key("local:Clients/other.md", "tasks", same[0]) not in keys
    assert stable_key("local:Clients/brief.md", "tasks", {"title": "Send the old logo"}) \
        not in keys
