"""Request handlers: one small function per client frame, wired onto the hub."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from sidecar import PROTOCOL_VERSION, __version__
from sidecar import protocol as p
from sidecar.appkeys import AGENT_LISTENERS, CONFIG, HUB, RUNNER, SCHEDULER, STORE, WATCHERS
from sidecar.domain import validate_agent
from sidecar.errors import SidecarError
from sidecar.hub import Client
from sidecar.linking import agent_warnings
from sidecar.runview import ERROR_LINES_PER_REPLY, ERRORS_IN_FRAME, capped
from sidecar.store.kv import PROJECTS_KEY

log = logging.getLogger(__name__)

CAPABILITIES = ["agents", "runs", "run_agent", "cancel_run", "progress", "status", "insert",
                "oauth", "secrets", "retryable_insert", "run_delivered", "projects"]


def available_models(app: web.Application) -> list[dict[str, Any]]:
    """Manifest models with presence (cheap: size check only, no hashing)."""
    try:
        from sidecar.model_files import list_models
    except ImportError:  # pragma: no cover - model management not installed
        return []
    from sidecar.paths import Paths

    try:
        statuses = list_models(Paths.from_config(app[CONFIG]).model_dir)
    except Exception as exc:  # a broken manifest must not break hello
        log.warning("cannot list models: %s", exc)
        return []
    return [s.to_json() if hasattr(s, "to_json") else dict(s) for s in statuses]


async def run_views(app: web.Application, runs: list[dict[str, Any]], *,
                    sharing: int | None = None) -> list[dict[str, Any]]:
    """Runs as frames carry them: errors capped with their total, skips counted apart.
    ``sharing``: how many runs share the reply's line budget (default: these)."""
    per_run = min(ERRORS_IN_FRAME, ERROR_LINES_PER_REPLY // max(1, sharing or len(runs)))
    counts = await app[STORE].skips.counts(r["id"] for r in runs)
    delivery = await app[STORE].outbox.run_counts(r["id"] for r in runs)
    return [{**capped(r, per_run), **delivery[r["id"]],
             "skipped": counts.get(r["id"], {"permanent": 0, "transient": 0})} for r in runs]


async def last_runs(app: web.Application) -> list[dict[str, Any]] | None:
    """Each agent's last run, for hello_result: a reconnecting app catches up at once (None
    if the store cannot say now: a hello is never refused for it)."""
    try:
        runs = []
        for record in await app[STORE].agents.records():
            runs += await app[STORE].runs.list(agent_id=record["id"], limit=1)
        return await run_views(app, runs)
    except Exception:
        log.exception("hello: the agents' last runs could not be read; sent without them")
        return None


async def agent_status(app: web.Application, record: dict[str, Any], *, sharing: int = 1
                       ) -> dict[str, Any]:
    """One agent's line in ``status``: next run, last run outcome (``sharing``: agents in
    the reply, who share its error-line budget)."""
    runs = await run_views(app, await app[STORE].runs.list(agent_id=record["id"], limit=1),
                           sharing=sharing)
    # set by scheduler_ctx before the first request
    schedule = app[SCHEDULER].status(record["id"], enabled=bool(record.get("enabled")))
    return {
        "id": record["id"],
        "name": record["name"],
        "kind": record["kind"],
        "enabled": record["enabled"],
        "state": record["state"],
        "schedule_cron": record["schedule_cron"],
        "last_run_at": record.get("last_run_at"),
        "next_run_at": schedule["next_run_at"],
        "deferred": schedule["deferred"],
        "schedule_error": schedule["schedule_error"],
        "last_run": runs[0] if runs else None,
        "running_run_id": app[RUNNER].running_run(record["id"]),
        "scheduled": schedule["scheduled"],
        **(app[WATCHERS].state(record["id"]) if WATCHERS in app
           else {"watch_mode": "off", "watch_reason": None}),
    }


async def agent_changed(app: web.Application, agent_id: str) -> None:
    """Tell every listener (scheduler, watchers); one that fails never stops the others."""
    for listener in app[AGENT_LISTENERS]:
        try:
            await listener(agent_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("agent %s: %s failed after the change; the others still ran",
                          agent_id, getattr(listener, "__qualname__", listener))


def register_handlers(app: web.Application) -> None:
    hub = app[HUB]

    @hub.route(p.Hello)
    async def hello(client: Client, frame: p.Hello | p.DeviceHello) -> p.Frame:
        return p.HelloResult(request_id=frame.request_id or p.DeviceHello.DEFAULT_REQUEST_ID,
                             version=__version__, protocol=PROTOCOL_VERSION,
                             capabilities=CAPABILITIES, models=available_models(app),
                             last_runs=await last_runs(app))

    hub.route(p.DeviceHello)(hello)  # the old server's frame: the same session

    @hub.route(p.AgentList)
    async def agent_list(client: Client, frame: p.AgentList) -> p.Frame:
        records = await app[STORE].agents.records(kind=frame.kind)
        return p.AgentListResult(request_id=frame.request_id, agents=records)

    @hub.route(p.AgentUpsert)
    async def agent_upsert(client: Client, frame: p.AgentUpsert) -> p.Frame:
        store = app[STORE]
        existing = None
        agent_id = frame.agent.get("id")
        if isinstance(agent_id, str):
            existing = await store.agents.get_agent(agent_id)
        agent = validate_agent(frame.agent, existing=existing,
                               allowed_roots=app[CONFIG].allowed_roots)
        created = await store.agents.upsert(agent)
        record = await store.agents.record(agent.id)
        assert record is not None
        log.info("agent %s %s (%s)", agent.id, "created" if created else "updated", agent.kind)
        await agent_changed(app, agent.id)
        return p.AgentUpsertResult(request_id=frame.request_id, agent=record, created=created,
                                   warnings=agent_warnings(agent) or None)

    @hub.route(p.AgentDelete)
    async def agent_delete(client: Client, frame: p.AgentDelete) -> p.Frame:
        deleted = await app[STORE].agents.delete(frame.agent_id)
        if not deleted:
            raise SidecarError(f"no agent with id {frame.agent_id!r}", code="not_found")
        await agent_changed(app, frame.agent_id)
        return p.AgentDeleteResult(request_id=frame.request_id, agent_id=frame.agent_id,
                                   deleted=True)

    @hub.route(p.RunList)
    async def run_list(client: Client, frame: p.RunList) -> p.Frame:
        limit = frame.limit if frame.limit is not None else 50
        if not 1 <= limit <= 500:
            raise SidecarError("limit must be between 1 and 500", code="invalid_field")
        runs = await run_views(app, await app[STORE].runs.list(
            agent_id=frame.agent_id, limit=limit, before=frame.before))
        return p.RunListResult(request_id=frame.request_id, runs=runs)

    @hub.route(p.RunAgent)
    async def run_agent(client: Client, frame: p.RunAgent) -> p.Frame:
        run_id, already = await app[RUNNER].start(frame.agent_id, "manual",
                                                  full=bool(frame.full))
        return p.RunAgentResult(request_id=frame.request_id, run_id=run_id,
                                already_running=already)

    @hub.route(p.CancelRun)
    async def cancel_run(client: Client, frame: p.CancelRun) -> p.Frame:
        cancelled = await app[RUNNER].cancel(frame.run_id)
        if not cancelled and await app[STORE].runs.get(frame.run_id) is None:
            raise SidecarError(f"no run with id {frame.run_id!r}", code="not_found")
        return p.CancelRunResult(request_id=frame.request_id, run_id=frame.run_id,
                                 cancelled=cancelled)

    @hub.route(p.ProjectsSync)
    async def projects_sync(client: Client, frame: p.ProjectsSync) -> p.Frame:
        from sidecar.projects import parse_projects

        projects = parse_projects(frame.projects)
        await app[STORE].kv.set(PROJECTS_KEY, [pr.to_json() for pr in projects])
        log.info("projects synced: %d", len(projects))
        return p.ProjectsSyncResult(request_id=frame.request_id, count=len(projects))

    @hub.route(p.Status)
    async def status(client: Client, frame: p.Status) -> p.Frame:
        records = await app[STORE].agents.records()
        agents = [await agent_status(app, r, sharing=len(records)) for r in records]
        pending = await app[STORE].outbox.count("pending")
        held = await app[STORE].held.count()
        return p.StatusResult(request_id=frame.request_id, version=__version__, agents=agents,
                              outbox_pending=pending, held=held, clients=len(hub.clients))



def register_account_handlers(app: web.Application) -> None:
    """Connect accounts and store secrets; both answer without ever echoing a secret."""
    from sidecar.appkeys import ACCOUNTS

    hub = app[HUB]

    @hub.route(p.OAuthStart)
    async def oauth_start(client: Client, frame: p.OAuthStart) -> p.Frame:
        flow_id, url, user_code, message = await app[ACCOUNTS].start(
            frame.provider, frame.client, frame.account_hint, frame.flow)
        return p.OAuthStartResult(request_id=frame.request_id, flow_id=flow_id, url=url,
                                  user_code=user_code, message=message)

    @hub.route(p.OAuthCancel)
    async def oauth_cancel(client: Client, frame: p.OAuthCancel) -> p.Frame:
        cancelled = await app[ACCOUNTS].cancel(frame.flow_id)
        return p.OAuthCancelResult(request_id=frame.request_id, flow_id=frame.flow_id,
                                   cancelled=cancelled)

    @hub.route(p.SecretSet)
    async def secret_set(client: Client, frame: p.SecretSet) -> p.Frame:
        from sidecar.extractors.remote import KEY_KIND
        from sidecar.secrets import delete_secret, set_secret

        kinds = {"remote_api_key": KEY_KIND}
        if frame.kind not in kinds:
            raise SidecarError(f"unknown secret kind {frame.kind!r}; known: "
                               f"{', '.join(kinds)}", code="invalid_field")
        if frame.value:
            set_secret(kinds[frame.kind], frame.account, frame.value)
        else:
            delete_secret(kinds[frame.kind], frame.account)
        return p.SecretSetResult(request_id=frame.request_id, kind=frame.kind,
                                 stored=bool(frame.value))
