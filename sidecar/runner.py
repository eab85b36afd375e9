"""Agent runs: one at a time per agent, source → reader → extractor → outbox, with progress.

Replaces the seed's ``run_local_agent``: the sidecar reads files itself, extracts only what
changed, writes every item to the outbox (in the same transaction that marks the document
done) before anything is sent, and never needs Electron to be connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sidecar import clock, failpoints, linking
from sidecar import protocol as p
from sidecar.delivery import Delivery
from sidecar.diskfull import DISK_FULL, disk_full_message, is_disk_full
from sidecar.domain import Agent
from sidecar.errors import ModelError, NeedsReauth, PermanentError, SidecarError
from sidecar.extractors.base import ExtractionRequest, ExtractionResult, Extractor
from sidecar.extractors.postprocess import stale_before
from sidecar.hub import Hub
from sidecar.linking import DIRS, PROJECTS, item_key, item_meta
from sidecar.projects import Project
from sidecar.runview import capped
from sidecar.sources.base import Skip, Source, SourceDocument
from sidecar.store import Store
from sidecar.store.outbox import NewEntry

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.25
#: How long a finishing run waits for a connected client to ack its items.
DRAIN_TIMEOUT = 30.0


def extraction_key(agent: Agent, fingerprint: str) -> str:
    """Everything that changes what extraction returns: change any, and files are redone."""
    basis = json.dumps({
        "prompt": agent.prompt_template, "types": sorted(agent.data_types),
        "engine": agent.engine, "remote": dict(agent.remote),
        "min_confidence": agent.min_confidence, "extractor": fingerprint,
    }, sort_keys=True)
    return hashlib.sha256(basis.encode()).hexdigest()[:16]


@dataclass
class ActiveRun:
    run_id: str
    agent_id: str
    task: asyncio.Task[dict[str, Any]] | None = None
    cancelled: bool = False
    counters: dict[str, Any] = field(default_factory=dict)
    agent: Agent | None = None
    #: _finish has begun: the run will be closed and its run_finished sent
    closing: bool = False


SourceFactory = Callable[[Agent, str, "set[str] | None"], Source]
ExtractorFactory = Callable[[Agent], Awaitable[Extractor]]


class Runner:
    """Starts, tracks and cancels runs; at most one per agent."""

    def __init__(self, store: Store, hub: Hub, delivery: Delivery, *,
                 sources: SourceFactory, extractors: ExtractorFactory,
                 drain_timeout: float = DRAIN_TIMEOUT,
                 initial_lookback_days: int = 30) -> None:
        self.store = store
        self.hub = hub
        self.delivery = delivery
        self.sources = sources
        self.extractors = extractors
        self.drain_timeout = drain_timeout
        self.initial_lookback_days = initial_lookback_days
        self.active: dict[str, ActiveRun] = {}  # agent_id → run

    def running_run(self, agent_id: str) -> str | None:
        run = self.active.get(agent_id)
        return run.run_id if run else None

    async def start(self, agent_id: str, trigger: str, *, only: set[str] | None = None,
                    full: bool = False) -> tuple[str, bool]:
        """Start a run; returns (run_id, already_running)."""
        existing = self.active.get(agent_id)
        if existing is not None:
            return existing.run_id, True
        agent = await self.store.agents.get_agent(agent_id)
        if agent is None:
            raise SidecarError(f"no agent with id {agent_id!r}", code="not_found")
        run = await self.store.runs.start(agent.id, agent.kind, trigger)
        active = ActiveRun(run_id=run["id"], agent_id=agent.id, agent=agent)
        self.active[agent.id] = active
        active.task = asyncio.create_task(self._run(agent, run, active, only, full),
                                          name=f"run-{run['id']}")
        return run["id"], False

    async def wait(self, run_id: str) -> dict[str, Any] | None:
        for a in list(self.active.values()):
            if a.run_id == run_id and a.task is not None:
                return await asyncio.shield(a.task)
        return await self.store.runs.get(run_id)

    async def cancel(self, run_id: str) -> bool:
        for a in self.active.values():
            if a.run_id == run_id and a.task is not None:
                a.cancelled = True
                a.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.shield(a.task)
                if not a.closing and a.agent is not None:
                    # cancelled before its first step: the task's body (and its finally)
                    # never ran, so close the run here or it stays "running" for good
                    await asyncio.shield(self._finish(a.agent, a.run_id, a, []))
                return True
        return False

    async def stop(self) -> None:
        for a in list(self.active.values()):
            await self.cancel(a.run_id)

    async def _run(self, agent: Agent, run: dict[str, Any], active: ActiveRun,
                   only: set[str] | None, full: bool) -> dict[str, Any]:
        errors: list[str] = []
        counters = active.counters
        counters.update(files_done=0, files_total=0, items_found=0, documents=0)
        try:  # every await inside: a cancel anywhere still reaches _finish
            await self.hub.broadcast(p.RunStarted(run=run))
            PROJECTS.set(await self._projects())  # this run's task only
            DIRS.set(tuple(agent.directories))
            if await linking.release_unlinked(self.store, agent, run["id"]):
                self.delivery.notify()  # timelines held for want of a project that has come
            await self._execute(agent, run["id"], active, errors, only, full)
        except asyncio.CancelledError:
            active.cancelled = True
            errors.append("cancelled")
        except NeedsReauth as exc:
            errors.append(exc.message)
            await self._needs_reauth(agent, exc)
        except Exception as exc:
            if is_disk_full(exc):  # heals once space is freed: no traceback, one clear reason
                log.warning("run %s of agent %s stopped: %s", run["id"], agent.id, DISK_FULL)
                errors.append(disk_full_message("the sidecar's data"))
            elif isinstance(exc, SidecarError):
                errors.append(exc.message)
            else:
                log.exception("run %s of agent %s failed", run["id"], agent.id)
                errors.append(f"internal error: {exc}")
        finally:
            record = await asyncio.shield(self._finish(agent, run["id"], active, errors))
        return record

    async def _projects(self) -> tuple[Project, ...]:
        """The app's last projects_sync (an unreadable list links nothing, never stops a run)."""
        from sidecar.projects import parse_projects
        from sidecar.store.kv import PROJECTS_KEY

        try:
            return tuple(parse_projects(await self.store.kv.get(PROJECTS_KEY) or []))
        except Exception:
            log.exception("the app's projects could not be read; records are not linked")
            return ()

    async def _finish(self, agent: Agent, run_id: str, active: ActiveRun,
                      errors: list[str]) -> dict[str, Any]:
        """Close the run and tell every client; on a full disk the frame still goes out and
        the row is written once there is room."""
        active.closing = True
        try:
            full = any(e.startswith(DISK_FULL) for e in errors)
            if (not active.cancelled and not full and not self.delivery.settle_blocked
                    and self.hub.writers()):
                await self.delivery.drained(run_id, timeout=self.drain_timeout)
            if active.cancelled:
                errors = [e for e in errors if e != "cancelled"]
            runs, documents = self.store.runs, active.counters.get("documents", 0)
            try:
                record = await runs.complete(run_id, documents=documents, errors=errors,
                                             cancelled=active.cancelled)
                await self.store.agents.set_last_run(agent.id)
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
                if not full:
                    errors = [*errors, disk_full_message("the sidecar's data")]
                log.warning("run %s: %s; its close is written once there is room", run_id,
                            DISK_FULL)
                record = await runs.closing_record(run_id, documents=documents,
                                                   errors=errors, cancelled=active.cancelled)
                async def closed_later() -> None:
                    await self.store.agents.set_last_run(agent.id)
                    await self.delivery.run_settled(run_id)

                runs.complete_later(run_id, documents=documents, errors=errors,
                                    cancelled=active.cancelled, then=closed_later)
            # extracted, delivered, failed and pending records: the app knows what is on its way
            record = {**record, **(await self.store.outbox.run_counts([run_id]))[run_id]}
            await self.hub.broadcast(p.RunFinished(run=capped(record)))
            log.info("run %s (%s) %s: documents=%d created=%d errors=%d", run_id, agent.name,
                     record["status"], record["items_processed"], record["items_created"],
                     len(record["errors"]))
        finally:
            self.active.pop(agent.id, None)  # no await before: run_agent after run_finished
            # starts a new run
        await self.delivery.run_settled(run_id)  # run_delivered at once if nothing waits
        return record

    async def _execute(self, agent: Agent, run_id: str, active: ActiveRun, errors: list[str],
                       only: set[str] | None, full: bool) -> None:
        extractor = await self.extractors(agent)
        key = extraction_key(agent, extractor.fingerprint())
        # until an agent has completed a run, old documents are indexed without their work
        first_run = not await self.store.runs.has_completed(agent.id)
        stale = stale_before(clock.now().astimezone(), self.initial_lookback_days,
                             first_run=first_run)
        source = self.sources(agent, run_id, only)
        work = [w async for w in source.pending(key, full=full)]
        counters = active.counters
        counters["files_total"] = len(work)
        last_progress = 0.0
        # every skip goes to the run log; errors (and every frame with the run) list the first
        skips = self.store.skips.tally(run_id, agent.id)
        try:
            for item in work:
                now = time.monotonic()
                if now - last_progress >= PROGRESS_INTERVAL:
                    last_progress = now
                    await self._progress(agent, run_id, counters, item.label)
                doc = await source.read(item)
                if isinstance(doc, Skip):
                    line = await skips.add(doc.item.key, doc.reason, doc.transient, doc.message)
                    errors.extend([line] if line else [])
                    await source.skipped(doc)
                elif full or not await source.is_current(doc, key):
                    await self._extract_one(agent, run_id, extractor, source, doc, key, errors,
                                            counters, stale)
                counters["files_done"] += 1
        finally:
            errors.extend(await skips.finish())
        errors.extend(await source.finish())
        await self._progress(agent, run_id, counters, None)

    async def _extract_one(self, agent: Agent, run_id: str, extractor: Extractor,
                           source: Source, doc: SourceDocument, key: str, errors: list[str],
                           counters: dict[str, Any], stale: datetime | None = None) -> None:
        # projects and taskComments are the sidecar's own (a new project, a reply in a thread)
        plan = await linking.plan(self.store, agent, doc, run_id, stale)
        request = ExtractionRequest.for_document(
            doc, data_types=plan.types, prompt_template=agent.prompt_template,
            label=doc.item.label, min_confidence=agent.min_confidence,
            project_id=plan.project_id, stale_before=stale)
        try:
            result: ExtractionResult = (await extractor.extract(request) if plan.types
                                        else ExtractionResult())
        except PermanentError as exc:
            errors.append(f"LLM extraction error for {doc.item.label!r}: {exc}")
            if isinstance(exc, ModelError | NeedsReauth):
                raise  # the engine itself is unusable: stop the run, say why
            return
        except SidecarError as exc:
            errors.append(f"LLM extraction error for {doc.item.label!r}: {exc}")
            return
        failpoints.hit("extract")
        counters["documents"] += 1
        found = list(result.items)
        extra = plan.extra()
        summary = {"items": len(found) + len(extra), "chunks": result.chunks,
                   "problems": [pr.message for pr in result.problems][:20]}
        # A big document gives thousands of records: keying, serialising and inserting them
        # in one go held the loop and the store for ~0.3 s. A slice per transaction lets a
        # request in between; only the last marks the document done, so a crash between
        # slices re-extracts it and the same keys are ignored (nothing lost, nothing twice).
        per_transaction = 256
        # a part the engine could not read for a passing reason (a server still failing after
        # its retries) is not lost: the document stays pending and is read again next run
        again = any(pr.transient for pr in result.problems)
        for start in range(0, max(len(found), 1), per_transaction):
            items = [NewEntry(idempotency_key=item_key(agent, doc, it), agent_id=agent.id,
                             run_id=run_id, table=it.table, data=dict(it.data),
                             meta=item_meta(doc, it))
                     for it in found[start:start + per_transaction]]
            items = (extra if start == 0 else []) + items  # a new project before its tasks
            last = start + per_transaction >= len(found)
            async with self.store.db.transaction() as conn:
                errors.extend(await linking.enqueue(self.store, conn, plan, items))
                await linking.remember(conn, agent, doc, plan, items)
                if last and not again:
                    await self.store.record_progress(source.progress(doc, key, summary), conn)
            if items:
                self.delivery.notify()  # delivery starts on the first slice
        failpoints.hit("outbox.queued")
        counters["items_found"] += len(found) + len(extra)
        for pr in result.problems:
            where = f" chunk {pr.chunk}" if pr.chunk is not None else ""
            later = "; the document is read again on the next run" if pr.transient else ""
            errors.append(f"{doc.item.label}{where}: {pr.message}{later}")

    async def _needs_reauth(self, agent: Agent, exc: NeedsReauth) -> None:
        """The grant is gone: mark the agent and tell Electron to ask for a reconnect."""
        await self.store.agents.set_state(agent.id, "needs_reauth")
        await self.hub.broadcast(p.AgentNeedsReauth(
            agent_id=agent.id, provider=agent.provider, account=agent.account,
            message=exc.message))

    async def _progress(self, agent: Agent, run_id: str, counters: dict[str, Any],
                        current: str | None) -> None:
        await self.hub.broadcast(p.RunProgress(
            run_id=run_id, agent_id=agent.id, files_done=counters["files_done"],
            files_total=counters["files_total"], items_found=counters["items_found"],
            current=current))

