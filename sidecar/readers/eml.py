"""Saved emails (.eml): headers, the readable body and the names of the attachments."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import parsedate_to_datetime
from typing import Any

from sidecar.readers.base import (
    Document,
    SkipFile,
    message_text,
    normalise_newlines,
    sha256_hex,
)
from sidecar.readers.html import html_to_text
from sidecar.readers.sniff import binary_reason


def read_eml(data: bytes, name: str) -> Document:
    reason = binary_reason(data)
    if reason is not None:
        raise SkipFile(f"{name}: {reason}", reason="binary")
    try:
        msg = message_from_bytes(data, policy=policy.default)
    except Exception as exc:  # the parser is lenient; this is a bug in it, not in the file
        raise SkipFile(f"{name}: email could not be parsed ({exc})", reason="corrupt") from None
    assert isinstance(msg, EmailMessage)
    subject = _header(msg, "subject")
    sender = _header(msg, "from")
    to = _header(msg, "to")
    date_raw = _header(msg, "date")
    body_part, body = _body(msg)
    if not (subject or body).strip():
        raise SkipFile(f"{name}: email has no subject and no text body", reason="empty")
    text = message_text(subject, sender, date_raw or None, body.strip())
    meta: dict[str, Any] = {"from": sender, "to": to, "subject": subject}
    for key in ("cc", "message-id", "in-reply-to", "references"):  # threads: sidecar.threads
        value = _header(msg, key)
        if value:
            meta[key.replace("-", "_")] = value
    meta["attachments"] = _attachments(msg, body_part)
    return Document(text=text.strip(), content_hash=sha256_hex(data), kind="eml",
                    title=subject or None, date=_date(msg, date_raw), meta=meta,
                    sender=sender or None)


def _header(msg: EmailMessage, name: str) -> str:
    """A header as text; a header the policy cannot parse falls back to its raw value."""
    try:
        value = msg.get(name)
        if value is None:
            return ""
        if not getattr(value, "defects", None):
            return " ".join(str(value).split())
    except Exception:
        pass
    for key, raw in msg.raw_items():
        if key.lower() == name:
            return " ".join(str(raw).split())
    return ""


def _date(msg: EmailMessage, raw: str) -> datetime | None:
    when: datetime | None = None
    try:
        header = msg.get("date")
        when = getattr(header, "datetime", None)
    except Exception:
        when = None
    if when is None and raw:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
    if when is None:
        return None
    # "-0000" means "UTC, sender's zone unknown": the instant is still known.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _body(msg: EmailMessage) -> tuple[Message | None, str]:
    """The part used as body (None if none) and its readable text: plain text preferred."""
    for kind in ("plain", "html"):
        try:
            part = msg.get_body(preferencelist=(kind,))
        except Exception:
            part = None
        if part is None:
            continue
        content = _content(part)
        if kind == "html":
            content = html_to_text(content)
        if content.strip():
            return part, normalise_newlines(content)
    return None, ""


def _content(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return content
    except Exception:  # unknown charset, broken transfer encoding …
        pass
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    return ""


def _attachments(msg: EmailMessage, body_part: Message | None) -> list[str]:
    names: list[str] = []
    for part in msg.walk():
        if part is body_part or part.is_multipart():
            continue
        try:
            filename = part.get_filename()
            disposition = part.get_content_disposition()
        except Exception:
            continue
        if filename:
            names.append(" ".join(str(filename).split()))
        elif disposition == "attachment":
            names.append(f"(unnamed {part.get_content_type()})")
    return names
