"""What a document's records link to: one of the app's projects (``projects_sync``), a new
project the document introduces, or a task the sidecar suggested from the same email thread.

Per document, :func:`plan` (before extraction) decides what the engine is asked for and what
the sidecar adds itself: a ``projects`` suggestion when the document introduces a project
the app does not know (:mod:`sidecar.project_intro`; "projects" in the agent's data types,
no ``project_id`` of its own), a ``taskComments`` suggestion when it replies in a thread
whose earlier message gave tasks (:mod:`sidecar.threads`; "taskComments" in the data
types). :func:`enqueue` queues records in the runner's transaction and holds those that
wait for another insert's id (:mod:`sidecar.store.held`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sidecar.domain import Agent
from sidecar.extractors.postprocess import held_message
from sidecar.project_intro import Introduction, introduction
from sidecar.projects import Project, match_project, named
from sidecar.redaction import redact
from sidecar.scan import resolve_roots
from sidecar.sources.base import SourceDocument
from sidecar.store import Store
from sidecar.store.held import (
    NO_PROJECT,
    PENDING_ID,
    Child,
    keep_places,
    scan_key,
)
from sidecar.store.outbox import NewEntry, call_id_for, stable_key
from sidecar.store.threads import ThreadStore
from sidecar.threads import author, own_keys, pick_task, reply_keys, reply_text

#: Tables the sidecar makes itself: the engine is never asked for them.
OWN_TABLES = ("projects", "taskComments")
#: How sure a rule-made suggestion is (its evidence is a header or a thread, not a guess).
RULE_CONFIDENCE = 0.9
#: The engine's ``project_id`` when the agent has none: the app's projects decide each
#: record's (see :func:`enqueue`), so timelines come out of extraction instead of being
#: dropped there for want of a project.
MATCH_ID = "\u0000match"
#: How much of a document's body is kept (once) with its held timelines, to match projects
#: later.
BODY_KEPT = 8_000


@functools.lru_cache(maxsize=64)
def _roots(directories: tuple[str, ...]) -> tuple[Path, ...]:
    """An agent's folders, resolved, the most specific first (cached: resolving stats)."""
    found = resolve_roots(directories) or [Path(d) for d in directories]
    return tuple(sorted(found, key=lambda r: len(r.parts), reverse=True))


def source_identity(agent: Agent, doc: SourceDocument) -> str:
    """Where a record comes from, free of the agent's id and the data dir: a file by its
    folder's name and its path inside it, a message by provider, account and message id."""
    if agent.kind == "local":
        path = Path(doc.item.key)
        for root in _roots(tuple(agent.directories)):
            if path.is_relative_to(root):
                return f"local:{root.name}/{path.relative_to(root).as_posix()}"
        return f"local:{path.as_posix()}"
    return f"{scope_of(agent)}:{doc.item.key}"


def item_key(agent: Agent, doc: SourceDocument, item: Any) -> str:
    """One record, one key: the same suggestion from the same document (re-extracted after an
    edit or a prompt change, re-run after a crash, or found again by an agent re-created over
    the same folder, or after a data-dir reset) is never queued twice; a new one is."""
    return stable_key(source_identity(agent, doc), item.table, item.data)


def scope_of(agent: Agent) -> str:
    """Where a subject names one thread: the agent's account, or its folders."""
    if agent.kind == "local":
        return "local:" + ",".join(sorted(r.name for r in _roots(tuple(agent.directories))))
    return f"{agent.provider or agent.kind}:{(agent.account or '').casefold()}"


#: The app's projects (projects_sync) as the running run read them at its start.
PROJECTS: contextvars.ContextVar[tuple[Project, ...]] = contextvars.ContextVar(
    "projects", default=())
DIRS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("dirs", default=())
#: The last document's own match (its title, folders and body are read once, not per record).
_DOC_MATCH: contextvars.ContextVar[tuple[object, dict[str, Any] | None] | None] = \
    contextvars.ContextVar("doc_match", default=None)


def doc_places(doc: SourceDocument) -> list[tuple[str, str]]:
    """Where a document may name a project, most trusted first: its title (subject, file
    name), the folder names from the agent's folder down (not /home/me above it), its body."""
    path = Path(doc.meta.get("path") or doc.item.key)
    root = next((r for r in _roots(DIRS.get()) if path.is_relative_to(r)), None)
    folders = [root.name, *path.relative_to(root).parts[:-1]] if root else []
    titles = (doc.meta.get("title"), doc.meta.get("subject"), _label(doc))
    return [("title", " | ".join(str(t) for t in titles if t)),
            ("folder", " / ".join(folders)), ("body", doc.text)]


def _doc_project(doc: SourceDocument, projects: tuple[Project, ...]) -> dict[str, Any] | None:
    cached = _DOC_MATCH.get()
    if cached is not None and cached[0] is doc:
        return cached[1]
    found = match_project(projects, doc_places(doc))
    _DOC_MATCH.set((doc, found))
    return found


def _label(doc: SourceDocument) -> str:
    label = doc.item.label
    if label in (doc.item.key, doc.meta.get("path")):  # a file: its name is its title
        label = Path(doc.meta.get("path") or doc.item.key).stem
    return label


def _project_for(doc: SourceDocument, item: Any) -> dict[str, Any] | None:
    """The one app project the record's title, else its document's title or subject, folder
    names or body name (see sidecar.projects); None when the agent has its own."""
    projects = PROJECTS.get()
    own_id = item.data.get("projectId")
    if not projects or (own_id and own_id != MATCH_ID):
        return None
    return _record_project(projects, item.data, lambda: _doc_project(doc, projects))


def _record_project(projects: tuple[Project, ...], data: dict[str, Any],
                    by_doc: Any) -> dict[str, Any] | None:
    """The project a record's own title names, else ``by_doc()`` (its document's)."""
    title = data.get("title") or data.get("name")
    own = match_project(projects, [("record", str(title))]) if title else None
    if own is not None:
        return own
    if title and len(named(projects, str(title))) > 1:
        return None  # the record's own title names two projects: the document cannot decide
    return by_doc()


def base_source(doc: SourceDocument) -> dict[str, Any]:
    return {"path": doc.meta.get("path"), "key": doc.item.key, "label": doc.item.label}


def item_meta(doc: SourceDocument, item: Any) -> dict[str, Any]:
    source = {**base_source(doc), **item.source.to_json()}
    project = _project_for(doc, item)
    if project is not None:
        source["project"] = project
    # what its dates were resolved against (the engine's), named by where the source found it
    reference = dict(getattr(item, "reference", None) or {})
    if reference.get("origin") == "document":
        reference["origin"] = doc.meta.get("date_origin") or {
            "eml": "email", "email": "email", "chat": "message"}.get(doc.kind, "document")
    if reference:
        source["reference"] = reference
    return {"source": source, "confidence": round(float(item.confidence), 4)}


@dataclass(frozen=True, slots=True)
class Plan:
    """What one document's extraction asks and adds (see :func:`plan`)."""

    identity: str
    types: tuple[str, ...]
    project_id: str | None
    intro: Introduction | None = None
    project: NewEntry | None = None
    comment: NewEntry | None = None
    #: Where the document may name a project (:func:`doc_places`, the body cut to
    #: :data:`BODY_KEPT`): kept with its timelines held for want of one.
    places: tuple[tuple[str, str], ...] = ()

    def extra(self) -> list[NewEntry]:
        """The sidecar's own suggestions, queued before the document's records."""
        return [i for i in (self.project, self.comment) if i is not None]


def new_project(agent: Agent, doc: SourceDocument) -> Introduction | None:
    """The project ``doc`` introduces that is none of the app's (by name or alias)."""
    if "projects" not in agent.data_types or agent.project_id:
        return None
    intro = introduction((doc.meta.get("subject"), doc.meta.get("title"), _label(doc)),
                         doc.text)
    if intro is None:
        return None
    known = named(PROJECTS.get(), intro.name)
    if any(how in ("name", "alias") for how, _ in known.values()):
        return None  # one of the app's projects: linked as such
    return intro


def is_stale(doc: SourceDocument, stale: datetime | None) -> bool:
    """An old document read on an agent's first run (``initial_lookback_days``): indexed,
    its work not suggested; a project it introduced then is not news either."""
    if stale is None or doc.date is None:
        return False
    when = doc.date if doc.date.tzinfo is not None else doc.date.astimezone()
    return when < stale


async def plan(store: Store, agent: Agent, doc: SourceDocument, run_id: str,
               stale: datetime | None = None) -> Plan:
    identity = source_identity(agent, doc)
    types = tuple(t for t in agent.data_types if t not in OWN_TABLES)
    # without the agent's own project, each record's is decided from the app's (enqueue):
    # the engine does not drop timelines for want of one
    matched = agent.project_id or MATCH_ID
    # read again: the timelines it held for want of a project are what it gives now
    await store.held.forget(NO_PROJECT + identity)
    places = tuple((w, redact(t[:BODY_KEPT])) for w, t in doc_places(doc))  # kept in SQLite
    if is_stale(doc, stale):
        return Plan(identity, types, matched, places=places)
    intro = new_project(agent, doc)
    project = None
    if intro is not None:
        project = NewEntry(
            idempotency_key=stable_key("new-project", "projects", {"name": intro.name}),
            agent_id=agent.id, run_id=run_id, table="projects", data={"name": intro.name},
            meta={"source": {**base_source(doc), "introduces": intro.to_json()},
                  "confidence": RULE_CONFIDENCE})
    return Plan(identity, types, (PENDING_ID if intro and not agent.project_id else matched),
                intro, project, await _comment(store, agent, doc, run_id, identity), places)


def message_meta(doc: SourceDocument) -> dict[str, Any]:
    """A message's headers as :mod:`sidecar.threads` reads them: its source's meta, with
    the sender the document carries (name and address: Outlook's meta has the address only)
    and its title when the meta lacks one."""
    meta = dict(doc.meta)
    sender, title = getattr(doc, "sender", None), getattr(doc, "title", None)
    if sender:
        meta["from"] = sender
    if title and not (meta.get("subject") or meta.get("title")):
        meta["title"] = title
    return meta


async def _comment(store: Store, agent: Agent, doc: SourceDocument, run_id: str,
                   identity: str) -> NewEntry | None:
    """A comment on the task of the thread this reply answers, if the sidecar queued one."""
    if "taskComments" not in agent.data_types:
        return None
    meta = message_meta(doc)
    keys = reply_keys(meta, scope_of(agent))
    if not keys:
        return None
    tasks, how = await ThreadStore(store.db).tasks_for(keys, identity)
    said = reply_text(doc.text)
    task = pick_task(tasks, said) if said else None
    if task is None:
        return None
    call_id, title = task
    data: dict[str, Any] = {"taskId": PENDING_ID, "content": said}
    if (who := author(meta)) is not None:
        data["author"] = who[:500]
    return NewEntry(
        idempotency_key=stable_key(identity, "taskComments", {"title": call_id}),
        agent_id=agent.id, run_id=run_id, table="taskComments", data=data,
        meta={"source": {**base_source(doc), "task": {"call_id": call_id, "title": title,
                                                      "by": how}},
              "confidence": RULE_CONFIDENCE})


async def enqueue(store: Store, conn: Any, plan: Plan, items: list[NewEntry]) -> list[str]:
    """Queue ``items`` in ``conn``'s transaction; hold those waiting for the new project's
    or the task's id. A record the engine gave :data:`MATCH_ID` goes to the app's project
    its ``source.project`` names (the delivery fills ``projectId``), or without one; a
    timeline then needs one, so without it it is held (said in the run log) until a run
    finds its project (:func:`release_unlinked`). Returns run-log lines."""
    direct, children, lines = [], [], []
    unlinked: dict[str, list[str]] = {}  # document label → timelines held: no project
    for it in items:
        if it.data.get("projectId") not in (None, plan.project_id):
            it = _not_the_engines(it, plan)
        if it.data.get("projectId") == MATCH_ID:
            it = replace(it, data={k: v for k, v in it.data.items() if k != "projectId"})
            source = it.meta.get("source") or {}
            if it.table == "timelines" and not isinstance(source.get("project"), dict):
                unlinked.setdefault(str(source.get("label") or "?"), []).append(
                    str(it.data.get("title", "")))
                # no run waits for it: run_id None
                children.append(Child(replace(it, run_id=None), NO_PROJECT + plan.identity,
                                      "projectId"))
                continue
        if it.table == "taskComments" and it.data.get("taskId") == PENDING_ID:
            task = it.meta["source"]["task"]
            children.append(Child(it, task["call_id"], "taskId"))
        elif it.data.get("projectId") == PENDING_ID and plan.project is not None:
            assert plan.intro is not None
            source = {**it.meta.get("source", {}), "project": {
                "id": None, "by": "new project", "term": plan.intro.name, "in": plan.intro.by}}
            children.append(Child(replace(it, meta={**it.meta, "source": source}),
                                  call_id_for(plan.project.idempotency_key), "projectId"))
        else:
            direct.append(it)
    lines += [f"{label}: {held_message(held)}" for label, held in unlinked.items()]
    if unlinked:
        await keep_places(conn, NO_PROJECT + plan.identity, items[0].agent_id, plan.places)
    await store.outbox.enqueue(direct, conn)
    return lines + await store.held.hold(children, conn, store.outbox.enqueue)


def _not_the_engines(item: NewEntry, plan: Plan) -> NewEntry:
    """A ``projectId`` the engine gave (a model's answer, which a document can steer) is
    never trusted: the record's goes where the agent's project or the app's projects say."""
    source = {k: v for k, v in (item.meta.get("source") or {}).items() if k != "project"}
    data = {**item.data, "projectId": plan.project_id}
    projects = PROJECTS.get()
    if plan.project_id == MATCH_ID and projects:
        found = _record_project(projects, data, lambda: match_project(projects, plan.places))
        if found is not None:
            source["project"] = found
    return replace(item, data=data, meta={**item.meta, "source": source})


async def release_unlinked(store: Store, agent: Agent, run_id: str) -> int:
    """At a run's start: the agent's timelines held for want of a project whose project is
    known now (the agent's ``project_id``, else the one app project their title or their
    document names, as when it was read) are queued with it under this run, each once (its
    key leaves ``held`` in the transaction that queues it). Looked at only when the app's
    projects or the agent's ``project_id`` changed since the last look (they were held under
    those); matched off the event loop. Returns how many."""
    if "timelines" not in agent.data_types:
        return 0  # no longer asked for: its documents, read again, forget them
    projects = PROJECTS.get()
    seen_key = scan_key(agent.id)
    basis = json.dumps([agent.project_id, [p.to_json() for p in projects]], sort_keys=True)
    now = hashlib.sha256(basis.encode()).hexdigest()[:16]
    if await store.kv.get(seen_key) == now:
        return 0
    held = store.held
    rows = await held.unlinked(agent.id)
    out = await asyncio.to_thread(_linkable, rows, agent, projects, run_id) if rows else []
    if out:
        async with store.db.transaction() as conn:
            await held.linked(conn, out, agent.id, store.outbox.enqueue)
    await store.kv.set(seen_key, now)  # a crash before it: the next run looks again
    return len(out)


def _linkable(rows: list[dict[str, Any]], agent: Agent, projects: tuple[Project, ...],
              run_id: str) -> list[NewEntry]:
    """The held timelines (``rows``) that now have a project, linked to it."""
    out: list[NewEntry] = []
    by_doc: dict[str, dict[str, Any] | None] = {}  # parent → its document's match
    kept = {r["parent_call_id"]: json.loads(r["meta"]).get("match") or []
            for r in rows if not r["table_name"]}
    for row in rows:
        if not row["table_name"]:
            continue  # a document's places (keep_places)
        data, meta = json.loads(row["data"]), json.loads(row["meta"])
        source = dict(meta.get("source") or {})
        if agent.project_id:
            data["projectId"] = agent.project_id
        else:
            parent = row["parent_call_id"]
            if parent not in by_doc:  # each document's places are matched once
                by_doc[parent] = match_project(projects, [
                    (str(w), str(t)) for w, t in kept.get(parent, [])])
            found = _record_project(projects, data, functools.partial(by_doc.get, parent))
            if found is None:
                continue
            source["project"] = found
        out.append(NewEntry(row["idempotency_key"], agent.id, run_id, row["table_name"], data,
                           {**meta, "source": source}))
    return out


async def remember(conn: Any, agent: Agent, doc: SourceDocument, plan: Plan,
                   items: list[NewEntry]) -> None:
    """An email's tasks, under its thread keys: a later reply comments on them."""
    tasks = [(call_id_for(i.idempotency_key), str(i.data.get("title", "")))
             for i in items if i.table == "tasks"]
    keys = own_keys(message_meta(doc), scope_of(agent)) if tasks else []
    if keys:
        await ThreadStore.remember(conn, keys, tasks, plan.identity)


def agent_warnings(agent: Agent) -> list[str]:
    """What this agent's data types cannot give as configured: said when it is saved."""
    out = []
    types = set(agent.data_types)
    if "taskComments" in types:
        if agent.kind == "local" and ".eml" not in agent.extensions:
            out.append("taskComments: comments come from replies in email threads (.eml "
                       "files); this agent reads no .eml files, so it will suggest none")
        elif agent.kind == "cloud" and agent.provider not in ("gmail", "outlook"):
            out.append(f"taskComments: comments come from replies in email threads; "
                       f"{agent.provider} messages give none")
        else:
            out.append("taskComments: only replies to an email from which this sidecar "
                       "suggested a task get a comment (on that task)")
    if "projects" in types and agent.project_id:
        out.append(f"projects: every record of this agent goes to project_id "
                   f"{agent.project_id!r}, so it suggests no new projects")
    if "timelines" in types and not agent.project_id:
        out.append("timelines need a project: without project_id only those whose document "
                   "names one of the app's projects (projects_sync) are sent, the others are "
                   "held (the run log lists them) until a run finds their project"
                   + ("" if "projects" in types else
                      "; add 'projects' to data_types to have a new project's timelines "
                      "sent once the app stores the project"))
    return out
