"""Frames for the app's own projects: the sidecar links records to them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from sidecar.protocol.base import Reply, Request

#: The "The app's projects" section of docs/protocol.md (scripts/gen_docs.py).
PROJECTS_DOC = """\
`projects_sync` sends the app's projects (`id`, `name`, optional `client` and `aliases`);
each send replaces the list, which is kept across restarts and read at the start of each
run. A record gets `projectId` when its document clearly names exactly one of them: a
name, alias or client (whole words, at least 3 characters, any case) is looked for in the
record's title, then the document's title, subject or file name, then the folder names
from the agent's folder down, then the body. The first place that names any project
decides; if it names two, the record gets no `projectId`. `source.project` says why
(`{"id": "p_12", "by": "client", "term": "Harbor Bakery", "in": "folder"}`).

**`agent.project_id`** (in `agent_upsert`, optional, at most 200 characters): the app's
project every record of that agent belongs to. It fills `projectId` of its tasks, notes
and timelines, wins over any match, and such an agent suggests no new project. A
`projectId` in a model's answer is never used (a document could steer it). Timelines
need a project: the agent's `project_id`, else the one app project named as above (its
`source.project` says why), else a new project (see below). Without one they are not
sent, and the run log lists them (`N timelines held: no project …`). They are kept (with
their document's title, folder names and first 8,000 characters) and counted in
`status.held`: the first run of their agent after a `projects_sync` names their project,
or after the agent got a `project_id`, sends them with it (in that run, each once by its
key). A document read again replaces what it held (a milestone removed from it never
goes); a full run (`run_agent` with `"full": true`) sends only what the app lacks.

**New projects** (`"projects"` in the agent's `data_types`, no `project_id`): a document
that introduces a project the app does not know gives a `projects` suggestion (`data`:
`name`, with `isAiSuggested: 1, isApproved: 0`; `source.introduces` says why). The
evidence is its title, subject or first heading (`Kickoff — Nova Dental rebrand`, `Nova
Dental kickoff call`, `Project brief: Summer menu`, `Summer menu — creative brief`, `New
client: Nova Dental`), or a `Project:` / `Client:` header field in its first lines
together with a kickoff, brief, onboarding or "new client" word in its title or opening
one of those lines. A `Project:` field alone, a reply (`Re:`), a name made only of
generic words ("Weekly kickoff"), the name or alias of one of the app's projects, or a
document older than `--initial-lookback-days` read on an agent's first run suggests
nothing. Its key is `k2:new-project:projects:<name>`: two documents introducing
one name make one suggestion. The document's tasks, notes and timelines are **held** until
the app's `tool_result` for the suggestion arrives, then sent with `projectId` =
`result.id` (`source.project.id` too). A `tool_result` with a plain `error`, or one
without `result.id`, sends the tasks and notes without `projectId` (`source.unlinked`
says why) and keeps the timelines back; the run log says so and the run is `partial`. A
`retryable` error keeps them held while the suggestion is retried.

**Comments** (`"taskComments"` in `data_types`): an email that replies to one from which
the sidecar suggested a task (its `In-Reply-To` or `References` name that message, it is
in the same Gmail thread, or its subject is `Re:` the same subject in the same folder or
account) gives a `taskComments` suggestion on that task: `taskId` is the `result.id` the
app gave the task (held until then), `content` the reply's own text (quoted text cut),
`author` its sender. If the thread gave several tasks, the one sharing the most words
with the reply is chosen (a tie: no comment). A task whose insert failed gets no comment
(the run log says so).

Held records are kept in SQLite: a restart, a kill or a disconnect loses none, and they
are queued in the same transaction that records the suggestion's `tool_result`, so none
is sent twice. `run_finished` and `run_delivered` count them as `pending` until they are
sent and acked (timelines waiting for a project are not: no run waits for them; the run
that sends them counts them). `agent_upsert_result.warnings` says what an agent's
`data_types` cannot give as configured (e.g. `taskComments` for an agent that reads no email).
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectsSync(Request):
    """The app's projects (each send replaces the list; kept across restarts): a record gets
    ``projectId`` when its document clearly names exactly one of them.

    Each project: ``id``, ``name``, optional ``client`` and ``aliases``. The match (name,
    alias or client, whole words, at least 3 characters) is looked for in the record's and
    document's title or subject, then the folder names, then the body; the first place that
    names any project decides, and two projects there mean no link. ``source.project`` in
    the tool_call says why. An agent's own ``project_id`` wins over any match.
    """

    TYPE: ClassVar[str] = "projects_sync"
    EXAMPLE: ClassVar[dict[str, Any]] = {
        "type": "projects_sync", "request_id": "r30", "projects": [
            {"id": "p_12", "name": "Harbor Bakery website", "client": "Harbor Bakery",
             "aliases": ["HB site"]},
            {"id": "p_13", "name": "Spring campaign", "client": None, "aliases": []}]}
    projects: list[dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectsSyncResult(Reply):
    TYPE: ClassVar[str] = "projects_sync_result"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "projects_sync_result", "request_id": "r30",
                                         "count": 2}
    count: int
