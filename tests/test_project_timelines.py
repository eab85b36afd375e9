"""Timelines and the app's own projects, through the real daemon: a timeline in a document
that clearly belongs to one of the app's projects (``projects_sync``) goes to it with the
reason in ``source.project``, while one with no project is held and said in the run log;
what a later project (a sync naming it, the agent's ``project_id``) does for those held."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sidecar.client import DaemonProcess, SidecarClient

DUE = date.today() + timedelta(days=45)
WHEN = f"{DUE.day} {DUE:%B %Y}"
PROJECTS = [
    {"id": "p_12", "name": "Harbor Bakery website", "client": "Harbor Bakery",
     "aliases": ["HB site"]},
    {"id": "p_13", "name": "Spring campaign", "aliases": []},
]


def doc(path: Path, heading: str, body: str, milestone: str, task: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {heading}\n\n{body}\n\n## Milestones\n- {milestone}: {WHEN}\n\n"
                    f"## Action items\n- [ ] {task}\n", encoding="utf-8")


async def save_agent(c: SidecarClient, folder: Path, **extra: Any) -> dict[str, Any]:
    reply = await c.request({"type": "agent_upsert", "agent": {
        "kind": "local", "name": folder.name, "directories": [str(folder)],
        "extensions": [".md"], "data_types": ["tasks", "timelines"],
        "schedule_cron": "0 3 * * *", "watch": False, **extra}})
    assert reply["type"] == "agent_upsert_result", reply
    return dict(reply["agent"])


async def run_all(c: SidecarClient, agent_id: str, *, full: bool = False
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run (``full``: every document again), ack each insert with an id; (the run as
    ``run_delivered`` gives it, the tool_calls); run_finished's errors are in the run."""
    frame: dict[str, Any] = {"type": "run_agent", "agent_id": agent_id}
    if full:
        frame["full"] = True
    run_id = (await c.request(frame))["run_id"]
    calls: list[dict[str, Any]] = []
    finished: dict[str, Any] | None = None
    while True:
        push = await c.next_push(None, timeout=120)
        if push["type"] == "tool_call":
            calls.append(push)
            await c.ack(push, {"id": f"row_{push['id'][-8:]}"})
        elif push["type"] == "run_finished" and push["run"]["id"] == run_id:
            finished = push["run"]
        elif push["type"] == "run_delivered" and push["run"]["id"] == run_id:
            assert finished is not None
            return finished, calls


def timelines(calls: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return sorted((str(c["data"]["title"]), c["data"].get("projectId"))
                  for c in calls if c["table"] == "timelines")


def held_lines(run: dict[str, Any]) -> list[str]:
    return [e for e in run["errors"] if "held: no project" in e]


async def test_a_timeline_goes_to_the_known_project_its_document_names(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    doc(root / "Harbor Bakery" / "plan.md", "Weekly sync", "We met on Monday.",
        "Site launch", "Priya to order new flour sacks")
    doc(root / "misc" / "admin.md", "Admin", "Orchard Lane wants a quote.",
        "Audit deadline", "Luis to pay the invoice")
    doc(root / "misc" / "call.md", "Call notes",
        "Talked about the HB site and the Spring campaign together.",
        "Poster proofs", "Ana to send the banner drafts")
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        assert (await c.request({"type": "projects_sync", "projects": PROJECTS}))["count"] == 2
        agent = await save_agent(c, root)
        run, calls = await run_all(c, agent["id"])
        await c.close()
    finally:
        await d.stop()
    got = [x for x in calls if x["table"] == "timelines"]
    assert timelines(calls) == [(f"Site launch: {WHEN}", "p_12")], calls
    assert got[0]["source"]["project"] == {
        "id": "p_12", "by": "client", "term": "Harbor Bakery", "in": "folder"}
    held = held_lines(run)
    # no project (admin) and two projects (call): held, each said once with its document
    assert len(held) == 2, run["errors"]
    assert any("admin.md" in h and "1 timeline held" in h and "Audit deadline" in h
               for h in held), held
    assert any("call.md" in h and "Poster proofs" in h for h in held), held
    assert not any("plan.md" in e for e in run["errors"]), run["errors"]
    assert run["pending"] == 0 and run["delivered"] == len(calls) == 4, run
    assert not any("\u0000" in str(x["data"]) for x in calls), "the sentinel never leaves"


async def test_held_timelines_go_out_once_a_run_finds_their_project(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """A timeline held for want of a project is kept: the first run after a sync naming its
    project, or after the agent got a project_id, sends it with it (each once; a full run
    then sends nothing again). One whose document dropped it meanwhile never goes."""
    root = tmp_path / "docs"
    doc(root / "misc" / "admin.md", "Admin", "Orchard Lane wants a quote.",
        "Audit deadline", "Luis to pay the invoice")
    doc(root / "misc" / "call.md", "Call notes", "Nothing about clients.",
        "Poster proofs", "Ana to send the banner drafts")
    doc(root / "misc" / "old.md", "Old", "Nothing either.", "Old date", "Bea to file it")
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        await c.request({"type": "projects_sync", "projects": PROJECTS})
        agent = await save_agent(c, root)
        first, sent = await run_all(c, agent["id"])
        assert len(held_lines(first)) == 3 and timelines(sent) == [], first["errors"]
        assert (first["pending"], first["delivered"]) == (0, 3), "held timelines hold no run"
        kept = (await c.request({"type": "status"}))["held"]
        # the document drops its milestone: what it held goes with it
        (root / "misc" / "old.md").write_text("# Old\n\n## Action items\n- [ ] Bea to file it\n",
                                              encoding="utf-8")
        edited, _ = await run_all(c, agent["id"])
        # the app now has the client's project: the next run sends the timeline naming it
        await c.request({"type": "projects_sync", "projects": [*PROJECTS, {
            "id": "p_14", "name": "Orchard Lane shop", "client": "Orchard Lane"}]})
        synced_run, synced = await run_all(c, agent["id"])
        _, full = await run_all(c, agent["id"], full=True)
        # the agent gets a project of its own: the other held timeline goes to it
        await save_agent(c, root, id=agent["id"], project_id="p_own")
        _, owned = await run_all(c, agent["id"])
        _, last = await run_all(c, agent["id"], full=True)
        left = (await c.request({"type": "status"}))["held"]
        await c.close()
    finally:
        await d.stop()
    assert kept == 3 and left == 0
    assert edited["errors"] == [], edited["errors"]
    assert [(x["table"], x["data"].get("projectId")) for x in synced] == [
        ("timelines", "p_14")]
    assert synced[0]["data"]["title"] == f"Audit deadline: {WHEN}"
    assert synced[0]["source"]["project"] == {
        "id": "p_14", "by": "client", "term": "Orchard Lane", "in": "body"}
    assert synced[0]["run_id"] == synced_run["id"] and synced_run["delivered"] == 1
    assert full == [], "nothing twice"
    assert [(x["table"], x["data"]["title"], x["data"].get("projectId")) for x in owned] == [
        ("timelines", f"Poster proofs: {WHEN}", "p_own")]
    assert last == [], "nothing twice"


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return list(con.execute(sql))
    finally:
        con.close()


async def test_a_kill_9_while_held_timelines_go_out_loses_none_and_sends_none_twice(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """The daemon dies inside the transaction that queues the timelines a sync made
    linkable: they stay held, the next run sends each once; a removed agent's timelines
    that wait for a project leave status.held (no run of theirs will come)."""
    root = tmp_path / "docs"
    doc(root / "misc" / "admin.md", "Admin", "Orchard Lane wants a quote.",
        "Audit deadline", "Luis to pay the invoice")
    doc(root / "misc" / "call.md", "Call notes", "Nothing about clients.",
        "Poster proofs", "Ana to send the banner drafts")
    db = data_dir / "sidecar.sqlite3"
    args = ["--model-dir", str(model_dir)]
    d = await DaemonProcess.start(data_dir, token=token, extra_args=args)
    try:
        c = await d.connect()
        await c.hello()
        agent = await save_agent(c, root)
        first, _ = await run_all(c, agent["id"])
        assert len(held_lines(first)) == 2, first["errors"]
        await c.request({"type": "projects_sync", "projects": [{
            "id": "p_14", "name": "Orchard Lane shop", "client": "Orchard Lane"}]})
        await c.close()
    finally:
        await d.stop()
    d = await DaemonProcess.start(data_dir, token=token, extra_args=args,
                                  env={"SIDECAR_FAILPOINT": "outbox.enqueue:1"})
    try:
        c = await d.connect()
        await c.hello()
        await c.request({"type": "run_agent", "agent_id": agent["id"]})
        assert await asyncio.wait_for(d.proc.wait(), 30) != 0  # killed itself at the point
    finally:
        await d.kill()
    assert rows(db, "SELECT count(*) FROM held WHERE table_name = 'timelines'") == [(2,)], \
        "the release was rolled back"
    assert rows(db, "SELECT count(*) FROM outbox WHERE table_name = 'timelines'") == [(0,)]
    d = await DaemonProcess.start(data_dir, token=token, extra_args=args)
    try:
        c = await d.connect()
        await c.hello()
        _, sent = await run_all(c, agent["id"])
        _, again = await run_all(c, agent["id"])
        before = (await c.request({"type": "status"}))["held"]
        removed = await c.request({"type": "agent_delete", "agent_id": agent["id"]})
        after = (await c.request({"type": "status"}))["held"]
        await c.close()
    finally:
        await d.stop()
    assert timelines(sent) == [(f"Audit deadline: {WHEN}", "p_14")] and len(sent) == 1, sent
    assert again == []
    assert rows(db, "SELECT count(*) FROM outbox WHERE table_name = 'timelines'") == [(1,)]
    assert removed["type"] == "agent_delete_result", removed
    # what waited (call.md's timeline, and its document's places) went with the agent: no
    # run of its would send it
    assert rows(db, "SELECT table_name FROM held") == []
    assert (before, after) == (1, 0)


async def test_a_documents_places_stay_while_any_of_its_timelines_waits(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """Held with no projects known; a sync of two projects the body both names sends only
    the timeline whose own title names one; when the app drops the other project, the
    document names one and its last timeline goes to it."""
    root = tmp_path / "docs"
    doc(root / "misc" / "joint.md", "Joint plan", "Zephyr Labs and Orchard Lane share a stand.",
        "Orchard Lane opening", "Luis to pay the invoice")
    (root / "misc" / "joint.md").write_text(
        (root / "misc" / "joint.md").read_text(encoding="utf-8").replace(
            "## Action items", f"- Stand booked: {WHEN}\n\n## Action items"), encoding="utf-8")
    both = [{"id": "p_ol", "name": "Orchard Lane"}, {"id": "p_zl", "name": "Zephyr Labs"}]
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        agent = await save_agent(c, root)
        first, _ = await run_all(c, agent["id"])
        await c.request({"type": "projects_sync", "projects": both})
        _, one = await run_all(c, agent["id"])
        await c.request({"type": "projects_sync", "projects": both[:1]})
        _, other = await run_all(c, agent["id"])
        left = (await c.request({"type": "status"}))["held"]
        await c.close()
    finally:
        await d.stop()
    assert any("2 timelines held" in e for e in held_lines(first)), first["errors"]
    assert timelines(one) == [(f"Orchard Lane opening: {WHEN}", "p_ol")]
    assert one[0]["source"]["project"]["in"] == "record"
    assert timelines(other) == [(f"Stand booked: {WHEN}", "p_ol")]
    assert other[0]["source"]["project"]["in"] == "body"
    assert left == 0
    assert rows(data_dir / "sidecar.sqlite3", "SELECT count(*) FROM held") == [(0,)]


async def test_held_timelines_do_not_go_to_an_agent_that_no_longer_asks_for_timelines(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    doc(root / "misc" / "admin.md", "Admin", "Orchard Lane wants a quote.",
        "Audit deadline", "Luis to pay the invoice")
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        agent = await save_agent(c, root)
        first, _ = await run_all(c, agent["id"])
        assert len(held_lines(first)) == 1, first["errors"]
        await save_agent(c, root, id=agent["id"], data_types=["tasks"])
        await c.request({"type": "projects_sync", "projects": [{
            "id": "p_14", "name": "Orchard Lane shop", "client": "Orchard Lane"}]})
        _, after = await run_all(c, agent["id"])
        left = (await c.request({"type": "status"}))["held"]
        await c.close()
    finally:
        await d.stop()
    assert timelines(after) == [] and left == 0, after


async def test_a_projectid_in_the_engines_answer_is_never_trusted(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """A remote model (or a document talking to it) answers its own projectId: the record
    still goes where the agent's project or the app's projects say, never to that id."""
    import json

    from tests.fakes.openai_server import FakeOpenAI

    answer = json.dumps({"items": [
        {"table": "tasks", "data": {"title": "Send the quote", "projectId": "p_evil"}},
        {"table": "timelines", "data": {"title": "Launch", "date": DUE.isoformat(),
                                        "projectId": "p_evil"}}]})
    fake = await FakeOpenAI(lambda body: answer).start()
    root = tmp_path / "docs"
    doc(root / "Harbor Bakery" / "plan.md", "Plan", "x", "Launch", "Send the quote")
    doc(tmp_path / "own" / "plan.md", "Plan", "x", "Launch", "Send the quote")
    remote = {"engine": "remote", "remote": {"base_url": fake.url, "model": "fake"}}
    d = await DaemonProcess.start(data_dir, token=token,
                                  extra_args=["--model-dir", str(model_dir)])
    try:
        c = await d.connect()
        await c.hello()
        await c.request({"type": "projects_sync", "projects": PROJECTS})
        linked = await save_agent(c, root, **remote)
        _, by_match = await run_all(c, linked["id"])
        own = await save_agent(c, tmp_path / "own", project_id="p_own", **remote)
        _, by_agent = await run_all(c, own["id"])
        await c.close()
    finally:
        await d.stop()
        await fake.close()
    assert sorted((x["table"], x["data"].get("projectId")) for x in by_match) == [
        ("tasks", "p_12"), ("timelines", "p_12")], by_match
    assert all(x["source"]["project"]["id"] == "p_12" for x in by_match)
    assert sorted((x["table"], x["data"].get("projectId")) for x in by_agent) == [
        ("tasks", "p_own"), ("timelines", "p_own")], by_agent
