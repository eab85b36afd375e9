"""Local-folder agents: the sidecar reads the user's folders itself, incrementally.

A rescan of an unchanged tree costs one ``stat`` per file and zero reads or model calls:
files whose size, mtime and extraction key match their stored state are not yielded.
A file whose stat changed but whose content hash did not (a touch, a copy-back) is read
once, recognised by hash and settled without extraction. A file skipped for a reason that
can heal (permission denied, a lock, an I/O error) is read again at the next scan, then with
backoff; a watcher event on it (a chmod, a close) retries it at once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sidecar.domain import Agent, roots_text
from sidecar.errors import PermanentError
from sidecar.scan import Refused, ScanResult, inside, resolve_roots, scan_paths, scan_tree
from sidecar.sources.base import (
    TRANSIENT_REASONS,
    Progress,
    Skip,
    Source,
    SourceDocument,
    WorkItem,
)
from sidecar.store import Store
from sidecar.store.files import RETRY, FileState, retry_result

#: Skipped files remembered per transaction.
SKIP_BATCH = 500


def agent_accept(agent: Agent) -> Any:
    """The agent's include/exclude rules as a scan filter."""
    from sidecar.pathfilter import included

    def accept(rel: tuple[str, ...], is_dir: bool) -> bool:
        return included(rel, extensions=agent.extensions, include_globs=agent.include_globs,
                        exclude=agent.exclude, is_dir=is_dir)

    return accept


class LocalFolderSource(Source):
    """Scans the agent's folders (or just ``only`` paths, from the watcher) against file_state."""

    def __init__(self, agent: Agent, store: Store, *, run_id: str | None = None,
                 only: set[str] | None = None,
                 allowed_roots: Sequence[str | Path] | None = None) -> None:
        self.agent = agent
        self.store = store
        self.files = store.files
        self.run_id = run_id
        self.only = only
        self.roots = resolve_roots(agent.directories)
        #: Folders the user no longer allows (setting allowed_roots): never scanned or read.
        self.not_allowed: list[Path] = []
        self.allowed_roots = allowed_roots
        if allowed_roots is not None:
            allowed = resolve_roots(allowed_roots)
            self.not_allowed = [r for r in self.roots if not inside(r, allowed)]
            self.roots = [r for r in self.roots if r not in self.not_allowed]
        self._known: dict[str, FileState] = {}
        self._by_hash: dict[str, list[FileState]] | None = None
        self._scan: ScanResult | None = None
        self._refusals: dict[str, Refused] = {}
        self._skips: list[dict[str, Any]] = []

    async def _scan_now(self) -> ScanResult:
        accept = agent_accept(self.agent)
        if self.only is None:
            return await asyncio.to_thread(scan_tree, self.roots, accept)
        return await asyncio.to_thread(scan_paths, sorted(self.only), self.roots, accept)

    def _not_allowed_message(self) -> str:
        return (f"{', '.join(map(str, self.not_allowed))}: outside the folders the user "
                f"allowed ({roots_text(self.allowed_roots or ())}); not read")

    async def pending(self, extraction_key: str, *, full: bool = False
                      ) -> AsyncIterator[WorkItem]:
        if self.not_allowed and not self.roots:
            raise PermanentError(self._not_allowed_message(), code="not_allowed")
        self._scan = await self._scan_now()
        self._known = await self.files.all(self.agent.id)
        self._by_hash = None
        for refused in self._scan.refused:
            state = self._known.get(refused.path)
            if state is not None and self._leave(state, refused.size, refused.mtime_ns, ""):
                continue
            self._refusals[refused.path] = refused
            yield WorkItem(key=refused.path, label=refused.path,
                           version={"size": refused.size, "mtime_ns": refused.mtime_ns,
                                    "refused": refused.reason})
        for path, (size, mtime_ns) in sorted(self._scan.files.items()):
            state = self._known.get(path)
            if not full and state is not None and self._leave(state, size, mtime_ns,
                                                              extraction_key):
                continue
            yield WorkItem(key=path, label=path, version={"size": size, "mtime_ns": mtime_ns})

    def _leave(self, state: FileState, size: int, mtime_ns: int, extraction_key: str) -> bool:
        """Nothing to do for this entry now: settled, or a transient skip still backing off
        (unless a watcher event named it: then the user may just have fixed it)."""
        if state.settled_for(size, mtime_ns, extraction_key):
            return True
        return self.only is None and state.backing_off(size, mtime_ns)

    async def read(self, item: WorkItem) -> SourceDocument | Skip:
        from sidecar.readers import SkipFile

        refused = self._refusals.get(item.key)
        if refused is not None:
            return Skip(item, refused.reason, refused.message,
                        transient=refused.reason in TRANSIENT_REASONS)
        try:
            doc = await asyncio.to_thread(self._read_inside, Path(item.key))
        except SkipFile as exc:
            return Skip(item, exc.reason, exc.message, transient=exc.reason in TRANSIENT_REASONS)
        return SourceDocument.of(item, doc, path=item.key)

    def _read_inside(self, path: Path) -> Any:
        """Re-check containment right before reading: the file may be a symlink by now."""
        from sidecar.readers import SkipFile, read_document

        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise SkipFile(f"{path}: deleted before it could be read", reason="vanished") from None
        if not inside(real, self.roots):
            raise SkipFile(f"{path}: now points outside the agent's folders",
                           reason="outside_folder")
        return read_document(real, max_bytes=self.agent.max_file_bytes)

    async def is_current(self, doc: SourceDocument, extraction_key: str) -> bool:
        """Same bytes already extracted with this key (a touch): settle it without the model."""
        state = self._known.get(doc.item.key)
        if state is None:
            state = self._renamed_from(doc, extraction_key)
        if state is None or state.status != "extracted":
            return False
        if state.content_hash != doc.content_hash or state.extraction_key != extraction_key:
            return False
        await self.files.record(
            self.agent.id, doc.item.key, size=doc.item.version.get("size"),
            mtime_ns=doc.item.version.get("mtime_ns"), content_hash=doc.content_hash,
            extraction_key=extraction_key, status="extracted", last_result=state.last_result,
            run_id=self.run_id)
        return True

    def _renamed_from(self, doc: SourceDocument, extraction_key: str) -> FileState | None:
        """A new path with the bytes of a file that is gone: a rename or move, not new work."""
        if self._by_hash is None:  # built on the first new file, not on every one
            self._by_hash = {}
            for state in self._known.values():
                if state.status == "extracted" and state.content_hash:
                    self._by_hash.setdefault(state.content_hash, []).append(state)
        for state in self._by_hash.get(doc.content_hash, ()):
            if state.extraction_key == extraction_key and not os.path.exists(state.path):
                return state
        return None

    def progress(self, doc: SourceDocument, extraction_key: str, result: Mapping[str, Any]
                 ) -> Progress:
        return Progress(self.agent.id, doc.item.key, "extracted", extraction_key,
                        content_hash=doc.content_hash, size=doc.item.version.get("size"),
                        mtime_ns=doc.item.version.get("mtime_ns"), result=dict(result),
                        run_id=self.run_id)

    async def skipped(self, skip: Skip) -> None:
        """Permanent skips stay until the file changes; transient ones are kept as ``retry``
        with their attempt count and the time a scan may try again."""
        refused = skip.item.key in self._refusals
        status = RETRY if skip.transient else "refused" if refused else "skipped"
        result = (retry_result(skip.reason, skip.message, self._known.get(skip.item.key))
                  if skip.transient else {"reason": skip.reason, "message": skip.message})
        # written in batches: a batch lost to a crash or cancel is only skipped again
        self._skips.append({
            "agent_id": self.agent.id, "path": skip.item.key,
            "size": skip.item.version.get("size"), "mtime_ns": skip.item.version.get("mtime_ns"),
            "extraction_key": None if refused else "*", "status": status,
            "last_result": result, "run_id": self.run_id})
        if len(self._skips) >= SKIP_BATCH:
            await self._flush_skips()

    async def _flush_skips(self) -> None:
        rows, self._skips = self._skips, []
        await self.files.record_many(rows)

    async def finish(self) -> list[str]:
        """Notice files that are gone; records already delivered are not retracted."""
        await self._flush_skips()
        if self._scan is None:
            return []
        present = set(self._scan.files) | {r.path for r in self._scan.refused}
        # a watcher batch only speaks for its own paths; a full scan for the whole tree
        scope = self._known if self.only is None else {
            p: s for p, s in self._known.items() if p in self.only}
        notes = [self._not_allowed_message()] if self.not_allowed else []
        # files below a folder the agent no longer reads (the user pointed it elsewhere, or a
        # folder no longer allowed) are out of its scope, not gone; only missing ones are asked
        gone = [p for p, s in scope.items() if p not in present and s.status != "deleted"
                and inside(Path(p), self.roots)]
        await self.files.mark_deleted(self.agent.id, gone)
        return notes + ([f"{len(gone)} file(s) no longer present"] if gone else [])
