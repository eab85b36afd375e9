"""Records that wait for another insert's id, through the real daemon: a document that
introduces a project the app does not know gives a ``projects`` suggestion first, and its
tasks and timelines follow only once the app's ``tool_result`` gives the project's id; a
reply in an email thread gives a ``taskComments`` suggestion on the task the sidecar
suggested from the earlier message. Held records survive a kill -9 and come once."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from sidecar.client import DaemonProcess, SidecarClient

LAUNCH = date.today() + timedelta(days=60)
KICKOFF = f"""# Kickoff — Nova Dental rebrand

Client: Nova Dental

New client: the clinic wants a full rebrand before its opening.

## Milestones
- Launch target: {LAUNCH.day} {LAUNCH:%B %Y}

## Action items
- [ ] Priya to send the mood board
- [ ] Tom to book the photo shoot
"""
ORDINARY = """# Weekly sync

Project: Apollo

We talked about the new brief for next quarter.

## Action items
- [ ] Luis to pay the printer invoice
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


async def start(data_dir: Path, token: str, model_dir: Path, **env: str) -> DaemonProcess:
    return await DaemonProcess.start(data_dir, token=token, env=env or None,
                                     extra_args=["--model-dir", str(model_dir)])


async def make_agent(c: SidecarClient, folder: Path, types: list[str],
                     extensions: tuple[str, ...] = (".md",)) -> dict[str, Any]:
    reply = await c.request({"type": "agent_upsert", "agent": {
        "kind": "local", "name": folder.name, "directories": [str(folder)],
        "extensions": list(extensions), "data_types": types, "schedule_cron": "0 3 * * *",
        "watch": False}})
    assert reply["type"] == "agent_upsert_result", reply
    return reply


async def connect_agent(d: DaemonProcess, folder: Path, types: list[str],
                        extensions: tuple[str, ...] = (".md",)) -> tuple[SidecarClient, str]:
    """A writer that said hello, and a local agent over ``folder``."""
    c = await d.connect()
    await c.hello()
    return c, str((await make_agent(c, folder, types, extensions))["agent"]["id"])


async def run(c: SidecarClient, agent_id: str) -> str:
    return str((await c.request({"type": "run_agent", "agent_id": agent_id}))["run_id"])


#: Frames other than tool_calls that came while waiting for tool_calls, per client.
OTHERS: dict[int, list[dict[str, Any]]] = {}


async def calls_until_quiet(c: SidecarClient, quiet: float = 1.5, *, ack: bool = True,
                            until: int | None = None, first: float | None = None
                            ) -> list[dict[str, Any]]:
    """tool_calls pushed until none came for ``quiet`` s (``first`` s for the first one) or
    ``until`` came, acked with ``{"id": "x_<n>"}`` when ``ack``; other frames are kept in
    ``OTHERS``."""
    out: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (first or quiet)
    while until is None or len(out) < until:
        try:
            frame = await c.next_push(None, timeout=max(0.0, deadline - loop.time()))
        except TimeoutError:
            break
        if frame["type"] != "tool_call":
            OTHERS.setdefault(id(c), []).append(frame)
            continue
        deadline = loop.time() + quiet
        out.append(frame)
        if ack:
            await c.ack(frame, {"id": f"x_{len(out)}"})
    return out


async def next_run_frame(c: SidecarClient, type_: str, run_id: str,
                         timeout: float = 90) -> dict[str, Any]:
    for frame in OTHERS.get(id(c), []):
        if frame["type"] == type_ and frame["run"]["id"] == run_id:
            return frame["run"]
    while True:
        frame = await c.next_push(type_, timeout=timeout)
        if frame["run"]["id"] == run_id:
            return frame["run"]


def titles(calls: list[dict[str, Any]], table: str) -> set[str]:
    return {str(c["data"].get("title")) for c in calls if c["table"] == table}


def rows(db: Path, sql: str) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql)]
    finally:
        con.close()


TASKS = {"Priya to send the mood board", "Tom to book the photo shoot"}
MILESTONE = f"Launch target: {LAUNCH.day} {LAUNCH:%B %Y}"


async def test_a_new_project_comes_first_and_its_records_follow_with_its_id(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root / "kickoff.md", KICKOFF)
    write(root / "weekly.md", ORDINARY)
    d = await start(data_dir, token, model_dir)
    try:
        c = await d.connect()
        await c.hello()
        saved = await make_agent(c, root, ["tasks", "timelines", "projects"])
        agent = saved["agent"]["id"]
        run_id = await run(c, agent)
        first = await calls_until_quiet(c, ack=False, until=2)
        projects = [f for f in first if f["table"] == "projects"]
        assert len(projects) == 1, first
        project = projects[0]
        assert project["data"] == {"name": "Nova Dental rebrand", "isAiSuggested": 1,
                                   "isApproved": 0}
        assert project["source"]["introduces"]["by"] == "kickoff"
        assert project["idempotency_key"].startswith("k2:")
        ordinary = [f for f in first if f["table"] == "tasks"]
        assert [f["data"]["title"] for f in ordinary] == ["Luis to pay the printer invoice"]
        assert "projectId" not in ordinary[0]["data"], "an ordinary document links nothing"
        await c.ack(ordinary[0], {"id": "t_1"})
        # the kickoff's records wait for the project's id: nothing more comes meanwhile
        assert await calls_until_quiet(c, quiet=1.5, ack=False) == []
        status = await c.request({"type": "run_list", "agent_id": agent})
        assert status["type"] == "run_list_result"
        await c.ack(project, {"id": "p_new_7"})
        released = await calls_until_quiet(c, until=3)
        assert titles(released, "tasks") == TASKS
        assert titles(released, "timelines") == {MILESTONE}
        for call in released:
            assert call["data"]["projectId"] == "p_new_7", call
            assert call["source"]["project"]["id"] == "p_new_7"
            assert call["source"]["project"]["term"] == "Nova Dental rebrand"
            assert call["run_id"] == run_id
        delivered = await next_run_frame(c, "run_delivered", run_id)
        assert delivered["status"] == "success", delivered
        assert (delivered["extracted"], delivered["delivered"], delivered["pending"]) == (
            5, 5, 0)
        assert await calls_until_quiet(c, quiet=1.0) == [], "a record came twice"
        await c.close()
    finally:
        await d.stop()
    db = data_dir / "sidecar.sqlite3"
    assert rows(db, "SELECT count(*) AS n FROM held") == [{"n": 0}]
    assert [json.loads(r["result_id"]) for r in rows(
        db, "SELECT result_id FROM outbox WHERE table_name = 'projects'")] == ["p_new_7"]


async def test_the_agent_save_reply_warns_what_its_types_cannot_give(
        daemon: DaemonProcess, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    c = await daemon.connect()
    try:
        reply = await make_agent(c, folder, ["tasks", "timelines", "taskComments"])
        warnings = reply["warnings"]
        assert any(w.startswith("taskComments:") and ".eml" in w for w in warnings), warnings
        assert any(w.startswith("timelines need a project") for w in warnings), warnings
        plain = await make_agent(c, folder, ["tasks"])
        assert "warnings" not in plain, plain
    finally:
        await c.close()


async def test_a_failed_project_insert_releases_tasks_without_it_and_says_why(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root / "kickoff.md", KICKOFF)
    d = await start(data_dir, token, model_dir)
    try:
        c, agent = await connect_agent(d, root, ["tasks", "timelines", "projects"])
        run_id = await run(c, agent)
        project = (await calls_until_quiet(c, ack=False, until=1))[0]
        assert project["table"] == "projects"
        # a retryable error keeps them held; the same call comes again after its backoff
        await c.ws.send_str(json.dumps({"type": "tool_result", "id": project["id"],
                                        "error": "database is locked", "retryable": True}))
        again = await calls_until_quiet(c, quiet=4.0, ack=False, until=1)
        assert [f["id"] for f in again] == [project["id"]], again
        finished = await next_run_frame(c, "run_finished", run_id)
        # the held records count as extracted and pending, beside the project
        assert (finished["extracted"], finished["delivered"], finished["pending"]) == (4, 0, 4)
        await c.ack(project, error="a project with this name exists")
        released = await calls_until_quiet(c, until=2)
        assert titles(released, "tasks") == TASKS
        assert titles(released, "timelines") == set(), "a timeline needs a project"
        for call in released:
            assert "projectId" not in call["data"], call
            assert "project" not in call["source"]
            assert "a project with this name exists" in call["source"]["unlinked"]
        delivered = await next_run_frame(c, "run_delivered", run_id)
        await c.close()
    finally:
        await d.stop()
    errors = "\n".join(delivered["errors"])
    assert ("Project suggestion 'Nova Dental rebrand': its insert failed: a project with "
            "this name exists; 2 record(s) sent without projectId") in errors, errors
    assert "1 timeline(s) held: no project" in errors and MILESTONE in errors, errors
    assert delivered["status"] == "partial"


REPLY_BODY = "Sent it this morning, it is in the shared folder."


def email(path: Path, subject: str, body: str, *, mid: str, reply_to: str | None = None,
          sender: str = "Ana Ruiz <ana@nova.example>") -> None:
    head = [f"From: {sender}", "To: me@studio.example", f"Subject: {subject}",
            f"Message-ID: <{mid}>", "Content-Type: text/plain; charset=utf-8"]
    if reply_to:
        head += [f"In-Reply-To: <{reply_to}>", f"References: <{reply_to}>"]
    write(path, "\n".join(head) + "\n\n" + body + "\n")


async def test_a_reply_in_the_thread_comments_on_the_task_once_its_id_is_known(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    email(root / "1-ask.eml", "Logo files",
          "Hi,\n\nAction items:\n- [ ] Priya to send the logo files\n\nThanks, Ana",
          mid="ask-1@nova.example")
    email(root / "2-reply.eml", "Re: Logo files",
          f"{REPLY_BODY}\n\nOn Mon, Ana Ruiz wrote:\n> - [ ] Priya to send the logo files",
          mid="reply-1@studio.example", reply_to="ask-1@nova.example",
          sender="Priya Shah <priya@studio.example>")
    email(root / "3-other.eml", "Parking", "The car park is closed on Friday.",
          mid="other-1@nova.example")
    d = await start(data_dir, token, model_dir)
    try:
        c, agent = await connect_agent(d, root, ["tasks", "taskComments"], (".eml",))
        run_id = await run(c, agent)
        first = await calls_until_quiet(c, ack=False)
        assert [f["table"] for f in first] == ["tasks"], first
        assert first[0]["data"]["title"] == "Priya to send the logo files"
        await c.ack(first[0], {"id": "t_42"})
        comments = await calls_until_quiet(c)
        delivered = await next_run_frame(c, "run_delivered", run_id)
        await c.close()
    finally:
        await d.stop()
    assert [f["table"] for f in comments] == ["taskComments"], comments
    assert comments[0]["data"] == {"taskId": "t_42", "author": "Priya Shah",
                                   "content": REPLY_BODY, "isAiSuggested": 1, "isApproved": 0}
    assert comments[0]["source"]["task"] == {
        "call_id": first[0]["id"], "title": "Priya to send the logo files", "id": "t_42",
        "by": "in_reply_to"}
    assert delivered["status"] == "success" and delivered["extracted"] == 2


@pytest.mark.parametrize("point", ["outbox.settle", "outbox.settled"])
async def test_kill_9_around_the_project_ack_loses_nothing_and_sends_nothing_twice(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path, point: str) -> None:
    """The daemon dies with the records held (no ack yet), then at the project's ack: just
    before its settle commits (the project is sent again, acked again, its records follow)
    or just after (they were queued in that commit and are sent after the restart)."""
    root = tmp_path / "docs"
    write(root / "kickoff.md", KICKOFF)
    d = await start(data_dir, token, model_dir)
    try:
        c, agent = await connect_agent(d, root, ["tasks", "timelines", "projects"])
        await run(c, agent)
        project = (await calls_until_quiet(c, ack=False, until=1))[0]
        assert project["table"] == "projects"
        await c.close()
    finally:
        await d.kill()  # held, unacked
    db = data_dir / "sidecar.sqlite3"
    assert {r["table_name"] for r in rows(db, "SELECT table_name FROM held")} == {
        "tasks", "timelines"}
    d = await start(data_dir, token, model_dir, SIDECAR_FAILPOINT=f"{point}:1")
    try:
        c = await d.connect()
        await c.hello()
        again = (await calls_until_quiet(c, ack=False, until=1))[0]
        assert again["id"] == project["id"]
        await c.ack(again, {"id": "p_88"})
        assert await asyncio.wait_for(d.proc.wait(), 30) != 0  # killed itself at the point
    finally:
        await d.kill()
    d = await start(data_dir, token, model_dir)
    try:
        c = await d.connect()
        await c.hello()
        got = await calls_until_quiet(c, quiet=3.0)
        await c.close()
    finally:
        await d.stop()
    if point == "outbox.settle":  # the ack was not recorded: the project comes again first
        assert got[0]["id"] == project["id"], got[0]
        got = got[1:]
    assert titles(got, "tasks") == TASKS and titles(got, "timelines") == {MILESTONE}
    assert len(got) == 3, [g["data"] for g in got]
    ids = {g["data"]["projectId"] for g in got}
    assert ids == {"p_88" if point == "outbox.settled" else "x_1"}, ids
    assert rows(db, "SELECT count(*) AS n FROM held") == [{"n": 0}]
    counts = rows(db, "SELECT table_name, state, count(*) AS n FROM outbox GROUP BY 1, 2")
    assert sorted((r["table_name"], r["state"], r["n"]) for r in counts) == [
        ("projects", "acked", 1), ("tasks", "acked", 2), ("timelines", "acked", 1)]


# -- the evidence rules, by hand-written cases ----------------------------------------------

@pytest.mark.parametrize(("titles", "text", "expected"), [
    (["kickoff"], "# Kickoff — Nova Dental rebrand\n\nClient: Nova Dental\n",
     ("Nova Dental rebrand", "Nova Dental", "kickoff")),
    (["Nova Dental kickoff call"], "Agenda", ("Nova Dental", None, "kickoff")),
    (["Project brief: Summer menu"], "x", ("Summer menu", None, "brief")),
    (["Summer menu — creative brief"], "x", ("Summer menu", None, "brief")),
    (["New client: Blue Fern"], "", ("Blue Fern", None, "new client")),
    (["New project – Orchard app"], "", ("Orchard app", None, "new project")),
    (["notes"], "# Onboarding\nProject: Apollo\nClient: Acme Corp\n",
     ("Apollo", "Acme Corp", "project field")),
    (["Welcome aboard"], "New client!\nClient: Blue Fern Studio\n",
     ("Blue Fern Studio", "Blue Fern Studio", "new client")),
    (["Kickoff: Orchard app (draft)"], "", ("Orchard app", None, "kickoff")),
    # ordinary documents introduce nothing
    (["Weekly kickoff"], "hello", None),
    (["Q3 kickoff"], "hello", None),
    (["Weekly brief"], "x", None),
    (["brief"], "x", None),
    (["kickoff"], "# Kickoff\n", None),
    (["weekly"], "# Weekly sync\n\nProject: Apollo\n\nWe talked about the new brief.\n", None),
    (["Welcome aboard"], "We have a new client!\nClient: Blue Fern Studio\n", None),
    (["Re: Nova Dental kickoff"], "x", None),
    (["Fwd: Summer menu — creative brief"], "x", None),
    (["Meeting notes"], "Talked with the client about the brief.", None),
])
def test_what_introduces_a_project(titles: list[str], text: str,
                                   expected: tuple[str, str | None, str] | None) -> None:
    from sidecar.project_intro import introduction

    found = introduction(titles, text)
    assert (None if found is None else (found.name, found.client, found.by)) == expected


def test_a_reply_is_its_own_words_and_picks_the_task_it_talks_about() -> None:
    from sidecar.threads import author, message_ids, pick_task, reply_keys, reply_text

    text = ("Subject: Re: Logo files\nFrom: Priya <p@x>\nDate: Mon\n\nDone, the logo is in "
            "the folder.\n> quoted line\nThanks\n\nOn Mon, 2 Mar 2026, Ana wrote:\n> Please "
            "send the logo\n> and book the shoot")
    assert reply_text(text) == "Done, the logo is in the folder.\nThanks"
    assert reply_text("Subject: x\n\nNew text\n-----Original Message-----\nFrom: a") == \
        "New text"
    tasks = [("c_1", "Send the logo files"), ("c_2", "Book the photo shoot")]
    assert pick_task(tasks, "The logo is in the folder") == ("c_1", "Send the logo files")
    assert pick_task(tasks, "Booked the shoot for Friday") == ("c_2", "Book the photo shoot")
    assert pick_task(tasks, "Thanks, all good") is None, "nothing in common: no guess"
    assert pick_task(tasks, "the logo and the shoot") is None, "a tie: no guess"
    assert pick_task(tasks[:1], "Thanks, all good") == tasks[0], "the thread's only task"
    assert author({"from": "Priya Shah <p@x.com>"}) == "Priya Shah"
    assert author({"from": "p@x.com"}) == "p@x.com"
    assert message_ids("<A@x> <b@y>") == ["a@x", "b@y"]
    meta = {"subject": "RE: Logo files", "in_reply_to": "<a@x>", "references": "<r@x> <a@x>",
            "thread_id": "t9"}
    assert reply_keys(meta, "gmail:me") == [
        ("msg:a@x", "in_reply_to"), ("msg:a@x", "references"), ("msg:r@x", "references"),
        ("thread:gmail:me:t9", "thread"), ("subject:gmail:me:logo files", "subject")]
    assert reply_keys({"subject": "Logo files"}, "s") == [], "not a reply: no subject match"


async def test_a_reply_never_comments_on_its_own_tasks_when_read_again(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """A reply found by its subject alone that gives a task of its own: read again (a full
    run), its subject leads to that task, which is its own, not the thread's."""
    root = tmp_path / "mail"
    email(root / "reply.eml", "Re: Budget",
          "Agreed.\n\nAction items:\n- [ ] Omar to update the budget sheet",
          mid="budget-2@studio.example")
    d = await start(data_dir, token, model_dir)
    try:
        c, agent = await connect_agent(d, root, ["tasks", "taskComments"], (".eml",))
        first_run = await run(c, agent)
        first = await calls_until_quiet(c)
        await next_run_frame(c, "run_delivered", first_run)
        again = (await c.request({"type": "run_agent", "agent_id": agent, "full": True}))
        second = await calls_until_quiet(c)
        delivered = await next_run_frame(c, "run_delivered", again["run_id"])
        await c.close()
    finally:
        await d.stop()
    assert [f["data"]["title"] for f in first] == ["Omar to update the budget sheet"]
    assert second == [], second
    assert delivered["status"] == "success"


async def test_a_second_document_introducing_the_project_waits_for_the_same_suggestion(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """Two documents introducing one name make one suggestion; the second run's records wait
    for the first run's suggestion (retried meanwhile), and that run is not delivered before
    they are: run_delivered counts what is held."""
    root = tmp_path / "docs"
    write(root / "kickoff.md", KICKOFF)
    d = await start(data_dir, token, model_dir)
    try:
        c, agent = await connect_agent(d, root, ["tasks", "projects"])
        run1 = await run(c, agent)
        events: list[tuple[str, Any]] = []  # what happened, in order
        project_id: str | None = None
        run2: str | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while loop.time() < deadline:
            frame = await c.next_push(None, timeout=max(0.1, deadline - loop.time()))
            kind = frame["type"]
            if kind == "tool_call" and frame["table"] == "projects":
                events.append(("project", frame["run_id"]))
                project_id = project_id or frame["id"]
                assert frame["id"] == project_id, "one suggestion for one name"
                if not any(e[0] == "finished2" for e in events):  # store it after run 2
                    await c.ws.send_str(json.dumps({"type": "tool_result", "id": frame["id"],
                                                    "error": "busy", "retryable": True}))
                else:
                    await c.ack(frame, {"id": "p_5"})
            elif kind == "tool_call":
                events.append(("record", (frame["run_id"], frame["data"]["projectId"])))
                await c.ack(frame, {"id": "t"})
            elif kind == "run_finished" and frame["run"]["id"] == run1 and run2 is None:
                write(root / "brief.md", "# Project brief: Nova Dental rebrand\n\n"
                      "## Action items\n- [ ] Ana to draft the welcome letter\n")
                run2 = await run(c, agent)
            elif kind == "run_finished" and frame["run"]["id"] == run2:
                events.append(("finished2", (frame["run"]["extracted"],
                                             frame["run"]["pending"])))
            elif kind == "run_delivered" and frame["run"]["id"] == run2:
                events.append(("delivered2", frame["run"]["delivered"]))
                break
        await c.close()
    finally:
        await d.stop()
    assert ("finished2", (1, 1)) in events, events
    records = [e for e in events if e[0] == "record"]
    assert sorted(r[1] for r in records) == sorted(
        [(run1, "p_5"), (run1, "p_5"), (run2, "p_5")]), events
    assert events.index(("record", (run2, "p_5"))) < events.index(("delivered2", 1)), \
        "run 2 was delivered while its record was still held"


async def test_an_old_kickoff_on_a_first_run_suggests_no_project(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """initial_lookback_days: a document older than the window is indexed without its work
    on an agent's first run; the project it introduced long ago is not suggested either."""
    import os
    import time

    root = tmp_path / "docs"
    old = write(root / "kickoff.md", KICKOFF.replace(MILESTONE, "Launch soon"))
    then = time.time() - 90 * 86400
    os.utime(old, (then, then))
    write(root / "brief.md", "# Project brief: Orchard app\n\n## Action items\n"
          "- [ ] Bea to list the screens\n")
    d = await DaemonProcess.start(data_dir, token=token, extra_args=[
        "--model-dir", str(model_dir), "--initial-lookback-days", "30"])
    try:
        c, agent = await connect_agent(d, root, ["tasks", "projects"])
        run_id = await run(c, agent)
        got = await calls_until_quiet(c)
        delivered = await next_run_frame(c, "run_delivered", run_id)
        await c.close()
    finally:
        await d.stop()
    assert [(g["table"], g["data"].get("name") or g["data"]["title"]) for g in got] == [
        ("projects", "Orchard app"), ("tasks", "Bea to list the screens")], got
    assert delivered["items_processed"] == 2


@pytest.fixture
async def gmail() -> Any:
    from tests.fakes.gmail_server import FakeGmail
    from tests.test_cloud_agents import ACCOUNT

    server = FakeGmail(email=ACCOUNT, page_size=5)
    await server.start()
    yield server
    await server.close()


async def test_a_reply_in_the_same_gmail_thread_comments_on_its_task(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path, gmail: Any) -> None:
    """Gmail gives no In-Reply-To here: the shared threadId finds the earlier message."""
    from datetime import UTC, datetime

    from tests.test_cloud_agents import ACCOUNT, connect_gmail, daemon_env

    now = datetime.now(UTC)
    first = gmail.add_message("m1", subject="Menu photos", when=now - timedelta(days=1),
                              sender="Dana <dana@bakery.example>",
                              text="Hi Priya,\nCould you please send the menu photos before "
                                   "Friday?\nThanks, Dana")
    reply = gmail.add_message("m2", subject="Re: Menu photos", when=now - timedelta(hours=1),
                              sender="Priya Shah <priya@studio.example>",
                              text="Done, they are in the shared folder.\n\nOn Mon, Dana "
                                   "wrote:\n> Could you please send the menu photos")
    reply["threadId"] = first["threadId"]
    d = await DaemonProcess.start(data_dir, token=token, extra_args=[
        "--model-dir", str(model_dir)], env=daemon_env(
            tmp_path, gmail, "keyrings.alt.file.PlaintextKeyring"))
    try:
        c = await d.connect()
        await c.hello()
        await connect_gmail(c, gmail)
        agent = (await c.request({"type": "agent_upsert", "agent": {
            "kind": "cloud", "provider": "gmail", "account": ACCOUNT, "name": "Inbox",
            "data_types": ["tasks", "taskComments"], "schedule_cron": "0 3 * * *"}}))
        assert any("only replies" in w for w in agent["warnings"]), agent
        run_id = await run(c, agent["agent"]["id"])
        got = await calls_until_quiet(c, quiet=3.0, first=60)
        delivered = await next_run_frame(c, "run_delivered", run_id)
        await c.close()
    finally:
        await d.stop()
    # (the reply's quoted line gives the engine a task of its own: not this test's concern)
    tasks = [g for g in got if g["table"] == "tasks" and g["source"]["key"] == "m1"]
    comments = [g for g in got if g["table"] == "taskComments"]
    assert len(tasks) == 1 and "menu photos" in tasks[0]["data"]["title"].lower(), got
    task_id = f"x_{got.index(tasks[0]) + 1}"  # what calls_until_quiet answered
    assert len(comments) == 1, got
    assert comments[0]["data"]["taskId"] == task_id
    assert comments[0]["data"]["content"] == "Done, they are in the shared folder."
    assert comments[0]["data"]["author"] == "Priya Shah"
    assert comments[0]["source"]["task"]["by"] == "thread"
    assert delivered["status"] == "success"


async def test_an_outlook_reply_with_a_new_subject_comments_through_its_conversation(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """Graph gives no In-Reply-To and the user retitled the reply: the conversationId (which
    the source must ask for in $select) finds the earlier message's task."""
    from datetime import UTC, datetime

    from tests.test_cloud_agents import connect_microsoft, graph_daemon

    now = datetime.now(UTC)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    async with graph_daemon(data_dir, token, tmp_path, model_dir) as (graph, c):
        account = await connect_microsoft(c, graph, "outlook")
        graph.add_message("m1", (now - timedelta(days=1)).strftime(stamp),
                          subject="Menu photos", conversation_id="AAQk-menu",
                          sender="dana@bakery.example", sender_name="Dana",
                          body="<p>Hi Priya,</p><p>Could you please send the menu photos "
                               "before Friday?</p><p>Thanks, Dana</p>")
        graph.add_message("m2", (now - timedelta(hours=1)).strftime(stamp),
                          subject="Photos are up", conversation_id="AAQk-menu",
                          sender="priya@studio.example", sender_name="Priya Shah",
                          body="<p>Done, they are in the shared folder.</p>")
        graph.add_message("m3", (now - timedelta(minutes=30)).strftime(stamp),
                          subject="Invoice", sender="ola@else.example", sender_name="Ola",
                          body="<p>Thanks, the invoice arrived.</p>")
        agent = (await c.request({"type": "agent_upsert", "agent": {
            "kind": "cloud", "provider": "outlook", "account": account, "name": "Mail",
            "data_types": ["tasks", "taskComments"], "schedule_cron": "0 3 * * *"}}))
        run_id = await run(c, agent["agent"]["id"])
        got = await calls_until_quiet(c, quiet=3.0, first=60)
        delivered = await next_run_frame(c, "run_delivered", run_id)
    tasks = [g for g in got if g["table"] == "tasks"]
    comments = [g for g in got if g["table"] == "taskComments"]
    assert len(tasks) == 1 and "menu photos" in tasks[0]["data"]["title"].lower(), got
    assert len(comments) == 1, got
    assert comments[0]["data"]["taskId"] == f"x_{got.index(tasks[0]) + 1}"
    assert comments[0]["data"]["content"] == "Done, they are in the shared folder."
    assert comments[0]["data"]["author"] == "Priya Shah"
    assert comments[0]["source"]["task"]["by"] == "thread"
    assert delivered["status"] == "success"


def test_only_a_string_or_integer_result_id_links() -> None:
    from sidecar.store.held import id_of

    assert id_of({"id": "p_1"}) == "p_1"
    assert id_of({"id": 7}) == 7, "the app's integer ids are passed back as they came"
    for bad in ({"id": ""}, {"id": "  "}, {"id": True}, {"id": None}, {"id": {"x": 1}},
                {"id": [1]}, {"ok": True}, None, "p_1", 7):
        assert id_of(bad) is None, bad


async def test_a_run_whose_record_waits_on_another_runs_project_is_not_delivered_after_a_kill(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """Start-up marks closed runs with nothing pending as delivered; a run whose only record
    is held (waiting for the first run's project) is not one of them."""
    root = tmp_path / "docs"
    write(root / "kickoff.md", KICKOFF)
    d = await start(data_dir, token, model_dir)
    try:
        c, agent = await connect_agent(d, root, ["tasks", "projects"])
        run1 = await run(c, agent)
        project = (await calls_until_quiet(c, ack=False, until=1, first=60))[0]
        await c.ws.send_str(json.dumps({"type": "tool_result", "id": project["id"],
                                        "error": "busy", "retryable": True}))
        await next_run_frame(c, "run_finished", run1)
        write(root / "brief.md", "# Project brief: Nova Dental rebrand\n\n"
              "## Action items\n- [ ] Ana to draft the welcome letter\n")
        run2 = await run(c, agent)
        finished = await next_run_frame(c, "run_finished", run2)
        assert (finished["extracted"], finished["pending"]) == (1, 1), finished
        await c.close()
    finally:
        await d.kill()
    d = await start(data_dir, token, model_dir)
    try:
        c = await d.connect()
        hello = await c.hello()
        await c.close()
    finally:
        await d.stop()
    last = {r["id"]: r for r in hello["last_runs"]}
    assert last[run2]["delivered_at"] is None and last[run2]["pending"] == 1, last[run2]


async def test_the_engine_is_never_asked_for_projects_or_comments(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """projects and taskComments are the sidecar's own (evidence, threads): a model asked
    for them would invent project names and task ids. A remote engine that answers them
    anyway has them dropped like any table it was not asked for."""
    from tests.fakes.openai_server import FakeOpenAI

    answer = json.dumps({"items": [
        {"table": "tasks", "data": {"title": "Send the quote"}},
        {"table": "projects", "data": {"name": "Invented project"}},
        {"table": "taskComments", "data": {"taskId": "999", "content": "made up"}}]})
    fake = await FakeOpenAI(lambda body: answer).start()
    root = tmp_path / "docs"
    write(root / "notes.md", "# Notes\n\n- [ ] Send the quote\n")
    d = await start(data_dir, token, model_dir)
    try:
        c = await d.connect()
        await c.hello()
        reply = await c.request({"type": "agent_upsert", "agent": {
            "kind": "local", "name": "Docs", "directories": [str(root)], "extensions": [".md"],
            "data_types": ["tasks", "projects", "taskComments"], "schedule_cron": "0 3 * * *",
            "watch": False, "engine": "remote",
            "remote": {"base_url": fake.url, "model": "fake"}}})
        run_id = await run(c, reply["agent"]["id"])
        got = await calls_until_quiet(c, first=60)
        delivered = await next_run_frame(c, "run_delivered", run_id)
        await c.close()
    finally:
        await d.stop()
        await fake.close()
    assert [(g["table"], g["data"]["title"]) for g in got] == [("tasks", "Send the quote")]
    assert delivered["status"] == "success", delivered
    asked = json.dumps(fake.requests)
    assert fake.requests and "taskComments" not in asked and "clientId" not in asked


async def test_records_found_after_the_project_was_stored_carry_its_id_at_once(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """The kickoff is edited after the app stored its project: its new task goes out at once
    with the project's id (kept with the ack), and nothing is sent twice."""
    root = tmp_path / "docs"
    kickoff = write(root / "kickoff.md", KICKOFF)
    d = await start(data_dir, token, model_dir)
    try:
        c, agent = await connect_agent(d, root, ["tasks", "projects"])
        first_run = await run(c, agent)
        project = (await calls_until_quiet(c, ack=False, until=1, first=60))[0]
        await c.ack(project, {"id": "p_31"})
        first = await calls_until_quiet(c)
        await next_run_frame(c, "run_delivered", first_run)
        kickoff.write_text(KICKOFF + "- [ ] Omar to order the signage\n", encoding="utf-8")
        second_run = await run(c, agent)
        second = await calls_until_quiet(c, first=60)
        delivered = await next_run_frame(c, "run_delivered", second_run)
        await c.close()
    finally:
        await d.stop()
    assert titles(first, "tasks") == TASKS
    assert [(g["table"], g["data"]["title"], g["data"]["projectId"]) for g in second] == [
        ("tasks", "Omar to order the signage", "p_31")], second
    assert delivered["status"] == "success"


async def test_a_reply_to_a_task_the_app_refused_gives_no_comment_and_says_why(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "mail"
    email(root / "1-ask.eml", "Logo files",
          "Hi,\n\nAction items:\n- [ ] Priya to send the logo files\n\nThanks, Ana",
          mid="ask-1@nova.example")
    email(root / "2-reply.eml", "Re: Logo files", REPLY_BODY, mid="reply-1@studio.example",
          reply_to="ask-1@nova.example", sender="Priya Shah <priya@studio.example>")
    d = await start(data_dir, token, model_dir)
    try:
        c, agent = await connect_agent(d, root, ["tasks", "taskComments"], (".eml",))
        run_id = await run(c, agent)
        task = (await calls_until_quiet(c, ack=False, until=1, first=60))[0]
        await c.ack(task, error="tasks.title: duplicate")
        after = await calls_until_quiet(c)
        delivered = await next_run_frame(c, "run_delivered", run_id)
        await c.close()
    finally:
        await d.stop()
    assert after == [], "a comment on a task the app does not have"
    assert ("1 comment(s) not suggested: the task 'Priya to send the logo files' has no id "
            "(its insert failed: tasks.title: duplicate)") in delivered["errors"], delivered


# -- around the feature: status, the CLI, two windows, a doubled ack ------------------------

async def test_status_counts_held_records_apart_from_the_outbox(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root / "kickoff.md", KICKOFF)
    d = await start(data_dir, token, model_dir)
    try:
        c, agent = await connect_agent(d, root, ["tasks", "timelines", "projects"])
        await run(c, agent)
        project = (await calls_until_quiet(c, ack=False, until=1))[0]
        assert project["table"] == "projects"
        before = await c.request({"type": "status"})
        cli = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "sidecar", "status", "--data-dir", str(data_dir)],
            capture_output=True, text=True, timeout=120)
        await c.ack(project, {"id": "p_5"})
        released = await calls_until_quiet(c, ack=False, until=3)
        after = await c.request({"type": "status"})
        for call in released:
            await c.ack(call, {"id": "r"})
        await calls_until_quiet(c, quiet=1.0)
        done = await c.request({"type": "status"})
        await c.close()
    finally:
        await d.stop()
    # the project waits in the outbox; its two tasks and its timeline are held
    assert (before["outbox_pending"], before["held"]) == (1, 3), before
    # `sidecar status` says the same, and only that (no log lines on stderr)
    assert cli.returncode == 0 and cli.stderr == "", cli.stderr
    assert "outbox: 1 record(s) waiting for Electron; 3 held until" in cli.stdout, cli.stdout
    assert len(released) == 3
    assert (after["outbox_pending"], after["held"]) == (3, 0), after
    assert (done["outbox_pending"], done["held"]) == (0, 0), done


def test_the_cli_prints_the_agent_save_warnings(tmp_path: Path) -> None:
    import subprocess
    import sys

    folder = tmp_path / "docs"
    folder.mkdir()

    def add(types: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sidecar", "agents", "add", "--name", "Docs", "--dir",
             str(folder), "--ext", "md", "--types", types, "--allowed-root", str(tmp_path),
             "--data-dir", str(tmp_path / "data"), *extra],
            capture_output=True, text=True, timeout=60)

    warned = add("tasks,timelines,taskComments")
    assert warned.returncode == 0, warned.stderr
    lines = [ln for ln in warned.stderr.splitlines() if ln.startswith("sidecar: warning: ")]
    assert any("timelines need a project" in ln for ln in lines), warned.stderr
    assert any("taskComments:" in ln and ".eml" in ln for ln in lines), warned.stderr
    assert json.loads(warned.stdout)["data_types"] == ["tasks", "timelines", "taskComments"]
    plain = add("tasks")
    assert plain.returncode == 0 and "warning" not in plain.stderr, plain.stderr
    own = add("tasks,timelines", "--project-id", "p_9")
    assert own.returncode == 0 and "warning" not in own.stderr, own.stderr
    assert json.loads(own.stdout)["project_id"] == "p_9"


async def drain(c: SidecarClient, quiet: float = 1.0) -> list[dict[str, Any]]:
    """Every frame pushed to ``c`` until none came for ``quiet`` s (nothing acked)."""
    out = []
    while True:
        try:
            out.append(await c.next_push(None, timeout=quiet))
        except TimeoutError:
            return out


async def test_with_a_writer_and_an_observer_released_records_reach_the_writer_once(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root / "kickoff.md", KICKOFF)
    d = await start(data_dir, token, model_dir)
    try:
        writer, agent = await connect_agent(d, root, ["tasks", "timelines", "projects"])
        observer = await d.connect()
        assert (await observer.hello(role="observer"))["type"] == "hello_result"
        run_id = await run(writer, agent)
        project = (await calls_until_quiet(writer, ack=False, until=1))[0]
        await writer.ack(project, {"id": "p_w"})
        released = await calls_until_quiet(writer, quiet=2.0)
        delivered = await next_run_frame(writer, "run_delivered", run_id)
        seen = await drain(observer)
        await writer.close()
        await observer.close()
    finally:
        await d.stop()
    assert [c["table"] for c in released].count("tasks") == 2 and len(released) == 3
    assert len({c["id"] for c in released}) == 3
    assert {c["data"]["projectId"] for c in released} == {"p_w"}
    assert delivered["delivered"] == 4 and delivered["pending"] == 0, delivered
    assert not [f for f in seen if f["type"] == "tool_call"], "an observer got an insert"
    assert any(f["type"] == "run_delivered" for f in seen), [f["type"] for f in seen]


async def test_a_project_acked_twice_releases_its_records_once(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """The app answers the project's insert twice at once, then a third time later with
    another id: its tasks and timeline come once, all with the id its answer gave."""
    root = tmp_path / "docs"
    write(root / "kickoff.md", KICKOFF)
    d = await start(data_dir, token, model_dir)
    try:
        c, agent = await connect_agent(d, root, ["tasks", "timelines", "projects"])
        await run(c, agent)
        project = (await calls_until_quiet(c, ack=False, until=1))[0]
        await c.ack(project, {"id": "p_dup"})
        await c.ack(project, {"id": "p_dup"})
        released = await calls_until_quiet(c, until=3)
        await c.ack(project, {"id": "p_other"})
        later = await calls_until_quiet(c, quiet=2.0)
        await c.close()
    finally:
        await d.stop()
    db = data_dir / "sidecar.sqlite3"
    assert titles(released, "tasks") == TASKS and titles(released, "timelines") == {MILESTONE}
    assert len(released) == 3 and later == [], later
    assert {r["data"]["projectId"] for r in released} == {"p_dup"}
    counts = rows(db, "SELECT table_name, state, count(*) AS n FROM outbox GROUP BY 1, 2")
    assert sorted((r["table_name"], r["state"], r["n"]) for r in counts) == [
        ("projects", "acked", 1), ("tasks", "acked", 2), ("timelines", "acked", 1)]
    assert [json.loads(r["result_id"]) for r in rows(
        db, "SELECT result_id FROM outbox WHERE table_name = 'projects'")] == ["p_dup"]
    assert rows(db, "SELECT count(*) AS n FROM held") == [{"n": 0}]


async def test_a_run_cancelled_twice_while_its_records_wait_still_delivers_them_once(
        data_dir: Path, token: str, model_dir: Path, tmp_path: Path) -> None:
    """The tray's cancel, pressed twice while the run waits for the project's answer: the run
    ends cancelled, and the records already found (held for the project's id) are not lost:
    the project's answer releases them, once, with its id, and a later run adds nothing."""
    root = tmp_path / "docs"
    write(root / "kickoff.md", KICKOFF)
    d = await start(data_dir, token, model_dir)
    try:
        c, agent = await connect_agent(d, root, ["tasks", "timelines", "projects"])
        run_id = await run(c, agent)
        project = (await calls_until_quiet(c, ack=False, until=1))[0]
        assert project["table"] == "projects"
        first = await c.request({"type": "cancel_run", "run_id": run_id})
        second = await c.request({"type": "cancel_run", "run_id": run_id})
        assert first["type"] == second["type"] == "cancel_run_result", (first, second)
        finished = await next_run_frame(c, "run_finished", run_id)
        assert finished["status"] == "cancelled", finished
        await c.ack(project, {"id": "p_after_cancel"})
        # an unanswered call may be sent again meanwhile (same id): it is answered the same
        came = await calls_until_quiet(c, ack=False, quiet=2.0)
        resent = [f for f in came if f["table"] == "projects"]
        assert all(f["id"] == project["id"] for f in resent), resent
        for f in came:
            await c.ack(f, {"id": "p_after_cancel" if f in resent else f"x_{f['id']}"})
        released = [f for f in came if f not in resent]
        assert len(released) == 3, released
        assert titles(released, "tasks") == TASKS, released
        assert titles(released, "timelines") == {MILESTONE}
        assert {r["data"]["projectId"] for r in released} == {"p_after_cancel"}
        again = await run(c, agent)
        await next_run_frame(c, "run_finished", again)
        assert await calls_until_quiet(c, quiet=1.5) == [], "a record came twice"
        await c.close()
    finally:
        await d.stop()
    db = data_dir / "sidecar.sqlite3"
    assert rows(db, "SELECT count(*) AS n FROM held") == [{"n": 0}]
    counts = rows(db, "SELECT table_name, state, count(*) AS n FROM outbox GROUP BY 1, 2")
    assert sorted((r["table_name"], r["state"], r["n"]) for r in counts) == [
        ("projects", "acked", 1), ("tasks", "acked", 2), ("timelines", "acked", 1)]
