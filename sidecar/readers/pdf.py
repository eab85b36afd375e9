"""PDF text through pypdfium2, with encrypted, broken and scanned files told apart."""

from __future__ import annotations

import re
import time
from typing import Any

from sidecar.readers.base import Document, SkipFile, normalise_newlines, sha256_hex
from sidecar.readers.sniff import inflated_size

#: PDFium's FPDF_ERR_PASSWORD and FPDF_ERR_SECURITY.
_PASSWORD_ERRORS = (4, 6)
_PDFIUM_DETAIL = re.compile(r"PDFium: ([^)]+)")
#: More pages than a document anyone takes tasks from; 600 KB of PDF can claim 100,000 (one
#: page object listed again and again), which would take minutes to read.
MAX_PAGES = 5_000
#: PDFium inflates a whole stream into memory before parsing it: a content stream, font or
#: form may unpack to this much (images are not decoded for text, they get more room) ...
_MAX_STREAM = 64 * 1024 * 1024
_MAX_IMAGE_STREAM = 256 * 1024 * 1024
#: ... and all of them together to this much (checking them costs ~3 s per GB).
_MAX_STREAMS_TOTAL = 1024 * 1024 * 1024
#: Reading stops between pages after this long: one slow page is bounded by the caps above,
#: this bounds the rest (a crafted stream shared by every page).
READ_SECONDS = 60.0
_FLATE_STREAM = re.compile(rb">>[\x00\t\n\x0c\r ]*stream(?:\r\n|\n|\r)")


def read_pdf(data: bytes, name: str) -> Document:
    import pypdfium2 as pdfium

    _check_streams(data, name)
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if _is_password_error(exc):
            raise SkipFile(f"{name}: password-protected PDF", reason="encrypted") from None
        raise SkipFile(f"{name}: damaged PDF that cannot be opened ({_detail(exc)})",
                       reason="corrupt") from None
    except Exception as exc:  # pypdfium2 may raise plain errors on odd input
        raise SkipFile(f"{name}: damaged PDF that cannot be opened ({_detail(exc)})",
                       reason="corrupt") from None
    try:
        if len(pdf) > MAX_PAGES:
            raise SkipFile(f"{name}: has {len(pdf):,} pages, over the {MAX_PAGES:,}-page limit",
                           reason="too_large")
        pages, failed = _pages_text(pdf, pdfium.PdfiumError, name)
        title = _title(pdf)
    finally:
        pdf.close()
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    meta: dict[str, Any] = {"pages": len(pages)}
    if failed:
        meta["unreadable_pages"] = failed
    if not text.strip():
        if failed and len(failed) == len(pages):
            raise SkipFile(f"{name}: damaged PDF, no page could be read", reason="corrupt")
        what = "no pages" if not pages else "no text layer (scanned or image-only PDF?)"
        raise SkipFile(f"{name}: {what}", reason="empty")
    return Document(text=text, content_hash=sha256_hex(data), kind="pdf", title=title, meta=meta)


def _detail(exc: Exception) -> str:
    """``Failed to load document (PDFium: Data format error).`` → ``data format error``."""
    match = _PDFIUM_DETAIL.search(str(exc))
    if match:
        return match.group(1).strip().lower()
    return str(exc).strip().rstrip(".") or type(exc).__name__


def _is_password_error(exc: Exception) -> bool:
    code = getattr(exc, "err_code", None)
    if code in _PASSWORD_ERRORS:
        return True
    message = str(exc).lower()
    return "password" in message or "security" in message


def _check_streams(data: bytes, name: str) -> None:
    """Refuse a PDF whose compressed streams unpack to more than PDFium should hold."""
    total = 0
    for match in _FLATE_STREAM.finditer(data):
        end = match.start()
        obj = data.rfind(b"obj", max(0, end - 4096), end)
        head = data[obj if obj >= 0 else max(0, end - 4096):end]  # the stream's dictionary
        if b"/FlateDecode" not in head and b"/Fl " not in head and b"/Fl/" not in head:
            continue
        limit = _MAX_IMAGE_STREAM if b"/Image" in head else _MAX_STREAM
        size = inflated_size(memoryview(data)[match.end():], limit, wbits=15) or 0
        total += size
        if size > limit or total > _MAX_STREAMS_TOTAL:
            what = (f"a stream unpacks to over {limit // (1024 * 1024)} MB" if size > limit
                    else f"its streams unpack to over {_MAX_STREAMS_TOTAL // 1024 ** 3} GB")
            raise SkipFile(f"{name}: {what} (a decompression bomb?)", reason="too_large")


def _pages_text(pdf: Any, error: type[Exception], name: str) -> tuple[list[str], list[int]]:
    """Each page's text (``""`` for a page that failed) and the 1-based failed pages."""
    pages: list[str] = []
    failed: list[int] = []
    deadline = time.monotonic() + READ_SECONDS
    for index in range(len(pdf)):
        if time.monotonic() > deadline:
            raise SkipFile(f"{name}: reading took over {READ_SECONDS:.0f} s (stopped at page "
                           f"{index + 1:,} of {len(pdf):,})", reason="too_large")
        page = textpage = None
        try:
            page = pdf[index]
            textpage = page.get_textpage()
            pages.append(normalise_newlines(textpage.get_text_range()))
        except (error, ValueError, OSError, RuntimeError):
            pages.append("")
            failed.append(index + 1)
        finally:
            if textpage is not None:
                textpage.close()
            if page is not None:
                page.close()
    return pages, failed


def _title(pdf: Any) -> str | None:
    try:
        title = pdf.get_metadata_dict().get("Title")
    except Exception:
        return None
    if not isinstance(title, str):
        return None
    title = title.strip().replace("\x00", "")
    return title or None
