"""Plain-text formats: decoding any bytes sensibly, then txt, Markdown, CSV/TSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from typing import Any

from sidecar.readers.base import Document, SkipFile, normalise_newlines, require_text, sha256_hex
from sidecar.readers.records import render_json
from sidecar.readers.sniff import binary_reason, bom_encoding, text_looks_binary

_MD_TITLE = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_CP1252_SIBLINGS = frozenset({"latin_1", "iso8859_15", "cp1250", "iso8859_2", "cp1254",
                               "iso8859_9"})
_SAMPLE = 64 * 1024
#: Non-letters a Western text plausibly holds (no ¹ ¾ ¼ ¨ ´ ¸: Latin-2 letters in disguise).
_CP1252_PUNCTUATION = frozenset("€‚„…†‡‰‹‘’“”•–—˜™›\u00a0¡¢£§©«¬\u00ad®°±µ¶·»¿×÷")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def decode(data: bytes, name: str) -> tuple[str, str]:
    """Bytes to text and the encoding used; ``binary`` / ``encoding`` SkipFile otherwise."""
    reason = binary_reason(data)
    if reason is not None:
        raise SkipFile(f"{name}: {reason}", reason="binary")
    bom = bom_encoding(data)
    if bom is not None:
        try:
            text = data.decode(bom)
        except UnicodeDecodeError:
            raise SkipFile(f"{name}: has a {bom} byte-order mark but is not valid {bom}",
                           reason="encoding") from None
        return _checked(text, name), bom
    try:
        return _checked(data.decode("utf-8"), name), "utf-8"
    except UnicodeDecodeError:
        pass
    encoding = _guess(data)
    if encoding is None:
        raise SkipFile(f"{name}: text encoding could not be recognised", reason="encoding")
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        raise SkipFile(f"{name}: text encoding could not be recognised",
                       reason="encoding") from None
    return _checked(text, name), encoding


def _guess(data: bytes) -> str | None:
    if _plausible_cp1252(data):
        return "cp1252"
    from charset_normalizer import from_bytes

    try:
        best = from_bytes(data).best()
    except Exception:  # the detector must never take a scan down
        return None
    if best is None or not best.encoding:
        return None
    encoding = best.encoding
    # Western text the detector files under a sibling code page: cp1252 is the usual truth
    # (latin-1 maps 0x80-0x9F to control characters, where cp1252 has quotes and dashes).
    if encoding in _CP1252_SIBLINGS:
        try:
            as_cp1252 = data.decode("cp1252")
        except UnicodeDecodeError:
            return encoding
        if encoding == "latin_1" or as_cp1252 == data.decode(encoding, errors="replace"):
            return "cp1252"
    return encoding


def _plausible_cp1252(data: bytes) -> bool:
    """Western text in Windows-1252 (the usual non-UTF-8 file here), which detectors misfile
    when it is short: every non-ASCII character a Latin letter or typographic punctuation,
    and most letters plain ASCII (Cyrillic or Greek read as cp1252 are all accents)."""
    try:
        text = data[:_SAMPLE].decode("cp1252")
    except UnicodeDecodeError:
        return False
    letters = accented = 0
    for ch in text:
        if ch.isalpha():
            letters += 1
            if ord(ch) > 0x7F:
                if "LATIN" not in unicodedata.name(ch, ""):
                    return False
                accented += 1
        elif ord(ch) > 0x7F and ch not in _CP1252_PUNCTUATION:
            return False
    return letters > 0 and accented / letters <= 0.4


def _checked(text: str, name: str) -> str:
    if text_looks_binary(text):
        raise SkipFile(f"{name}: looks binary (too many control characters)", reason="binary")
    return normalise_newlines(text).removeprefix("\ufeff")


def _doc(data: bytes, text: str, kind: str, encoding: str, name: str, *,
         title: str | None = None, meta: dict[str, Any] | None = None) -> Document:
    return Document(text=require_text(text, name), content_hash=sha256_hex(data), kind=kind,
                    title=title, meta={"encoding": encoding, **(meta or {})})


def read_txt(data: bytes, name: str) -> Document:
    text, encoding = decode(data, name)
    return _doc(data, text, "txt", encoding, name)


def read_md(data: bytes, name: str) -> Document:
    text, encoding = decode(data, name)
    match = _MD_TITLE.search(_FENCE.sub("", text))
    title = match.group(1).strip() if match else None
    return _doc(data, text, "md", encoding, name, title=title or None)


def read_csv(data: bytes, name: str, *, tab: bool = False) -> Document:
    """A spreadsheet export as a Markdown table: readable, and its rows become candidates
    with their owner and due columns, like a table in a note."""
    text, encoding = decode(data, name)
    try:
        lines = _csv_lines(text, tab=tab)
    except csv.Error:
        return _doc(data, text, "csv", encoding, name, meta={"csv_invalid": True})
    return _doc(data, "\n".join(lines), "csv", encoding, name,
                meta={"rows": max(0, len(lines) - 2)})


def _cell(value: str) -> str:
    return " ".join(value.replace("|", "/").split())


def _csv_lines(text: str, *, tab: bool) -> list[str]:
    dialect: type[csv.Dialect] | csv.Dialect = csv.excel_tab if tab else csv.excel
    if not tab:
        try:
            dialect = csv.Sniffer().sniff(text[:64 * 1024], delimiters=",;\t|")
        except csv.Error:
            pass
    rows = [r for r in csv.reader(io.StringIO(text), dialect) if any(c.strip() for c in r)]
    if not rows:
        return []
    width = max(len(r) for r in rows)
    header = [_cell(h) or f"column {i + 1}" for i, h in
              enumerate(rows[0] + [""] * (width - len(rows[0])))]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * width]
    for row in rows[1:]:
        cells = [_cell(v) for v in row] + [""] * (width - len(row))
        out.append("| " + " | ".join(cells) + " |")
    return out


def read_json(data: bytes, name: str) -> Document:
    """Record arrays as tables, the rest as ``key.path: value`` lines (see records.py); invalid
    JSON is still text, so it is kept as is."""
    text, encoding = decode(data, name)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return _doc(data, text, "json", encoding, name, meta={"json_invalid": True})
    try:
        lines = render_json(value)
    except RecursionError:
        return _doc(data, text, "json", encoding, name)
    return _doc(data, "\n".join(lines), "json", encoding, name)
