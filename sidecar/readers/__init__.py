"""Turns a file (or an attachment's bytes) into text, or says precisely why it cannot."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path, PurePath
from typing import BinaryIO

from sidecar.readers import text
from sidecar.readers.base import REASONS, Document, SkipFile
from sidecar.readers.docdate import document_date
from sidecar.readers.eml import read_eml
from sidecar.readers.html import html_to_text, read_html
from sidecar.readers.sniff import content_kind

__all__ = ["REASONS", "SUPPORTED_EXTENSIONS", "Document", "SkipFile", "html_to_text",
           "read_bytes", "read_document"]

#: Extension → the kind of reader that handles it.
_KIND_BY_EXTENSION = {
    ".txt": "txt", ".log": "txt", ".rst": "txt",
    ".md": "md", ".markdown": "md",
    ".csv": "csv", ".tsv": "tsv",
    ".json": "json",
    ".html": "html", ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".eml": "eml",
}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_KIND_BY_EXTENSION)


def read_document(path: Path, *, max_bytes: int) -> Document:
    """Read and extract the file at ``path`` (at most ``max_bytes`` bytes). Blocking.

    The extension picks the reader, then the content overrules it (a ``.txt`` that is really
    a PDF is read as a PDF). Every failure is a :class:`SkipFile` whose ``reason`` is one of
    :data:`REASONS` and whose message names the file. ``date`` is the document's reference
    date and ``meta["date_origin"]`` where it came from (see :mod:`sidecar.readers.docdate`;
    the file's mtime when the document states none).
    """
    path = Path(path)
    name = path.name or str(path)
    _kind_for(name)  # refuse unsupported extensions before touching the file
    data, mtime_ns = _read_file(path, name, max_bytes=max_bytes)
    doc = _read_bytes(data, name=name, max_bytes=max_bytes)
    return _dated(doc, name, _saved_at(mtime_ns))


#: Before this an mtime is a placeholder (ZIP's 1980-01-01, a build system's epoch), not a date.
_EARLIEST_MTIME = datetime(1990, 1, 1).astimezone()


def _saved_at(mtime_ns: int) -> datetime | None:
    """The file's mtime as a reference, unless it is in the future (a wrong clock), a
    placeholder (1980-01-01 from an unzipped archive, the epoch) or not a date at all."""
    try:
        when = datetime.fromtimestamp(mtime_ns / 1e9).astimezone()
    except (OverflowError, OSError, ValueError):
        return None
    if when > datetime.now().astimezone() + timedelta(days=1) or when < _EARLIEST_MTIME:
        return None
    return when


def read_bytes(data: bytes, *, name: str, max_bytes: int) -> Document:
    """Extract ``data``; ``name`` (an attachment's file name) gives the extension.

    ``date`` is set only when the document states it (or an email's header does): an
    attachment has no mtime, so the caller's own date (the message's) is the fallback."""
    doc = _read_bytes(data, name=name, max_bytes=max_bytes)
    return _dated(doc, PurePath(name).name or name, None)


def _read_bytes(data: bytes, *, name: str, max_bytes: int) -> Document:
    name = PurePath(name).name or name
    kind = _kind_for(name)
    if len(data) > max_bytes:
        raise SkipFile(f"{name}: {_size(len(data))} is over the {_size(max_bytes)} limit",
                       reason="too_large")
    if not data:
        raise SkipFile(f"{name}: empty file (0 bytes)", reason="empty")
    return _extract(data, name, kind, max_bytes=max_bytes)


def _dated(doc: Document, name: str, mtime: datetime | None) -> Document:
    """The document with its reference date and ``meta["date_origin"]``."""
    if doc.date is not None:  # an email's Date, in the sender's zone: the user's local day
        return replace(doc, date=doc.date.astimezone(), meta={**doc.meta, "date_origin": "email"})
    when, origin = document_date(doc.text, name=name, mtime=mtime)
    if origin == "now":
        return doc
    return replace(doc, date=when, meta={**doc.meta, "date_origin": origin})


def _kind_for(name: str) -> str:
    ext = PurePath(name).suffix.lower()
    kind = _KIND_BY_EXTENSION.get(ext)
    if kind is None:
        what = f"{ext} files are" if ext else "files without an extension are"
        raise SkipFile(f"{name}: {what} not supported", reason="unsupported")
    return kind


def _extract(data: bytes, name: str, kind: str, *, max_bytes: int) -> Document:
    actual = content_kind(data)
    if actual == "pdf":
        from sidecar.readers.pdf import read_pdf

        return read_pdf(data, name)
    if actual == "docx":
        from sidecar.readers.docx import read_docx

        return read_docx(data, name, max_bytes=max_bytes)
    if kind == "pdf":
        raise SkipFile(f"{name}: not a PDF (no %PDF- header)", reason="corrupt")
    if kind == "docx":
        from sidecar.readers.docx import read_docx

        return read_docx(data, name, max_bytes=max_bytes)  # explains what it is instead
    return _TEXT_READERS[kind](data, name)


_TEXT_READERS: dict[str, Callable[[bytes, str], Document]] = {
    "txt": text.read_txt,
    "md": text.read_md,
    "csv": text.read_csv,
    "tsv": partial(text.read_csv, tab=True),
    "json": text.read_json,
    "html": read_html,
    "eml": read_eml,
}


def _read_file(path: Path, name: str, *, max_bytes: int) -> tuple[bytes, int]:
    """The file's bytes, refusing files that are too big, unreadable or changing under us."""
    before = _stat(path, name, when="before it could be read")
    if not stat.S_ISREG(before.st_mode):
        raise SkipFile(f"{name}: not a regular file", reason="unsupported")
    if before.st_size > max_bytes:
        raise SkipFile(f"{name}: {_size(before.st_size)} is over the {_size(max_bytes)} limit",
                       reason="too_large")
    if before.st_size == 0:
        raise SkipFile(f"{name}: empty file (0 bytes)", reason="empty")
    try:
        # non-blocking: a FIFO swapped in since the stat must not hang the open (or the run)
        fd = os.open(path, os.O_RDONLY | _O_NONBLOCK | _O_NOCTTY | _O_BINARY)
    except OSError as exc:
        raise _os_skip(exc, name, when="before it could be read") from None
    try:
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # what was opened, not named
                raise SkipFile(f"{name}: not a regular file", reason="unsupported")
            data = _read(f, max_bytes + 1)
    except OSError as exc:
        raise _os_skip(exc, name, when="while it was being read") from None
    after = _stat(path, name, when="while it was being read")
    if len(data) > max_bytes:
        raise SkipFile(f"{name}: grew over the {_size(max_bytes)} limit while being read",
                       reason="too_large")
    if (len(data) != before.st_size or after.st_size != before.st_size
            or after.st_mtime_ns != before.st_mtime_ns):
        raise SkipFile(f"{name}: changed while it was being read (read {len(data)} of "
                       f"{before.st_size} bytes); it will be read again later",
                       reason="truncated")
    return data, after.st_mtime_ns


_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)


def _read(f: BinaryIO, limit: int) -> bytes:
    """Read up to ``limit`` bytes (a seam for tests that change the file mid-read)."""
    return f.read(limit)


def _stat(path: Path, name: str, *, when: str) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise _os_skip(exc, name, when=when) from None


def _os_skip(exc: OSError, name: str, *, when: str) -> SkipFile:
    if isinstance(exc, FileNotFoundError) or exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return SkipFile(f"{name}: deleted {when}", reason="vanished")
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return SkipFile(f"{name}: permission denied", reason="permission")
    if isinstance(exc, IsADirectoryError):
        return SkipFile(f"{name}: is a folder, not a file", reason="unsupported")
    return SkipFile(f"{name}: could not be read ({exc.strerror or exc})", reason="unreadable")


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n} bytes"
