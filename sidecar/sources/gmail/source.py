"""Gmail agents: new mail (and its attachments) since the last run, read through the Gmail API.

Progress is two things kept in SQLite: per-message state (the file_state table keyed by
message id) and a cursor (a time bound plus a history id). ``progress`` hands both to the
store, written with the message's records, so the bound only moves past a message once its
records are queued.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from sidecar import clock
from sidecar.domain import Agent
from sidecar.errors import ConfigError, NotFound
from sidecar.readers.base import message_text
from sidecar.sources.base import Progress, Skip, Source, SourceDocument, WorkItem
from sidecar.sources.gmail.signin import (
    DEFAULT_API_BASE,
    GmailAuth,
    google_tokens,
    keyring_credentials,
)
from sidecar.sources.http import ApiClient
from sidecar.store import Store
from sidecar.store.files import FileState

log = logging.getLogger(__name__)

#: Attachment types read into the message text.
ATTACHMENT_EXTENSIONS = (".pdf", ".docx", ".txt", ".md", ".csv")
#: Later runs re-list this far before the cursor: Gmail's internalDate can lag delivery.
OVERLAP = timedelta(hours=1)
PAGE_SIZE = 100


def _quote(value: str) -> str:
    value = value.replace('"', "").strip()
    return f'"{value}"' if any(c.isspace() or c in "(){}:" for c in value) else value


def _terms(fc: Mapping[str, Any], key: str, op: str) -> str:
    raw = fc.get(key)
    if raw in (None, "", []):
        return ""
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"agent.filter_config.{key}: must be a string or a list of strings",
                          field=f"agent.filter_config.{key}")
    terms = [f"{op}:{_quote(v)}" for v in values if v.strip()]
    if len(terms) <= 1:
        return "".join(terms)
    return "{" + " ".join(terms) + "}"  # any of them


def build_query(filter_config: Mapping[str, Any], after: int | None = None) -> str:
    """Gmail search from filter_config: labels/from (any of), subject, free ``query``, after."""
    parts = [_terms(filter_config, key, op)
             for key, op in (("labels", "label"), ("from", "from"), ("subject", "subject"))]
    free = filter_config.get("query")
    if free:
        parts.append(f"({str(free).strip()})")
    if after is not None:
        parts.append(f"after:{int(after)}")
    return " ".join(p for p in parts if p)


def _b64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _headers(part: Mapping[str, Any]) -> dict[str, str]:
    return {h.get("name", "").lower(): h.get("value", "") for h in part.get("headers") or []}


def _decode(part: Mapping[str, Any]) -> str:
    """A text part's body in its declared charset (Gmail does not transcode)."""
    data = _b64((part.get("body") or {}).get("data") or "")
    ctype = Message()
    ctype["content-type"] = _headers(part).get("content-type", "text/plain")
    try:
        return data.decode(ctype.get_content_charset("utf-8"), errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def walk(payload: Mapping[str, Any]) -> tuple[list[str], list[str], list[Mapping[str, Any]]]:
    """(text/plain bodies, text/html bodies, attachment parts) of a format=full payload."""
    plain: list[str] = []
    htmls: list[str] = []
    attachments: list[Mapping[str, Any]] = []
    stack = [payload]
    while stack:
        part = stack.pop(0)
        body = part.get("body") or {}
        mime = str(part.get("mimeType", "")).lower()
        if part.get("filename"):
            attachments.append(part)
        elif part.get("parts"):
            stack[0:0] = part["parts"]
        elif mime == "text/plain" and body.get("data"):
            plain.append(_decode(part))
        elif mime == "text/html" and body.get("data"):
            htmls.append(_decode(part))
    return plain, htmls, attachments


def message_date(headers: Mapping[str, str], internal_ms: int | None) -> datetime | None:
    """The Date header (tz-aware; UTC when it names none), else Gmail's internalDate."""
    try:
        dt = parsedate_to_datetime(headers.get("date", ""))
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    except (TypeError, ValueError, IndexError):
        pass
    return datetime.fromtimestamp(internal_ms / 1000, UTC) if internal_ms else None


def _html_text(htmls: list[str]) -> str:
    from sidecar.readers import html_to_text

    return "\n\n".join(html_to_text(h) for h in htmls).strip()


class GmailSource(Source):
    """Lists matching messages (history as a cheap "anything new?"), reads them, remembers."""

    def __init__(self, agent: Agent, store: Store, *, run_id: str | None,
                 credentials_factory: Callable[[str], GmailAuth] = keyring_credentials,
                 api_base: str = DEFAULT_API_BASE, lookback_days: int = 7,
                 now: Callable[[], datetime] = clock.now,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 timeout: float = 60.0) -> None:
        if not agent.account:
            raise ConfigError("agent.account: a Gmail agent needs the account's email",
                              field="agent.account")
        self.agent = agent
        self.account = agent.account
        self.store = store
        self.files = store.files
        self.run_id = run_id
        self.client = ApiClient(google_tokens(credentials_factory(agent.account)),
                                service="Gmail", sleep=sleep, timeout=timeout)
        self.api = api_base.rstrip("/") + "/gmail/v1/users/me"
        self.lookback = timedelta(days=lookback_days)
        self.now = now
        self.filter_sig = build_query(agent.filter_config)
        self._dates: dict[str, int] = {}  # message id → internalDate (ms), this run's listing
        self._outstanding: set[str] = set()
        self._yielded: list[str] = []  # this run's items, for finish() to check in the store
        self._listed_at: int | None = None
        self._history_id: str | None = None
        self._last_page: dict[str, Any] = {}
        self._key: str | None = None

    async def _get(self, session: aiohttp.ClientSession, path: str,
                   params: Mapping[str, Any] | list[tuple[str, str]] | None = None
                   ) -> dict[str, Any]:
        return await self.client.get(session, f"{self.api}/{path}", params,
                                     what=f"Gmail {path.split('/')[0]}")

    async def _paged(self, session: aiohttp.ClientSession, path: str, key: str,
                     params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = await self._get(session, path, {**params, **({"pageToken": token}
                                                               if token else {})})
            for entry in page.get(key) or []:
                yield entry
            self._last_page = page
            token = page.get("nextPageToken")
            if not token:
                return

    async def _history_added(self, session: aiohttp.ClientSession, start: str
                             ) -> list[str] | None:
        """Message ids added since ``start``; None when that id is too old (404)."""
        added: list[str] = []
        try:
            async for h in self._paged(session, "history", "history",
                                       {"startHistoryId": start, "historyTypes": "messageAdded",
                                        "maxResults": PAGE_SIZE}):
                added += [str(a["message"]["id"]) for a in h.get("messagesAdded") or []]
        except NotFound:
            log.info("gmail history %s expired for %s; listing by query", start, self.account)
            return None
        self._history_id = str(self._last_page.get("historyId") or start)
        return list(dict.fromkeys(added))

    async def pending(self, extraction_key: str, *, full: bool = False
                      ) -> AsyncIterator[WorkItem]:
        now = self.now()
        cursor = await self.store.cursors.get(self.agent.id) or {}
        self._key = extraction_key
        fresh = full or "after" not in cursor or (cursor.get("filter"), cursor.get("key")) != (
            self.filter_sig, extraction_key)
        after = int((now - self.lookback).timestamp())
        if "after" in cursor and cursor.get("filter") == self.filter_sig:
            resume = int(cursor["after"] - OVERLAP.total_seconds())  # never skip unsettled mail
            after = min(after, resume) if fresh else resume
        self._listed_at = int(now.timestamp())
        described: dict[str, WorkItem | None] = {}
        items: list[WorkItem] = []
        async with self.client.session() as session:
            added = None
            if not fresh and cursor.get("history_id"):
                added = await self._history_added(session, str(cursor["history_id"]))
                if added == []:
                    return  # nothing added since the last complete listing
            if added is None:
                profile = await self._get(session, "profile")
                self._history_id = str(profile.get("historyId") or "") or None
            known = await self.files.all(self.agent.id)

            def settled(mid: str) -> bool:
                state = known.get(mid)
                return not full and _settled(state, extraction_key)

            for mid in added or []:  # late arrivals older than the bound: widen the query
                if not settled(mid):
                    described[mid] = await self._describe(session, mid)
                    if mid in self._dates:
                        after = min(after, self._dates[mid] // 1000 - 1)
            query = build_query(self.agent.filter_config, after)
            async for ref in self._paged(session, "messages", "messages",
                                         {"q": query, "maxResults": PAGE_SIZE}):
                mid = str(ref["id"])
                if settled(mid):
                    continue
                item = described[mid] if mid in described else await self._describe(session,
                                                                                      mid)
                if item is not None:
                    items.append(item)
        items.sort(key=lambda w: (self._dates[w.key], w.key))
        for item in items:
            self._outstanding.add(item.key)
            self._yielded.append(item.key)
            yield item

    async def _describe(self, session: aiohttp.ClientSession, mid: str) -> WorkItem | None:
        try:
            meta = await self._get(session, f"messages/{mid}", [
                ("format", "metadata"), ("metadataHeaders", "Subject")])
        except NotFound:
            return None  # deleted since the listing
        internal = int(meta.get("internalDate") or 0)
        self._dates[mid] = internal
        subject = _headers(meta.get("payload") or {}).get("subject", "").strip()
        return WorkItem(key=mid, label=subject or mid, version={"internalDate": internal})

    async def read(self, item: WorkItem) -> SourceDocument | Skip:
        async with self.client.session() as session:
            try:
                msg = await self._get(session, f"messages/{item.key}", {"format": "full"})
            except NotFound:
                return Skip(item, "vanished", f"message {item.label!r} was deleted before it "
                                              "could be read")
            payload = msg.get("payload") or {}
            headers = _headers(payload)
            plain, htmls, parts = walk(payload)
            body = "\n\n".join(t.strip() for t in plain if t.strip())
            if not body and htmls:
                body = await asyncio.to_thread(_html_text, htmls)
            texts, skipped = await self._attachments(session, item.key, parts)
        if not body and not texts:
            return Skip(item, "empty", f"message {item.label!r} has no readable text")
        internal = int(msg.get("internalDate") or item.version.get("internalDate") or 0)
        self._dates.setdefault(item.key, internal)
        subject = headers.get("subject", "")
        text = message_text(subject, headers.get("from", ""), headers.get("date", ""), body)
        for name, content in texts:
            text += f"\n\n--- Attachment: {name} ---\n{content}"
        digest = hashlib.sha256(f"{item.key}\n{body}".encode()).hexdigest()
        return SourceDocument(
            item=item, text=text, content_hash=digest, date=message_date(headers, internal),
            kind="eml", title=subject or None, sender=headers.get("from") or None,
            meta={"title": subject or None, "message_id": item.key,
                              "thread_id": msg.get("threadId"), "from": headers.get("from"),
                              "attachments": [n for n, _ in texts],
                              "attachments_skipped": skipped})

    async def _attachments(self, session: aiohttp.ClientSession, mid: str,
                           parts: list[Mapping[str, Any]]
                           ) -> tuple[list[tuple[str, str]], list[str]]:
        from sidecar.readers import SkipFile, read_bytes

        texts: list[tuple[str, str]] = []
        skipped: list[str] = []
        limit = self.agent.max_file_bytes
        for part in parts:
            name = str(part["filename"])
            body = part.get("body") or {}
            if not name.lower().endswith(ATTACHMENT_EXTENSIONS):
                continue
            if int(body.get("size") or 0) > limit:
                skipped.append(f"{name}: over the size limit")
                continue
            try:
                if body.get("attachmentId"):
                    att = await self._get(session,
                                          f"messages/{mid}/attachments/{body['attachmentId']}")
                    data = _b64(att.get("data") or "")
                else:
                    data = _b64(body.get("data") or "")
                doc = await asyncio.to_thread(read_bytes, data, name=name, max_bytes=limit)
            except NotFound:
                skipped.append(f"{name}: no longer available")
            except SkipFile as exc:
                skipped.append(exc.message)
            else:
                texts.append((name, doc.text.strip()))
        return texts, skipped

    def _cursor(self) -> dict[str, Any]:
        """Safe resume point: before every message of this listing that is not yet settled."""
        listed_at = self._listed_at or int(self.now().timestamp())
        oldest = min((self._dates.get(k, 0) // 1000 for k in self._outstanding), default=None)
        return {"after": listed_at if oldest is None else min(oldest, listed_at),
                "history_id": None if self._outstanding else self._history_id,
                "filter": self.filter_sig, "key": self._key}

    def progress(self, doc: SourceDocument, extraction_key: str, result: Mapping[str, Any]
                 ) -> Progress:
        self._outstanding.discard(doc.item.key)
        return Progress(self.agent.id, doc.item.key, "extracted", extraction_key,
                        content_hash=doc.content_hash, mtime_ns=self._dates.get(doc.item.key),
                        result=dict(result), run_id=self.run_id, cursor=self._cursor())

    async def skipped(self, skip: Skip) -> None:
        self._outstanding.discard(skip.item.key)
        await self.store.record_progress(Progress(
            self.agent.id, skip.item.key, "skipped", "*",
            mtime_ns=self._dates.get(skip.item.key),
            result={"reason": skip.reason, "message": skip.message}, run_id=self.run_id,
            cursor=self._cursor()))

    async def finish(self) -> list[str]:
        if self._listed_at is not None:
            # the store, not memory, says what is settled: a progress whose transaction was
            # rolled back must hold the bound back
            known = await self.files.all(self.agent.id)
            self._outstanding |= {k for k in self._yielded if not _settled(known.get(k),
                                                                           self._key)}
            await self.store.cursors.set(self.agent.id, self._cursor())
        return []


def _settled(state: FileState | None, extraction_key: str | None) -> bool:
    return state is not None and (state.status == "skipped" or (
        state.status == "extracted" and state.extraction_key == extraction_key))
