"""The source contract: where an agent's documents come from and how progress is remembered.

A run asks its source for the work that is new since the last run (``pending``), reads each
piece (``read``), hands the document to the extractor, and queues the records in the outbox;
in that same transaction the store writes what the source says finishing the piece changes
(``progress``: the piece's state and the agent's cursor, see
:meth:`sidecar.store.Store.record_progress`). A source never sees the open transaction. So a
crash at any point either re-does a piece (its records carry the same idempotency keys and
are ignored) or skips nothing.

Implementations, one package per provider under ``sidecar/sources/``: ``localdir`` (local
folders), ``gmail``, ``graph`` (Outlook and Teams); each package also holds its sign-in.
``tests/test_source_contract.py`` runs every one through the same suite.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sidecar.readers.base import Document
from sidecar.store.files import Progress

__all__ = ["TRANSIENT_REASONS", "Progress", "Skip", "Source", "SourceDocument", "WorkItem"]


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
    #: The document's own title (a subject, a heading, a chat's topic); None: not said.
    title: str | None = None
    #: Who wrote it, as the message names them ("Ana <ana@x.example>"); None: not a message.
    sender: str | None = None

    @classmethod
    def of(cls, item: WorkItem, document: Document, **meta: Any) -> SourceDocument:
        """A reader's document as the work item's: every field it has, plus ``meta``."""
        return cls(item=item, text=document.text, content_hash=document.content_hash,
                   date=document.date, kind=document.kind, title=document.title,
                   sender=document.sender,
                   meta={**meta, "title": document.title, **dict(document.meta)})


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

    * ``pending`` yields each item that is new or changed since its progress was recorded
      with the same ``extraction_key``, once per run, in a stable order; an unchanged item is
      not yielded again (a rescan of an unchanged source makes zero extractions); ``full``
      yields every item.
    * ``read`` returns a :class:`SourceDocument` or a :class:`Skip`; it never raises for a bad
      document (only for a source that is unusable: permissions revoked, grant expired).
    * ``progress`` is asked once the item's records are about to be queued; it does no I/O
      and returns what the store writes in that same transaction. Until that commits the item
      is yielded again by the next run.
    * ``skipped`` records a Skip so an unchanged bad item is not retried every run; one the
      source marked :attr:`Skip.transient` is yielded again by a later run, with backoff,
      although the item did not change.
    * ``is_current``: the document's bytes were already extracted under this key (a touched
      or renamed file); the source settles it and the runner skips the model.
    * ``finish`` ends a run (removals, cursors) and returns notes for the run log.
    * Blocking work (walking folders, reading files, HTTP) never runs on the event loop.
    """

    #: The store the source reads its state from (the runner writes :meth:`progress` to it).
    store: Any = None

    @abc.abstractmethod
    def pending(self, extraction_key: str, *, full: bool = False) -> AsyncIterator[WorkItem]:
        """Items needing extraction under ``extraction_key`` (all of them when ``full``)."""

    @abc.abstractmethod
    async def read(self, item: WorkItem) -> SourceDocument | Skip:
        """The item's text, or why it cannot be read."""

    @abc.abstractmethod
    def progress(self, doc: SourceDocument, extraction_key: str,
                 result: Mapping[str, Any]) -> Progress:
        """What extracting ``doc`` changes: its state row and, if it moved, the cursor."""

    @abc.abstractmethod
    async def skipped(self, skip: Skip) -> None:
        """Remember that ``skip.item`` could not be read in its current version."""

    async def is_current(self, doc: SourceDocument, extraction_key: str) -> bool:
        """Whether ``doc`` was already extracted as it is (then it is settled, not extracted).

        The default: a source that cannot tell extracts every document it yields.
        """
        return False

    async def finish(self) -> list[str]:
        """End of a run: notice removals and similar; returns notes for the run log."""
        return []
