"""Word .docx text through python-docx: paragraphs and tables in document order."""

from __future__ import annotations

import io
import struct
import zipfile
from typing import Any

from sidecar.readers.base import Document, SkipFile, require_text, sha256_hex
from sidecar.readers.sniff import MAX_ZIP_ENTRIES, inflated_size, is_ole, zip_entry_count

#: Unpacked, a .docx may be this many times the agent's file size limit (at least the floor):
#: python-docx holds every part in memory at once, so this bounds what one file costs.
_MAX_EXPANSION = 4
_MIN_EXPANDED_LIMIT = 64 * 1024 * 1024
#: Word writes members stored or deflated; zipfile inflates the others in one unbounded call.
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")


def read_docx(data: bytes, name: str, *, max_bytes: int) -> Document:
    if is_ole(data):
        if "EncryptedPackage".encode("utf-16-le") in data:
            raise SkipFile(f"{name}: password-protected Word document", reason="encrypted")
        raise SkipFile(f"{name}: old binary Word format (.doc), not a .docx",
                       reason="unsupported")
    _check_zip(data, name, max_bytes=max_bytes)
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
        blocks, headings, counts = _blocks(document)
        core_title = _core(document, "title")
        author = _core(document, "author")
    except SkipFile:
        raise
    except Exception as exc:  # python-docx raises KeyError, lxml errors, ValueError …
        raise SkipFile(f"{name}: damaged Word document ({type(exc).__name__}: {exc})",
                       reason="corrupt") from None
    text = "\n".join(blocks)
    meta: dict[str, Any] = dict(counts)
    if author:
        meta["author"] = author
    title = core_title or (headings[0] if headings else None)
    return Document(text=require_text(text, name), content_hash=sha256_hex(data), kind="docx",
                    title=title, meta=meta)


def _check_zip(data: bytes, name: str, *, max_bytes: int) -> None:
    """Refuse zip bombs from the directory alone, then prove the directory tells the truth."""
    count = zip_entry_count(data)
    if count is not None and count > MAX_ZIP_ENTRIES:
        more = " or more" if count == 0xFFFF else ""  # the field's maximum: zip64 has more
        raise SkipFile(f"{name}: has {count:,}{more} parts inside, over the "
                       f"{MAX_ZIP_ENTRIES:,} a Word document can have", reason="too_large")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            names = {i.filename for i in infos}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise SkipFile(f"{name}: damaged Word document (not a valid zip file)",
                       reason="corrupt") from None
    if "word/document.xml" not in names:
        raise SkipFile(f"{name}: not a Word document (no word/document.xml inside)",
                       reason="corrupt")
    odd = next((i for i in infos if i.compress_type not in _METHODS), None)
    if odd is not None:
        raise SkipFile(f"{name}: {odd.filename} uses zip compression method "
                       f"{odd.compress_type}, which Word never writes", reason="unsupported")
    expanded = sum(i.file_size for i in infos)
    limit = max(_MIN_EXPANDED_LIMIT, max_bytes * _MAX_EXPANSION)
    if expanded > limit:
        raise SkipFile(f"{name}: expands to {expanded // (1024 * 1024):,} MB when unpacked, "
                       f"over the {limit // (1024 * 1024):,} MB limit", reason="too_large")
    for info in infos:  # zipfile trusts these sizes only after inflating all of a member
        if info.compress_type == zipfile.ZIP_DEFLATED and _inflated(data, info) != info.file_size:
            raise SkipFile(f"{name}: {info.filename} does not unpack to the size its zip "
                           "directory states (a zip bomb?)", reason="corrupt")


def _inflated(data: bytes, info: zipfile.ZipInfo) -> int | None:
    """What a deflated member really inflates to, counting at most one byte past its size."""
    try:
        head = _LOCAL_HEADER.unpack_from(data, info.header_offset)
    except struct.error:
        return None
    if head[0] != b"PK\x03\x04":
        return None
    start = info.header_offset + _LOCAL_HEADER.size + head[9] + head[10]
    return inflated_size(memoryview(data)[start:start + info.compress_size], info.file_size)


def _blocks(document: Any) -> tuple[list[str], list[str], dict[str, int]]:
    """Text blocks in order (tables as ``a | b | c`` rows), heading texts and counts."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    blocks: list[str] = []
    headings: list[str] = []
    counts = {"paragraphs": 0, "tables": 0}
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            text = item.text.strip()
            if not text:
                continue
            blocks.append(text)
            counts["paragraphs"] += 1
            style = _style_name(item)
            if style.startswith("heading") or style == "title":
                headings.append(text)
        elif isinstance(item, Table):
            blocks.extend(_table_rows(item))
            counts["tables"] += 1
    return blocks, headings, counts


def _style_name(paragraph: Any) -> str:
    try:
        return (paragraph.style.name or "").lower() if paragraph.style is not None else ""
    except Exception:
        return ""


def _table_rows(table: Any) -> list[str]:
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        seen: list[Any] = []
        for cell in row.cells:
            if any(cell._tc is tc for tc in seen):  # a merged cell repeats per grid column
                continue
            seen.append(cell._tc)
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def _core(document: Any, attr: str) -> str | None:
    try:
        value = getattr(document.core_properties, attr)
    except Exception:
        return None
    if not isinstance(value, str):
        return None
    return value.strip() or None
