"""The readers' shared vocabulary: the Document they return and the SkipFile they raise."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Every reason a reader gives for not returning a document (``SkipFile.reason``).
REASONS = frozenset({
    "too_large", "empty", "binary", "encoding", "permission", "vanished", "truncated",
    "encrypted", "corrupt", "unsupported", "unreadable",
})


class SkipFile(Exception):
    """This file yields no text; ``reason`` is a stable code, ``message`` names the file."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason

    def __repr__(self) -> str:
        return f"SkipFile({self.message!r}, reason={self.reason!r})"


@dataclass(frozen=True, slots=True)
class Document:
    """A file's text plus what the reader learnt about it on the way."""

    text: str
    #: sha256 hex digest of the raw bytes.
    content_hash: str
    #: One of txt md csv json html pdf docx eml.
    kind: str
    title: str | None = None
    #: tz-aware when the format states one (an email's Date header), else None.
    date: datetime | None = None
    #: JSON-serialisable facts: encoding, pages, from, subject, attachments …
    meta: Mapping[str, Any] = field(default_factory=dict)
    #: Who wrote it, as the message names them ("Ana Lopez <ana@x.example>"); None: not said.
    sender: str | None = None


def message_text(subject: str, sender: str, date: str | None, body: str) -> str:
    """A message as the extractors read it: its header lines, then the body. The one place
    the header is written; the fields travel beside the text (``Document.title``,
    ``sender``, ``date``), so nothing needs to read them back out of it."""
    head = [f"Subject: {subject}", f"From: {sender}"]
    if date is not None:
        head.append(f"Date: {date}")
    return "\n".join(head) + "\n\n" + body


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normalise_newlines(text: str) -> str:
    """``\\r\\n`` and lone ``\\r`` become ``\\n``; NULs are dropped."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def require_text(text: str, name: str, *, what: str = "no text") -> str:
    """Raise ``empty`` when extraction left nothing but whitespace."""
    if not text.strip():
        raise SkipFile(f"{name}: {what}", reason="empty")
    return text
