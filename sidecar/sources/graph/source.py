"""Outlook mail and Teams chats via Microsoft Graph, read incrementally for cloud agents.

Outlook resumes from a receivedDateTime cursor (minus an overlap, for late-indexed mail) and
keeps per-message state, so nothing is extracted twice and an unfinished message holds the
cursor back. Teams groups each conversation's new messages into one document per run. HTTP
errors are classified once here; :func:`sidecar.errors.retry` does all retrying.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from sidecar.domain import Agent
from sidecar.errors import NeedsReauth, PermanentError
from sidecar.readers import SkipFile, html_to_text, read_bytes
from sidecar.readers.base import message_text
from sidecar.sources.base import Progress, Skip, Source, SourceDocument, WorkItem
from sidecar.sources.http import ApiClient, TokenProvider
from sidecar.store import Store
from sidecar.store.files import FileState

GRAPH = "https://graph.microsoft.com/v1.0"
#: Mail can be indexed after its receivedDateTime: re-list this much before the cursor.
OVERLAP = timedelta(minutes=10)
_SETTLED = ("skipped", "refused")

def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def graph_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def pages(client: ApiClient, session: aiohttp.ClientSession, url: str,
                params: Mapping[str, str] | None, *, what: str
                ) -> AsyncIterator[list[dict[str, Any]]]:
    """Each page's ``value``, following ``@odata.nextLink`` to the end."""
    target: str | URL = url
    while True:
        body = await client.get(session, target, params, what=what)
        yield list(body.get("value") or [])
        nxt = body.get("@odata.nextLink")
        if not nxt:
            return
        target, params = URL(nxt, encoded=True), None


def _content_hash(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


class _GraphSource(Source):
    provider = ""

    def __init__(self, agent: Agent, store: Store, *, run_id: str | None,
                 token_provider: TokenProvider, api_base: str = GRAPH, lookback_days: int = 7,
                 now: Callable[[], datetime] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.agent, self.store, self.run_id = agent, store, run_id
        self.files = store.files
        self.api = api_base.rstrip("/")
        self.lookback = timedelta(days=lookback_days)
        self.now = now or (lambda: datetime.now(UTC))
        self.client = ApiClient(token_provider, service="Microsoft Graph", sleep=sleep)
        self.config: Mapping[str, Any] = agent.filter_config or {}
        self._cursor: dict[str, Any] = {}
        self._messages: dict[str, dict[str, Any]] = {}  # Outlook: listed mail by id
        self._order: list[tuple[str, datetime]] = []  # Outlook: every listed id, oldest first
        self._open: set[str] = set()  # Outlook: yielded, not yet done/skipped
        self._yielded: set[str] = set()  # Outlook: yielded this run
        self._key: str | None = None
        self._groups: dict[str, dict[str, Any]] = {}  # Teams: item key → conversation batch

    async def _load_cursor(self) -> dict[str, Any]:
        self._cursor = await self.store.cursors.get(self.agent.id) or {}
        return self._cursor

    def _settle(self, key: str) -> dict[str, Any] | None:
        """Note ``key`` as done or skipped; the cursor it lets advance to, if it moved."""
        return None

    def progress(self, doc: SourceDocument, extraction_key: str, result: Mapping[str, Any]
                 ) -> Progress:
        return Progress(self.agent.id, doc.item.key, "extracted", extraction_key,
                        content_hash=doc.content_hash, result=dict(result), run_id=self.run_id,
                        cursor=self._settle(doc.item.key))

    async def skipped(self, skip: Skip) -> None:
        await self.store.record_progress(Progress(
            self.agent.id, skip.item.key, "skipped", "*",
            result={"reason": skip.reason, "message": skip.message}, run_id=self.run_id,
            cursor=self._settle(skip.item.key)))


class OutlookSource(_GraphSource):
    """New mail since the cursor; one document per message (body plus readable attachments)."""

    provider = "outlook"

    def _query(self, since: datetime) -> tuple[str, dict[str, str]]:
        folder = self.config.get("folder")
        path = (f"/me/mailFolders/{quote(str(folder), safe='')}/messages" if folder
                else "/me/messages")
        params = {"$top": "50",
                  "$select": "id,subject,from,receivedDateTime,body,hasAttachments,webLink,"
                             "conversationId"}
        if self.config.get("search"):  # Graph refuses $search with $filter or $orderby
            params["$search"] = '"' + str(self.config["search"]).replace('"', "") + '"'
            return self.api + path, params
        clauses = [f"receivedDateTime ge {graph_time(since)}"]
        quoted = {k: str(v).replace("'", "''") for k, v in self.config.items()
                  if k in ("from", "subject") and isinstance(v, str)}
        if "from" in quoted:
            clauses.append(f"from/emailAddress/address eq '{quoted['from']}'")
        if "subject" in quoted:
            clauses.append(f"contains(subject,'{quoted['subject']}')")
        params.update({"$filter": " and ".join(clauses), "$orderby": "receivedDateTime asc"})
        return self.api + path, params

    def _wanted(self, msg: Mapping[str, Any], since: datetime) -> bool:
        """Client-side check too: $search cannot filter, and it is cheap insurance."""
        if not msg.get("id") or parse_time(msg["receivedDateTime"]) < since:
            return False
        sender = str(((msg.get("from") or {}).get("emailAddress") or {}).get("address", ""))
        wanted = self.config.get("from") or []
        senders = {str(s).lower() for s in ([wanted] if isinstance(wanted, str) else wanted)}
        subject = str(self.config.get("subject") or "").lower()
        return ((not senders or sender.lower() in senders)
                and subject in str(msg.get("subject") or "").lower())

    async def pending(self, extraction_key: str, *, full: bool = False
                      ) -> AsyncIterator[WorkItem]:
        cursor = await self._load_cursor()
        since = self.now() - self.lookback
        if cursor.get("since") and not full:
            since = parse_time(cursor["since"]) - OVERLAP
        known = await self.files.all(self.agent.id)
        url, params = self._query(since)
        async with self.client.session() as session:
            async for page in pages(self.client, session, url, params, what="list Outlook mail"):
                for msg in page:
                    if self._wanted(msg, since):
                        self._messages[msg["id"]] = msg
        self._order = sorted(((m["id"], parse_time(m["receivedDateTime"]))
                              for m in self._messages.values()), key=lambda p: (p[1], p[0]))
        self._key = extraction_key
        for mid, received in self._order:
            if not full and _settled(known.get(mid), extraction_key):
                continue
            self._open.add(mid)
            self._yielded.add(mid)
            msg = self._messages[mid]
            yield WorkItem(key=mid, label=str(msg.get("subject") or "(no subject)"),
                           version={"received": graph_time(received)})

    async def read(self, item: WorkItem) -> SourceDocument | Skip:
        msg = self._messages[item.key]
        text = _body_text(msg)
        sender = (msg.get("from") or {}).get("emailAddress") or {}
        written_by = f"{sender.get('name', '')} <{sender.get('address', '')}>"
        notes: list[str] = []
        parts = [message_text(msg.get("subject") or "", written_by, msg["receivedDateTime"],
                              text.strip())]
        if msg.get("hasAttachments"):
            try:
                async with self.client.session() as session:
                    parts += await self._attachments(session, item.key, notes)
            except NeedsReauth:
                raise
            except PermanentError as exc:
                reason = "permission" if exc.code == "forbidden" else "unreadable"
                return Skip(item, reason, f"{item.label}: attachments unavailable ({exc})")
        text = "\n\n".join(p for p in parts if p.strip())
        return SourceDocument(
            item=item, text=text, content_hash=_content_hash(item.key, text),
            date=parse_time(msg["receivedDateTime"]), kind="email",
            title=msg.get("subject") or None, sender=written_by,
            meta={"title": msg.get("subject"), "message_id": item.key,
                  "from": sender.get("address"), "web_link": msg.get("webLink"),
                  "conversation_id": msg.get("conversationId"),  # replies find their thread
                  "attachment_notes": notes})

    async def _attachments(self, session: aiohttp.ClientSession, mid: str,
                           notes: list[str]) -> list[str]:
        url = f"{self.api}/me/messages/{quote(mid, safe='')}/attachments"
        out: list[str] = []
        limit = self.agent.max_file_bytes
        async for page in pages(self.client, session, url, None, what="list attachments"):
            for att in page:
                name = str(att.get("name") or "attachment")
                if att.get("@odata.type") != "#microsoft.graph.fileAttachment":
                    continue  # item/reference attachments carry no bytes here
                try:
                    if int(att.get("size") or 0) > limit:
                        raise SkipFile(f"{name}: over the size limit", reason="too_large")
                    data = base64.b64decode(att.get("contentBytes") or "", validate=True)
                    doc = await asyncio.to_thread(read_bytes, data, name=name, max_bytes=limit)
                    out.append(f"--- Attachment: {name} ---\n{doc.text.strip()}")
                except (binascii.Error, ValueError):
                    notes.append(f"{name}: undecodable content")
                except SkipFile as exc:
                    notes.append(exc.message)
        return out

    def _advance(self) -> dict[str, Any] | None:
        """Move the cursor to the newest receivedDateTime with everything up to it settled;
        the new cursor, or None when it did not move."""
        mark = None
        for mid, received in self._order:
            if mid in self._open:
                break
            mark = received
        old = self._cursor.get("since")
        if mark is None or (old and parse_time(old) >= mark):
            return None
        self._cursor = {**self._cursor, "since": graph_time(mark)}
        return self._cursor

    def _settle(self, key: str) -> dict[str, Any] | None:
        self._open.discard(key)
        return self._advance()

    async def finish(self) -> list[str]:
        # the store, not memory, says what is settled: a progress whose transaction was
        # rolled back must hold the cursor back
        known = await self.files.all(self.agent.id)
        self._open |= {mid for mid in self._yielded if not _settled(known.get(mid), self._key)}
        self._cursor = await self.store.cursors.get(self.agent.id) or {}
        cursor = self._advance()
        if cursor is not None:
            await self.store.cursors.set(self.agent.id, cursor)
        return []


class TeamsSource(_GraphSource):
    """Each chat's (and listed channel's) new messages as one document per conversation."""

    provider = "teams"

    async def pending(self, extraction_key: str, *, full: bool = False
                      ) -> AsyncIterator[WorkItem]:
        cursor = await self._load_cursor()
        convs = dict(cursor.get("conversations") or {})
        self._cursor = {**cursor, "conversations": convs}
        known = await self.files.all(self.agent.id)
        floor = self.now() - self.lookback
        async with self.client.session() as session:
            for conv, topic, url in await self._conversations(session):
                pos = {} if full else convs.get(conv) or {}
                since = parse_time(pos["since"]) if pos.get("since") else floor
                msgs = await self._new_messages(session, url, since, set(pos.get("ids") or []))
                if not msgs:
                    continue
                last = msgs[-1]
                key = f"{conv}:{last['id']}"
                if not full and key in known and known[key].status != "deleted":
                    continue
                self._groups[key] = {"conv": conv, "topic": topic, "messages": msgs}
                yield WorkItem(key=key, label=topic,
                               version={"conversation": conv, "last_id": last["id"],
                                        "last_created": last["createdDateTime"],
                                        "count": len(msgs)})

    async def _conversations(self, session: aiohttp.ClientSession
                             ) -> list[tuple[str, str, str]]:
        """(cursor key, title, messages URL) of each chat and configured channel."""
        out: list[tuple[str, str, str]] = []
        only = set(self.config.get("chats") or [])
        if self.config.get("include_chats", True):
            async for page in pages(self.client, session, f"{self.api}/me/chats",
                                                {"$expand": "members", "$top": "50"},
                                                what="list Teams chats"):
                for chat in page:
                    if only and chat.get("id") not in only:
                        continue
                    names = ", ".join(str(m["displayName"]) for m in chat.get("members") or []
                                      if m.get("displayName"))
                    topic = chat.get("topic") or (f"Chat with {names}" if names
                                                  else "Teams chat")
                    url = f"{self.api}/me/chats/{quote(chat['id'], safe='')}/messages"
                    out.append((f"chat:{chat['id']}", topic, url))
        for ch in self.config.get("channels") or []:
            team, channel, name = _channel(ch)
            url = (f"{self.api}/teams/{quote(team, safe='')}/channels/"
                   f"{quote(channel, safe='')}/messages")
            out.append((f"channel:{team}/{channel}", name, url))
        return out

    async def _new_messages(self, session: aiohttp.ClientSession, url: str, since: datetime,
                            seen: set[str]) -> list[dict[str, Any]]:
        """Messages created at/after ``since`` and not in ``seen``, oldest first."""
        params = {"$top": "50"}
        if "/chats/" in url:  # chats filter server-side; channel messages cannot
            params.update({"$orderby": "createdDateTime desc", "$filter": "createdDateTime gt "
                           + graph_time(since - timedelta(seconds=1))})
        found: list[dict[str, Any]] = []
        async for page in pages(self.client, session, url, params, what="list Teams messages"):
            found += [m for m in page if parse_time(m["createdDateTime"]) >= since
                      and m.get("id") not in seen and not m.get("deletedDateTime")
                      and m.get("messageType", "message") == "message"]
            if any(parse_time(m["createdDateTime"]) < since for m in page):
                break  # newest first: the rest of the history is older
        found.sort(key=lambda m: (parse_time(m["createdDateTime"]), m["id"]))
        return found

    async def read(self, item: WorkItem) -> SourceDocument | Skip:
        group = self._groups[item.key]
        lines = [group["topic"]]
        for msg in group["messages"]:
            if text := " ".join(_body_text(msg).split()):
                when = parse_time(msg["createdDateTime"]).strftime("%Y-%m-%d %H:%M")
                lines.append(f"[{when}] {_sender(msg)}: {text}")
        if len(lines) == 1:
            return Skip(item, "empty", f"{item.label}: new messages carry no text")
        text = "\n".join(lines)
        last = group["messages"][-1]
        return SourceDocument(
            item=item, text=text, content_hash=_content_hash(item.key, text),
            date=parse_time(last["createdDateTime"]), kind="chat", title=group["topic"],
            meta={"title": group["topic"], "conversation": group["conv"],
                  "message_ids": [m["id"] for m in group["messages"]]})

    def _settle(self, key: str) -> dict[str, Any] | None:
        group = self._groups.get(key)
        if group is None:
            return None
        newest = parse_time(group["messages"][-1]["createdDateTime"])
        recent = [m["id"] for m in group["messages"]  # same second: the next filter re-lists
                  if parse_time(m["createdDateTime"]) >= newest - timedelta(seconds=1)]
        self._cursor["conversations"][group["conv"]] = {"since": graph_time(newest),
                                                        "ids": recent}
        return copy.deepcopy(self._cursor)  # the write must not see later conversations


def _settled(state: FileState | None, extraction_key: str | None) -> bool:
    """Skipped or refused for good, or extracted under this key."""
    return state is not None and (state.status in _SETTLED or (
        state.status == "extracted" and state.extraction_key == extraction_key))


def _body_text(msg: Mapping[str, Any]) -> str:
    body = msg.get("body") or {}
    content = str(body.get("content") or "")
    return html_to_text(content) if body.get("contentType") == "html" else content


def _sender(msg: Mapping[str, Any]) -> str:
    who = msg.get("from") or {}
    names = [(who.get(k) or {}).get("displayName") for k in ("user", "application", "device")]
    return next((str(n) for n in names if n), "Unknown")


def _channel(spec: Any) -> tuple[str, str, str]:
    """``"team-id/channel-id"`` or ``{"team": …, "channel": …, "name": …}``."""
    if isinstance(spec, str) and spec.count("/") == 1:
        spec = dict(zip(("team", "channel"), spec.split("/"), strict=True))
    if isinstance(spec, Mapping) and spec.get("team") and spec.get("channel"):
        return str(spec["team"]), str(spec["channel"]), str(
            spec.get("name") or f"Channel {spec['channel']}")
    raise PermanentError(f"filter_config.channels: {spec!r} is not 'team-id/channel-id' or "
                         "{team, channel}", code="invalid_config")
