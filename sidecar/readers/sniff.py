"""Content sniffing: what a file really is, whatever its extension claims."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

#: Leading bytes of binary formats we never read as text, with a human name (only magics
#: with non-printable bytes: a text file may well start with "MZ" or "ID3").
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x7fELF", "an executable"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE compound file (old Office format)"),
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "a zip archive"),
    (b"\x00\x00\x01\x00", "an icon"),
    (b"SQLite format 3\x00", "a SQLite database"),
)

_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)

#: Bytes that are fine in text: tab, LF, VT, FF, CR, ESC (ANSI colours in logs).
_TEXT_CONTROLS = b"\t\n\x0b\x0c\r\x1b"
_CONTROL = bytes(b for b in (*range(0x20), 0x7F) if b not in _TEXT_CONTROLS)
_SAMPLE = 64 * 1024
#: Share of control bytes above which a file counts as binary.
_CONTROL_RATIO = 0.05


def bom_encoding(data: bytes) -> str | None:
    """The encoding a byte-order mark announces, or None."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding
    return None


def is_pdf(data: bytes) -> bool:
    """PDF readers accept junk before the header, so look in the first KiB."""
    return b"%PDF-" in data[:1024]


#: More members than any Word document has (a big one has a few hundred); parsing a
#: central directory costs ~15 µs and ~200 bytes per member, three times per read.
MAX_ZIP_ENTRIES = 10_000
_EOCD = struct.Struct("<4s4H2LH")
_INFLATE_IN = 64 * 1024
_INFLATE_OUT = 1024 * 1024


def zip_entry_count(data: bytes) -> int | None:
    """Members a zip declares in its end-of-central-directory record (read before anything
    parses the directory); None when there is no such record. 0xFFFF means "at least"."""
    start = data.rfind(b"PK\x05\x06", max(0, len(data) - _EOCD.size - 0xFFFF))
    if start < 0 or start + _EOCD.size > len(data):
        return None
    return _EOCD.unpack_from(data, start)[4]


def inflated_size(data: bytes | memoryview, limit: int, *, wbits: int = -15) -> int | None:
    """What deflate ``data`` inflates to, counted in bounded steps and never held: stops once
    past ``limit``. None when it is not a deflate (``wbits=15``: zlib) stream."""
    d = zlib.decompressobj(wbits)
    view = memoryview(data)
    total = pos = 0
    pending: bytes | memoryview = b""
    while not d.eof and total <= limit:
        if not pending and pos < len(view):
            pending, pos = view[pos:pos + _INFLATE_IN], pos + _INFLATE_IN
        try:
            out = d.decompress(pending, _INFLATE_OUT)
        except zlib.error:
            return None
        total += len(out)
        pending = d.unconsumed_tail
        if not out and not pending and pos >= len(view):
            break
    return total


def is_docx(data: bytes) -> bool:
    if not data.startswith(b"PK\x03\x04"):
        return False
    if (zip_entry_count(data) or 0) > MAX_ZIP_ENTRIES:  # too many to list: read_docx refuses
        return b"word/document.xml" in data
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return "word/document.xml" in zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def is_ole(data: bytes) -> bool:
    return data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")


def content_kind(data: bytes) -> str | None:
    """``pdf`` or ``docx`` when the bytes say so, else None (let the extension decide)."""
    if is_pdf(data):
        return "pdf"
    if is_docx(data):
        return "docx"
    return None


def binary_reason(data: bytes) -> str | None:
    """Why ``data`` is not text (a human phrase), or None when it may well be text."""
    if bom_encoding(data) is not None:
        return None  # UTF-16/32 text is full of NULs; the decoder judges it
    for magic, what in _MAGIC:
        if data.startswith(magic):
            return f"looks binary ({what})"
    if b"\x00" in data:
        return "looks binary (contains NUL bytes)"
    sample = data[:_SAMPLE]
    if sample:
        controls = len(sample) - len(sample.translate(None, _CONTROL))
        if controls / len(sample) > _CONTROL_RATIO:
            return "looks binary (too many control characters)"
    return None


def text_looks_binary(text: str) -> bool:
    """After decoding: control characters that no text file carries in bulk."""
    sample = text[:_SAMPLE]
    if not sample:
        return False
    controls = sum(1 for ch in sample
                   if (ord(ch) < 0x20 and ch not in "\t\n\x0b\x0c\r\x1b") or ch == "\x7f"
                   or 0x80 <= ord(ch) < 0xA0)
    return controls / len(sample) > _CONTROL_RATIO
