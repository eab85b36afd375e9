"""The extractor contract: what every engine takes, returns and promises.

The daemon only ever talks to :class:`Extractor`; which engine runs (the embedded
llama.cpp model, a remote OpenAI-compatible API, the rule-based reference engine)
is a configuration detail. Every implementation is run through the same contract
test suite (``tests/test_extractor_contract.py``).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sidecar.domain import ALLOWED_TABLES

__all__ = ["ALLOWED_TABLES"]  # re-exported: the schema and the CLI name the tables from here


@dataclass(frozen=True, slots=True)
class Grounding:
    """Where an item came from in the document text (``span`` is ``None`` when not aligned)."""

    span: tuple[int, int] | None
    exact: bool = False
    quote: str | None = None

    @property
    def grounded(self) -> bool:
        return self.span is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "span": list(self.span) if self.span is not None else None,
            "exact": self.exact,
            "grounded": self.grounded,
        }


@dataclass(frozen=True, slots=True)
class ExtractedRecord:
    """One validated record: ``data`` is exactly what will be inserted (before review flags)."""

    table: str
    data: Mapping[str, Any]
    source: Grounding
    confidence: float = 1.0
    #: What the item's dates were resolved against: ``{"date": ISO 8601, "origin": …}``.
    reference: Mapping[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "table": self.table,
            "data": dict(self.data),
            "source": self.source.to_json(),
            "confidence": round(self.confidence, 4),
        }
        if self.reference is not None:
            out["reference"] = dict(self.reference)
        return out


@dataclass(frozen=True, slots=True)
class ExtractionProblem:
    """Something that went wrong for part of a document; never aborts the extraction."""

    chunk: int | None
    message: str
    #: The part failed for a passing reason (its server still failing after the retries):
    #: the document is not marked done, so the next run reads it again.
    transient: bool = False


@dataclass(frozen=True, slots=True)
class ExtractionRequest:
    """One document to extract from, with the agent's instructions."""

    text: str
    data_types: tuple[str, ...]
    prompt_template: str = ""
    #: Reference date for relative expressions ("by Friday"); ``None`` means today.
    document_date: datetime | None = None
    #: Where ``document_date`` came from (email, front_matter, date_line, title, file_name,
    #: mtime; see ``sidecar.readers.docdate``); ``None``: not said.
    date_origin: str | None = None
    #: Human label for logs and errors (a path, a message subject); never parsed.
    label: str = ""
    #: Items below this confidence are dropped by the engine.
    min_confidence: float = 0.0
    #: The agent's project: filled into ``projectId`` (and required by timelines).
    project_id: str | None = None
    #: Work dated before this is stale (an agent's first run, ``initial_lookback_days``): a
    #: document whose reference is older gives no tasks or timelines, a task due before it
    #: is dropped. ``None``: everything counts.
    stale_before: datetime | None = None
    #: The document's own title (subject, heading, chat topic), if it has one.
    title: str | None = None
    #: Who wrote the document, as the message names them ("Ana <ana@x.example>"): an email's
    #: "I'll send it" is theirs. None: not a message, or not said.
    sender: str | None = None
    #: What the document is (md, pdf, eml, email, chat …), as its reader or source says.
    kind: str | None = None

    @classmethod
    def for_document(cls, doc: Any, *, data_types: tuple[str, ...], **instructions: Any
                     ) -> ExtractionRequest:
        """The request for a reader's ``Document`` or a source's ``SourceDocument``: its text,
        date, title, sender and kind as they are, the agent's ``instructions`` beside them."""
        meta = getattr(doc, "meta", None) or {}
        return cls(text=doc.text, data_types=data_types, document_date=doc.date,
                   date_origin=meta.get("date_origin"), title=doc.title, sender=doc.sender,
                   kind=doc.kind, **instructions)


@dataclass(frozen=True, slots=True)
class ExtractionResult:
    """Items (deduplicated across chunks, in document order) plus per-chunk problems."""

    items: tuple[ExtractedRecord, ...] = ()
    problems: tuple[ExtractionProblem, ...] = ()
    chunks: int = 1
    stats: Mapping[str, Any] = field(default_factory=dict)


class Extractor(abc.ABC):
    """Turns document text into validated records.

    Contract (checked by the contract suite for every implementation):

    * ``extract`` never raises for bad model output or a bad document: it returns
      what it could validate and reports the rest in ``problems``. It raises
      :class:`~sidecar.errors.TransientError` / :class:`~sidecar.errors.PermanentError`
      only when the engine itself is unusable (model missing, API unreachable).
    * Every returned item's ``table`` is in ``request.data_types`` ∩ ``ALLOWED_TABLES``;
      ``data`` passed :func:`sidecar.extractors.schema.normalize_item` (required fields
      present, enums defaulted, dates as ms timestamps, forbidden fields stripped).
    * ``confidence`` is in [0, 1]; items below ``request.min_confidence`` are absent.
    * The event loop is never blocked: CPU work runs in a worker thread or process.
    * ``fingerprint`` changes whenever the same input could give different output
      (engine, model file, strategy version), so callers can re-extract on change.
    """

    #: Short engine name: ``local``, ``remote``, ``rules``.
    name: str = "abstract"

    @abc.abstractmethod
    async def extract(self, request: ExtractionRequest) -> ExtractionResult:
        """Extract validated records from ``request.text``."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """Identify engine + model + strategy version for incremental re-extraction."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release models, sessions and threads."""

    async def __aenter__(self) -> Extractor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
