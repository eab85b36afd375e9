"""Wire frames as small immutable types (no I/O here).

Every frame is a JSON object with a ``type`` tag. Requests from the client carry a
``request_id`` that the reply echoes; replies are named ``<request type>_result``.
The seed's insert contract is kept byte-for-byte in :class:`ToolCall` and
:class:`ToolResult`; everything else is additive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from sidecar.protocol.accounts import (
    AgentNeedsReauth,
    OAuthCancel,
    OAuthCancelResult,
    OAuthStart,
    OAuthStartResult,
    OAuthStatus,
    SecretSet,
    SecretSetResult,
)
from sidecar.protocol.base import MAX_FRAME_BYTES, Error, Frame, ProtocolError, Reply, Request
from sidecar.protocol.compat import DeviceHello
from sidecar.protocol.examples import (
    AGENT,
    MODEL,
    RUN_DELIVERED,
    RUN_FINISHED,
    RUN_STARTED,
    RUN_VIEW,
)
from sidecar.protocol.projects import ProjectsSync, ProjectsSyncResult

# ── client → sidecar ────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello(Request):
    """Opens a session; a "writer" (the default) takes inserts, an "observer" never does.

    Replaces the seed's ``device_hello`` (still accepted as an alias). Every client that
    said hello gets run, progress and status frames; only writers get ``tool_call``. A call
    a writer leaves unacked for the insert timeout goes to another connected writer (or
    again to it, if it is the only one).
    """

    TYPE: ClassVar[str] = "hello"
    EXAMPLE: ClassVar[dict[str, Any]] = {
        "type": "hello", "request_id": "r1", "protocol": 1, "client": "electron/1.4.0",
        "role": "writer"}
    protocol: int | None = None
    client: str | None = None
    device_id: str | None = None
    #: "writer" (default) takes insert tool_calls; "observer" (a second window, a tray
    #: view) gets run_started/run_progress/run_finished and replies, never a tool_call.
    role: Literal["writer", "observer"] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentList(Request):
    """Lists local and cloud agents."""

    TYPE: ClassVar[str] = "agent_list"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "agent_list", "request_id": "r2"}
    kind: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentUpsert(Request):
    """Creates or replaces an agent; ``agent`` is validated by :mod:`sidecar.domain`."""

    TYPE: ClassVar[str] = "agent_upsert"
    EXAMPLE: ClassVar[dict[str, Any]] = {
        "type": "agent_upsert", "request_id": "r3",
        "agent": {"kind": "local", "name": "Client folder", "directories": ["/home/me/Clients"],
                  "extensions": [".md", ".txt", ".pdf"], "data_types": ["tasks", "notes"],
                  "prompt_template": "Extract my action items.", "schedule_cron": "0 * * * *"}}
    agent: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentDelete(Request):
    """Deletes an agent (its runs stay in the log)."""

    TYPE: ClassVar[str] = "agent_delete"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "agent_delete", "request_id": "r4",
                                         "agent_id": "a_3f2c"}
    agent_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunList(Request):
    """Queries the run log, newest first."""

    TYPE: ClassVar[str] = "run_list"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "run_list", "request_id": "r5",
                                         "agent_id": "a_3f2c", "limit": 20}
    agent_id: str | None = None
    limit: int | None = None
    before: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Status(Request):
    """Asks for the daemon's state: agents, next runs, outbox, model."""

    TYPE: ClassVar[str] = "status"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "status", "request_id": "r6"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult(Frame):
    """Electron's ack of a ``tool_call`` (seed shape): ``result`` on success, else ``error``;
    ``retryable: true`` with ``error`` asks for the same call again later (with backoff)."""

    TYPE: ClassVar[str] = "tool_result"
    DIRECTION: ClassVar[str] = "client"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "tool_result", "id": "c_91", "result": {"id": 7}}
    id: str
    result: Any = None
    error: str | None = None
    #: With ``error``: the app could not store it now (its database was busy or locked); the
    #: call stays in the outbox and is sent again (same id) 1 s later, doubling up to 5 min.
    retryable: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunAgent(Request):
    """Tray "run now": starts a run at once (only new or changed documents are extracted)."""

    TYPE: ClassVar[str] = "run_agent"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "run_agent", "request_id": "r7",
                                         "agent_id": "a_3f2c"}
    agent_id: str
    #: Re-extract every document, not just new or changed ones.
    full: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRun(Request):
    """Tray "cancel": stops a running run; items already queued are still delivered."""

    TYPE: ClassVar[str] = "cancel_run"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "cancel_run", "request_id": "r8",
                                         "run_id": "r_77"}
    run_id: str


# ── sidecar → client ────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True, kw_only=True)
class HelloResult(Reply):
    """Tells the client what this sidecar speaks and can do."""

    TYPE: ClassVar[str] = "hello_result"
    EXAMPLE: ClassVar[dict[str, Any]] = {
        "type": "hello_result", "request_id": "r1", "version": "0.1.0", "protocol": 1,
        "capabilities": ["agents", "runs", "insert", "retryable_insert", "run_delivered"],
        "models": [MODEL], "last_runs": [RUN_VIEW]}
    version: str
    protocol: int
    capabilities: list[str]
    models: list[Any]
    #: Each agent's last run (as ``run_list`` shows it, with its delivery counts), so a
    #: reconnecting app learns what happened while it was away without asking.
    last_runs: list[Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentListResult(Reply):
    TYPE: ClassVar[str] = "agent_list_result"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "agent_list_result", "request_id": "r2",
                                         "agents": [AGENT]}
    agents: list[Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentUpsertResult(Reply):
    TYPE: ClassVar[str] = "agent_upsert_result"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "agent_upsert_result", "request_id": "r3",
                                         "agent": AGENT,
                                         "created": True}
    agent: dict[str, Any]
    created: bool
    #: What the agent's ``data_types`` cannot give as configured (e.g. ``taskComments`` for
    #: an agent that reads no email), one sentence each; absent when there is nothing to say.
    warnings: list[str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentDeleteResult(Reply):
    TYPE: ClassVar[str] = "agent_delete_result"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "agent_delete_result", "request_id": "r4",
                                         "agent_id": "a_3f2c", "deleted": True}
    agent_id: str
    deleted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RunListResult(Reply):
    TYPE: ClassVar[str] = "run_list_result"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "run_list_result", "request_id": "r5",
                                         "runs": [RUN_VIEW]}
    runs: list[Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusResult(Reply):
    """Each agent's schedule, watching and last run; ``scheduled`` says a job exists,
    ``watch_mode`` is ``inotify``/``polling``/``off`` (``watch_reason`` says why it polls);
    a run carries at most 50 ``errors`` (``errors_total`` counts all; the run log keeps them)."""

    TYPE: ClassVar[str] = "status_result"
    EXAMPLE: ClassVar[dict[str, Any]] = {
        "type": "status_result", "request_id": "r6", "version": "0.1.0", "agents": [{
            "id": "a_3f2c", "name": "Client folders", "kind": "local", "enabled": True,
            "state": "ok", "schedule_cron": "0 * * * *", "last_run_at": "2026-12-05T09:00:02Z",
            "next_run_at": "2026-12-05T10:00:00Z", "deferred": None, "schedule_error": None,
            "scheduled": True, "running_run_id": None, "watch_mode": "polling",
            "watch_reason": "the inotify instance limit is used up",
            "last_run": RUN_VIEW}],
        "outbox_pending": 0, "held": 0, "clients": 1}
    version: str
    agents: list[Any]
    outbox_pending: int
    #: Records not in the outbox yet (not counted in ``outbox_pending``): waiting for another
    #: insert's ``result.id`` (a new project's tasks and timelines, a task's comments), or
    #: timelines waiting for a project (see "The app's projects").
    held: int
    clients: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunAgentResult(Reply):
    """The run that was started, or the one already running for that agent."""

    TYPE: ClassVar[str] = "run_agent_result"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "run_agent_result", "request_id": "r7",
                                         "run_id": "r_77", "already_running": False}
    run_id: str
    already_running: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRunResult(Reply):
    TYPE: ClassVar[str] = "cancel_run_result"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "cancel_run_result", "request_id": "r8",
                                         "run_id": "r_77", "cancelled": True}
    run_id: str
    cancelled: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Frame):
    """Pushed to every client that said hello (writers and observers) when a run begins."""

    TYPE: ClassVar[str] = "run_started"
    DIRECTION: ClassVar[str] = "sidecar"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "run_started", "run": RUN_STARTED}
    run: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunProgress(Frame):
    """Pushed while a run goes: documents done of total, items found, current document."""

    TYPE: ClassVar[str] = "run_progress"
    DIRECTION: ClassVar[str] = "sidecar"
    EXAMPLE: ClassVar[dict[str, Any]] = {
        "type": "run_progress", "run_id": "r_77", "agent_id": "a_3f2c", "files_done": 3,
        "files_total": 12, "items_found": 7, "current": "/home/me/Clients/brief.pdf"}
    run_id: str
    agent_id: str
    files_done: int
    files_total: int
    items_found: int
    current: str | None = None
    deferred: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Frame):
    """Pushed when a run ends, with the run record (the seed's statuses; errors capped at 50,
    ``errors_total`` counts all)."""

    TYPE: ClassVar[str] = "run_finished"
    DIRECTION: ClassVar[str] = "sidecar"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "run_finished", "run": RUN_FINISHED}
    run: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunDelivered(Frame):
    """Pushed once per run when its last record was acked or failed for good (nothing of it
    is pending any more); ``run`` carries the final counts."""

    TYPE: ClassVar[str] = "run_delivered"
    DIRECTION: ClassVar[str] = "sidecar"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "run_delivered", "run": RUN_DELIVERED}
    run: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall(Frame):
    """The seed's insert frame; top-level extras (agent/run/source/key) are additive."""

    TYPE: ClassVar[str] = "tool_call"
    DIRECTION: ClassVar[str] = "sidecar"
    EXAMPLE: ClassVar[dict[str, Any]] = {
        "type": "tool_call", "id": "c_91", "action": "insert", "table": "tasks",
        "data": {"title": "Send the revised logo", "status": "todo", "priority": "high",
                 "isAiSuggested": 1, "isApproved": 0},
        "agent_id": "a_3f2c", "run_id": "r_77",
        "idempotency_key": "k2:9dc6d4bd8a916d68:tasks:b358a8c9ef76ae9a",
        "source": {"path": "/home/me/Clients/kickoff.md", "span": [120, 142]},
        "confidence": 0.91}
    id: str
    action: str
    table: str
    data: dict[str, Any]
    agent_id: str | None = None
    run_id: str | None = None
    idempotency_key: str | None = None
    source: dict[str, Any] | None = None
    confidence: float | None = None


FRAME_TYPES: dict[str, type[Frame]] = {
    cls.TYPE: cls
    for cls in (Hello, AgentList, AgentUpsert, AgentDelete, RunList, Status, RunAgent,
                CancelRun, ToolResult, HelloResult, AgentListResult, AgentUpsertResult,
                AgentDeleteResult, RunListResult, StatusResult, RunAgentResult, CancelRunResult,
                RunStarted, RunProgress, RunFinished, RunDelivered, ToolCall, Error, OAuthStart,
                OAuthStartResult, OAuthStatus, OAuthCancel, OAuthCancelResult, SecretSet,
                SecretSetResult, AgentNeedsReauth, DeviceHello, ProjectsSync,
                ProjectsSyncResult)
}
CLIENT_FRAMES = {t: c for t, c in FRAME_TYPES.items() if c.DIRECTION == "client"}

__all__ = [
    "CLIENT_FRAMES",
    "FRAME_TYPES",
    "MAX_FRAME_BYTES",
    "AgentDelete",
    "AgentDeleteResult",
    "AgentList",
    "AgentListResult",
    "AgentNeedsReauth",
    "AgentUpsert",
    "AgentUpsertResult",
    "CancelRun",
    "CancelRunResult",
    "DeviceHello",
    "Error",
    "Frame",
    "Hello",
    "HelloResult",
    "OAuthCancel",
    "OAuthCancelResult",
    "OAuthStart",
    "OAuthStartResult",
    "OAuthStatus",
    "ProjectsSync",
    "ProjectsSyncResult",
    "ProtocolError",
    "Reply",
    "Request",
    "RunAgent",
    "RunAgentResult",
    "RunDelivered",
    "RunFinished",
    "RunList",
    "RunListResult",
    "RunProgress",
    "RunStarted",
    "SecretSet",
    "SecretSetResult",
    "Status",
    "StatusResult",
    "ToolCall",
    "ToolResult",
]
