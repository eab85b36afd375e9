"""PDF text through pypdfium2, with encrypted, broken and scanned files told apart."""

from __future__ import annotations

import re
from typing import Any

from sidecar.readers.base import Document, SkipFile, normalise_newlines, sha256_hex

#: PDFium's FPDF_ERR_PASSWORD and FPDF_ERR_SECURITY.
_PASSWORD_ERRORS = (4, 6)
_PDFIUM_DETAIL = re.compile(r"PDFium: ([^)]+)")


def read_pdf(data: bytes, name: str) -> Document:
    import pypdfium2 as pdfium

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
        pages, failed = _pages_text(pdf, pdfium.PdfiumError)
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


def _pages_text(pdf: Any, error: type[Exception]) -> tuple[list[str], list[int]]:
    """Each page's text (``""`` for a page that failed) and the 1-based failed pages."""
    pages: list[str] = []
    failed: list[int] = []
    for index in range(len(pdf)):
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
