"""The app's own projects through the real daemon: ``projects_sync`` is validated, kept across
restarts and replaced by each send; a record gets ``projectId`` only when its document
clearly names one project, with the reason in ``source.project``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sidecar.client import DaemonProcess, SidecarClient
from tests.reliability.taskdocs import run_and_ack

PROJECTS = [
    {"id": "p_12", "name": "Harbor Bakery website", "client": "Harbor Bakery",
     "aliases": ["HB site"]},
    {"id": "p_13", "name": "Spring campaign", "aliases": []},
]


def doc(path: Path, heading: str, body: str, task: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {heading}\n\n{body}\n\n## Action items\n- [ ] {task}\n",
                    encoding="utf-8")


async def make_agent(c: SidecarClient, folder: Path, **extra: Any) -> str:
    reply = await c.request({"type": "agent_upsert", "agent": {
        "kind": "local", "name": folder.name, "directories": [str(folder)],
        "extensions": [".md"], "data_types": ["tasks"], "schedule_cron": "0 3 * * *",
        "watch": False, **extra}})
    assert reply["type"] == "agent_upsert_result", reply
    return str(reply["agent"]["id"])


def by_task(calls: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The tool_call of each task, by the tag word in its title."""
    out = {}
    for c in calls:
        title = c["data"]["title"].lower()
        for tag in ("flour", "menus", "banner", "invoice", "chairs", "keys"):
            if tag in title:
                out[tag] = c
    return out


async def test_projects_sync_is_validated_and_names_the_bad_field(
        daemon: DaemonProcess) -> None:
    c = await daemon.connect()
    try:
        ok = await c.request({"type": "projects_sync", "projects": PROJECTS})
        assert ok == {"type": "projects_sync_result", "request_id": ok["request_id"],
                      "count": 2}
        bad = await c.request({"type": "projects_sync", "projects": [
            PROJECTS[0], {"id": "p_2", "name": ""}]})
        assert bad["code"] == "invalid_field" and bad["field"] == "projects[1].name"
        dup = await c.request({"type": "projects_sync", "projects": [PROJECTS[0]] * 2})
        assert dup["code"] == "invalid_field" and dup["field"] == "projects[1].id"
        wrong = await c.request({"type": "projects_sync", "projects": {"id": "p"}})
        assert wrong["code"] == "invalid_field" and wrong["field"] == "projects"
    finally:
        await c.close()


async def test_records_link_to_the_one_project_their_document_names(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    doc(root / "Harbor Bakery" / "weekly.md", "Weekly sync", "We met on Monday.",
        "Priya to order new flour sacks")
    doc(root / "misc" / "Spring campaign brief.md", "Brief", "Posters and radio.",
        "Tom to print the menus")
    doc(root / "misc" / "call.md", "Call notes",
        "Talked about the HB site and the Spring campaign together.",
        "Ana to send the banner drafts")
    doc(root / "misc" / "admin.md", "Admin", "Nothing about clients.",
        "Luis to pay the invoice")
    # introduces a project, but "projects" is not in this agent's data_types
    doc(root / "misc" / "kickoff.md", "Kickoff — Orchard app", "New client.",
        "Rosa to stack the chairs")
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        assert (await c.request({"type": "projects_sync", "projects": PROJECTS}))["count"] == 2
        agent = await make_agent(c, root)
        raw = (await run_and_ack(c, agent))[1]
        await c.close()
    finally:
        await d.stop()
    assert {c["table"] for c in raw} == {"tasks"}, "no projects asked for, none suggested"
    calls = by_task(raw)
    assert "projectId" not in calls.pop("chairs")["data"]
    assert set(calls) == {"flour", "menus", "banner", "invoice"}, list(calls)
    assert calls["flour"]["data"]["projectId"] == "p_12"
    assert calls["flour"]["source"]["project"] == {
        "id": "p_12", "by": "client", "term": "Harbor Bakery", "in": "folder"}
    assert calls["menus"]["data"]["projectId"] == "p_13"
    assert calls["menus"]["source"]["project"] == {
        "id": "p_13", "by": "name", "term": "Spring campaign", "in": "title"}
    for unclear in ("banner", "invoice"):  # two projects named / none
        assert "projectId" not in calls[unclear]["data"], calls[unclear]
        assert "project" not in calls[unclear]["source"]


async def test_projects_survive_a_restart_and_each_sync_replaces_the_list(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    doc(root / "Harbor Bakery" / "a.md", "A", "x", "Priya to order new flour sacks")
    doc(tmp_path / "other" / "Harbor Bakery.md", "HB", "x", "Rosa to stack the chairs")
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.request({"type": "projects_sync", "projects": PROJECTS})
        await c.close()
    finally:
        await d.stop()
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        agent = await make_agent(c, root)
        first = by_task((await run_and_ack(c, agent))[1])
        own = await make_agent(c, tmp_path / "other", project_id="p_own")
        mine = by_task((await run_and_ack(c, own))[1])
        await c.request({"type": "projects_sync", "projects": [PROJECTS[1]]})
        doc(root / "Harbor Bakery" / "b.md", "B", "y", "Omar to return the keys")
        second = by_task((await run_and_ack(c, agent))[1])
        await c.close()
    finally:
        await d.stop()
    assert first["flour"]["data"]["projectId"] == "p_12", "kept across the restart"
    assert mine["chairs"]["data"]["projectId"] == "p_own", "the agent's own project wins"
    assert "project" not in mine["chairs"]["source"]
    assert set(second) == {"keys"} and "projectId" not in second["keys"]["data"], \
        "Harbor Bakery is no longer one of the app's projects"


async def test_a_kickoff_of_a_known_project_links_to_it_and_suggests_none(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """With "projects" in data_types, only a project the app does not know is suggested: a
    kickoff naming one of the synced projects links its records to it, and a later sync that
    drops that project makes the same kind of kickoff a suggestion."""
    root = tmp_path / "docs"
    doc(root / "kickoff.md", "Kickoff — Spring campaign", "Posters and radio.",
        "Tom to print the menus")
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        await c.request({"type": "projects_sync", "projects": PROJECTS})
        agent = await make_agent(c, root, data_types=["tasks", "projects"])
        known = (await run_and_ack(c, agent))[1]
        await c.request({"type": "projects_sync", "projects": [PROJECTS[0]]})
        doc(root / "kickoff2.md", "Kickoff — Spring campaign", "Posters.",
            "Rosa to stack the chairs")
        unknown = (await run_and_ack(c, agent))[1]
        # an agent with its own project suggests none: everything goes to its project
        doc(tmp_path / "own" / "kickoff.md", "Kickoff — Orchard app", "x", "Ana to call Bea")
        saved = await c.request({"type": "agent_upsert", "agent": {
            "kind": "local", "name": "own", "directories": [str(tmp_path / "own")],
            "extensions": [".md"], "data_types": ["tasks", "projects"], "project_id": "p_own",
            "schedule_cron": "0 3 * * *", "watch": False}})
        own = (await run_and_ack(c, saved["agent"]["id"]))[1]
        await c.close()
    finally:
        await d.stop()
    assert [(o["table"], o["data"].get("projectId")) for o in own] == [("tasks", "p_own")]
    assert any(w.startswith("projects: every record") for w in saved["warnings"]), saved
    assert [k["table"] for k in known] == ["tasks"], known
    assert known[0]["data"]["projectId"] == "p_13"
    assert known[0]["source"]["project"]["in"] == "title"
    assert [u["table"] for u in unknown] == ["projects", "tasks"], unknown
    assert unknown[0]["data"]["name"] == "Spring campaign"
    # run_and_ack acks with {"ok": true}: no result.id, so the task goes without a project
    assert "projectId" not in unknown[1]["data"]
    assert "no result.id" in unknown[1]["source"]["unlinked"]


async def test_a_sync_while_a_run_is_in_flight_answers_at_once_and_counts_from_the_next_run(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """A run links with the list it read at its start (all its records alike); a sync sent
    meanwhile is answered without waiting for it and kept for the next run."""
    root = tmp_path / "docs"
    doc(root / "Harbor Bakery" / "weekly.md", "Weekly sync", "x", "Priya to order new flour sacks")
    doc(root / "misc" / "Spring campaign brief.md", "Brief", "y", "Tom to print the menus")
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        await c.request({"type": "projects_sync", "projects": [PROJECTS[0]]})
        agent = await make_agent(c, root)
        run_id = (await c.request({"type": "run_agent", "agent_id": agent}))["run_id"]
        first = await c.next_push("tool_call", timeout=60)  # not acked: the run waits for it
        synced = await c.request({"type": "projects_sync", "projects": [PROJECTS[1]]})
        status = await c.request({"type": "status"})
        calls = [first]
        await c.ack(first)
        while True:
            frame = await c.next_push(None, timeout=60)
            if frame["type"] == "tool_call":
                calls.append(frame)
                await c.ack(frame)
            elif frame["type"] == "run_delivered" and frame["run"]["id"] == run_id:
                break
        doc(root / "Harbor Bakery" / "b.md", "B", "z", "Omar to return the keys")
        doc(root / "misc" / "Spring campaign plan.md", "Plan", "w", "Rosa to stack the chairs")
        _, after = await run_and_ack(c, agent)
        await c.close()
    finally:
        await d.stop()
    assert synced["count"] == 1
    running = [a["running_run_id"] for a in status["agents"] if a["id"] == agent]
    assert running == [run_id], "the sync was answered while the run was in flight"
    during = by_task(calls)
    assert set(during) == {"flour", "menus"} and len(calls) == 2
    assert during["flour"]["data"]["projectId"] == "p_12"
    assert "projectId" not in during["menus"]["data"], "the run's own list had no Spring"
    later = by_task(after)
    assert set(later) == {"keys", "chairs"} and len(after) == 2, "nothing re-sent"
    assert "projectId" not in later["keys"]["data"]
    assert later["chairs"]["data"]["projectId"] == "p_13"


async def test_a_project_renamed_in_the_app_between_runs(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """Same id, new name and client: documents naming the new name link to it, what was
    sent is not sent again, and the old name alone no longer names a project."""
    root = tmp_path / "docs"
    doc(root / "Harbor Bakery" / "a.md", "A", "x", "Priya to order new flour sacks")
    renamed = {"id": "p_12", "name": "Harbor Bakehouse website", "client": "Harbor Bakehouse",
               "aliases": []}
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        await c.request({"type": "projects_sync", "projects": PROJECTS})
        agent = await make_agent(c, root, data_types=["tasks", "projects"])
        first = by_task((await run_and_ack(c, agent))[1])
        await c.request({"type": "projects_sync", "projects": [renamed, PROJECTS[1]]})
        doc(root / "Harbor Bakehouse" / "b.md", "B", "y", "Omar to return the keys")
        doc(root / "misc" / "c.md", "Call with Harbor Bakery", "z", "Rosa to stack the chairs")
        # a kickoff under the new name is the app's project, not a new one
        doc(root / "misc" / "kickoff.md", "Kickoff — Harbor Bakehouse website", "New client.",
            "Ana to send the banner drafts")
        raw = (await run_and_ack(c, agent))[1]
        await c.close()
    finally:
        await d.stop()
    assert first["flour"]["data"]["projectId"] == "p_12"
    assert [r["table"] for r in raw] == ["tasks"] * 3, [r["table"] for r in raw]
    second = by_task(raw)
    assert set(second) == {"keys", "chairs", "banner"}, "a.md is not sent again"
    assert second["keys"]["data"]["projectId"] == "p_12"
    assert second["keys"]["source"]["project"]["term"] == "Harbor Bakehouse"
    assert second["banner"]["data"]["projectId"] == "p_12"
    assert "projectId" not in second["chairs"]["data"], "the old name names no project"
