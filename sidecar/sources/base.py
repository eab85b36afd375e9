"""The source contract: where an agent's documents come from and how progress is remembered.

A run asks its source for the work that is new since the last run (``pending``), reads each
piece (``read``), hands the text to the extractor, queues the items in the outbox, and only
then tells the source the piece is done (``done``), in the same transaction as the outbox
write where the source keeps its state in SQLite. So a crash at any point either re-does a
piece (its items carry the same idempotency keys and are ignored) or skips nothing.

Implementations: :class:`sidecar.sources.memory.MemorySource` (the reference, used by the
contract suite), the local-folder source and the Gmail / Outlook / Teams sources.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class WorkItem:
    """Something that may need extraction: a changed file, a new message."""

    #: Stable identity within the agent: a resolved path, a message id.
    key: str
    #: Human label for the run log and progress frames.
    label: str
    #: Opaque version info the source compares (size/mtime, history id …).
    version: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """A work item's text, ready for the extractor."""

    item: WorkItem
    text: str
    #: sha256 of the raw content: part of every idempotency key.
    content_hash: str
    #: The document's own date (email Date header, file metadata); None if unknown.
    date: datetime | None = None
    kind: str = "txt"
    meta: Mapping[str, Any] = field(default_factory=dict)


#: Skip reasons that can heal without the item changing: permission denied (a chmod does
#: not change the mtime), a sharing violation or lock held by another program, an I/O
#: error, a file that vanished or changed while being read. Every other reason (type, size
#: cap, bomb, undecodable, a symlink leaving the folder …) is permanent for that version.
TRANSIENT_REASONS = frozenset({
    "permission", "permission_denied", "locked", "sharing_violation", "busy", "io_error",
    "unreadable", "vanished", "truncated",
})


@dataclass(frozen=True, slots=True)
class Skip:
    """A work item that cannot be read; recorded in the run log with its reason."""

    item: WorkItem
    reason: str
    message: str
    #: The source will read it again (next scan, with backoff) though it did not change;
    #: set only by a source that does (the run log says "will be retried" and counts it so).
    transient: bool = False


class Source(abc.ABC):
    """Enumerates, reads and acknowledges an agent's documents.

    Contract (checked by ``tests/test_source_contract.py`` for every implementation):

    * ``pending`` yields each item that is new or changed since it was last ``done`` with the
      same ``extraction_key``, once per run, in a stable order; an unchanged item is not
      yielded again (a rescan of an unchanged source makes zero extractions).
    * ``read`` returns a :class:`SourceDocument` or a :class:`Skip`; it never raises for a bad
      document (only for a source that is unusable: permissions revoked, grant expired).
    * ``done`` is called after the item's extracted items are queued; until then the item is
      yielded again by the next run. ``skipped`` records a Skip so an unchanged bad file is
      not retried every run; one the source marked :attr:`Skip.transient` is yielded again
      by a later run, with backoff, although the item did not change.
    * Blocking work (walking folders, reading files, HTTP) never runs on the event loop.
    """

    @abc.abstractmethod
    def pending(self, extraction_key: str, *, full: bool = False) -> AsyncIterator[WorkItem]:
        """Items needing extraction under ``extraction_key`` (all of them when ``full``)."""

    @abc.abstractmethod
    async def read(self, item: WorkItem) -> SourceDocument | Skip:
        """The item's text, or why it cannot be read."""

    @abc.abstractmethod
    async def done(self, doc: SourceDocument, extraction_key: str, result: Mapping[str, Any],
                   conn: Any = None) -> None:
        """Remember ``doc`` as extracted; ``conn`` is the open outbox transaction, if any."""

    @abc.abstractmethod
    async def skipped(self, skip: Skip) -> None:
        """Remember that ``skip.item`` could not be read in its current version."""

    async def finish(self) -> list[str]:
        """End of a run: notice removals and similar; returns notes for the run log."""
        return []
