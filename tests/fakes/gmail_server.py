"""A fake Gmail API + Google token endpoint on 127.0.0.1, with the real wire shapes.

Google's services are unreachable from the tests, so this serves messages.list/get,
attachments.get, history.list, users.getProfile and ``POST /token`` (refresh and
authorization-code grants with PKCE), checks every Authorization header, and can be told
to fail (429 with Retry-After, 5xx, 401) on chosen calls.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

SCOPE = "https://www.googleapis.com/auth/gmail.readonly"


def b64url(data: bytes) -> str:
    """Gmail's body encoding: base64url without padding."""
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def _error(status: int, message: str, reason: str, state: str,
           headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message, "errors": [
        {"message": message, "domain": "global", "reason": reason}], "status": state}},
        status=status, headers=headers)


def _not_found() -> web.Response:
    return _error(404, "Requested entity was not found.", "notFound", "NOT_FOUND")


def _unauthenticated() -> web.Response:
    return _error(401, "Request had invalid authentication credentials.", "authError",
                  "UNAUTHENTICATED")


@dataclass
class Failure:
    """Answer the ``nth`` call (1-based) of ``endpoint`` with ``status``."""

    endpoint: str
    nth: int
    status: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeGmail:
    email: str = "me@example.com"
    page_size: int = 2
    client_id: str = "client-id"
    client_secret: str = "client-secret"
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    attachments: dict[tuple[str, str], bytes] = field(default_factory=dict)
    history_id: int = 1000
    #: history.list answers 404 for a startHistoryId below this (Gmail keeps ~a week).
    oldest_history: int = 0
    history: list[tuple[int, str]] = field(default_factory=list)
    access_tokens: set[str] = field(default_factory=set)
    refresh_tokens: set[str] = field(default_factory=set)
    codes: dict[str, str] = field(default_factory=dict)  # code → PKCE challenge
    failures: list[Failure] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    _issued: int = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        base = "/gmail/v1/users/me"
        app.router.add_get(f"{base}/profile", self._profile)
        app.router.add_get(f"{base}/messages", self._list)
        app.router.add_get(f"{base}/messages/{{id}}", self._message)
        app.router.add_get(f"{base}/messages/{{id}}/attachments/{{aid}}", self._attachment)
        app.router.add_get(f"{base}/history", self._history)
        app.router.add_post("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- scripting ---------------------------------------------------------------------------

    def issue_token(self, refresh_token: str = "refresh-1") -> str:
        self._issued += 1
        access = f"access-{self._issued}-{secrets.token_hex(4)}"
        self.access_tokens.add(access)
        self.refresh_tokens.add(refresh_token)
        return access

    def expire_access_tokens(self) -> None:
        self.access_tokens.clear()

    def revoke(self) -> None:
        """The user removed the app's access: every token stops working."""
        self.access_tokens.clear()
        self.refresh_tokens.clear()

    def fail(self, endpoint: str, nth: int, status: int, headers: dict[str, str] | None = None
             ) -> None:
        self.failures.append(Failure(endpoint, nth, status, dict(headers or {})))

    def expect_code(self, code: str, challenge: str) -> None:
        self.codes[code] = challenge

    def delete(self, mid: str) -> None:
        self.messages.pop(mid, None)

    def add_message(self, mid: str, *, subject: str, when: datetime, sender: str = "a@b.example",
                    text: str | None = None, html: str | None = None,
                    attachments: tuple[tuple[str, str, bytes], ...] = (),
                    labels: tuple[str, ...] = ("INBOX",)) -> dict[str, Any]:
        self.history_id += 1
        headers = [{"name": "From", "value": sender}, {"name": "To", "value": self.email},
                   {"name": "Subject", "value": subject},
                   {"name": "Date", "value": when.strftime("%a, %d %b %Y %H:%M:%S +0000")},
                   {"name": "Message-ID", "value": f"<{mid}@mail.example>"},
                   {"name": "Content-Type", "value": "multipart/mixed; boundary=x"}]
        bodies: list[dict[str, Any]] = []
        for mime, content in (("text/plain", text), ("text/html", html)):
            if content is not None:
                raw = content.encode()
                bodies.append({"mimeType": mime, "filename": "", "headers": [
                    {"name": "Content-Type", "value": f"{mime}; charset=\"UTF-8\""}],
                    "body": {"size": len(raw), "data": b64url(raw)}})
        parts: list[dict[str, Any]] = [{"mimeType": "multipart/alternative", "filename": "",
                                        "headers": [], "body": {"size": 0}, "parts": bodies}]
        for i, (name, mime, data) in enumerate(attachments):
            aid = f"ANGjdJ{mid}x{i}{secrets.token_hex(8)}"
            self.attachments[(mid, aid)] = data
            parts.append({"mimeType": mime, "filename": name, "headers": [
                {"name": "Content-Type", "value": f'{mime}; name="{name}"'},
                {"name": "Content-Disposition", "value": f'attachment; filename="{name}"'}],
                "body": {"size": len(data), "attachmentId": aid}})
        payload = {"mimeType": "multipart/mixed", "filename": "", "headers": headers,
                   "body": {"size": 0}, "parts": parts}
        for i, p in enumerate(_flatten(payload)):
            p["partId"] = "" if i == 0 else str(i - 1)
        msg = {"id": mid, "threadId": f"t{mid}", "labelIds": list(labels),
               "snippet": (text or "")[:100], "historyId": str(self.history_id),
               "internalDate": str(int(when.timestamp() * 1000)), "sizeEstimate": 1000,
               "payload": payload}
        self.messages[mid] = msg
        self.history.append((self.history_id, mid))
        return msg

    # -- handlers ----------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        endpoint = _endpoint(request)
        n = self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
        for f in self.failures:
            if f.endpoint == endpoint and f.nth == n:
                if f.status == 401:
                    return _unauthenticated()
                reason = "rateLimitExceeded" if f.status == 429 else "backendError"
                return _error(f.status, "scripted failure", reason, "UNAVAILABLE", f.headers)
        if endpoint != "token":
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.access_tokens:
                return _unauthenticated()
        return await handler(request)

    def _matches(self, msg: dict[str, Any], q: str) -> bool:
        """Enough of Gmail search: after:, label:, from:, subject:, {any of} groups."""
        heads = {h["name"].lower(): h["value"].lower() for h in msg["payload"]["headers"]}

        def ok(term: str) -> bool:
            op, _, value = term.partition(":")
            value = value.strip('"').lower()
            if op == "after":
                return int(msg["internalDate"]) // 1000 > int(value)
            if op == "label":
                return value in (lbl.lower() for lbl in msg["labelIds"])
            if op in ("from", "subject"):
                return value in heads.get(op, "")
            return True  # free text: not modelled

        for group, term in re.findall(r'\{([^}]*)\}|(\w+:(?:"[^"]*"|[^\s{}()]+))', q):
            terms = re.findall(r'\w+:(?:"[^"]*"|[^\s{}()]+)', group) if group else [term]
            if not any(ok(t) for t in terms):
                return False
        return True

    async def _profile(self, request: web.Request) -> web.Response:
        return web.json_response({"emailAddress": self.email, "messagesTotal":
                                  len(self.messages), "threadsTotal": len(self.messages),
                                  "historyId": str(self.history_id)})

    async def _list(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        self.queries.append(q)
        found = sorted((m for m in self.messages.values() if self._matches(m, q)),
                       key=lambda m: -int(m["internalDate"]))
        start = int(request.query.get("pageToken") or 0)
        size = min(self.page_size, int(request.query.get("maxResults", 100)))
        page = found[start:start + size]
        body: dict[str, Any] = {"resultSizeEstimate": len(found)}
        if page:
            body["messages"] = [{"id": m["id"], "threadId": m["threadId"]} for m in page]
        if start + size < len(found):
            body["nextPageToken"] = str(start + size)
        return web.json_response(body)

    async def _message(self, request: web.Request) -> web.Response:
        msg = self.messages.get(request.match_info["id"])
        if msg is None:
            return _not_found()
        if request.query.get("format") == "metadata":
            wanted = {h.lower() for h in request.query.getall("metadataHeaders", [])}
            heads = [h for h in msg["payload"]["headers"] if h["name"].lower() in wanted]
            return web.json_response({**{k: v for k, v in msg.items() if k != "payload"},
                                      "payload": {"mimeType": msg["payload"]["mimeType"],
                                                  "headers": heads}})
        return web.json_response(msg)

    async def _attachment(self, request: web.Request) -> web.Response:
        data = self.attachments.get((request.match_info["id"], request.match_info["aid"]))
        if data is None:
            return _not_found()
        return web.json_response({"size": len(data), "data": b64url(data)})

    async def _history(self, request: web.Request) -> web.Response:
        start = int(request.query["startHistoryId"])
        if start < self.oldest_history:
            return _not_found()
        records = [{"id": str(hid), "messages": [{"id": mid, "threadId": f"t{mid}"}],
                    "messagesAdded": [{"message": {"id": mid, "threadId": f"t{mid}",
                                                   "labelIds": ["INBOX"]}}]}
                   for hid, mid in self.history if hid > start]
        body: dict[str, Any] = {"historyId": str(self.history_id)}
        if records:
            body["history"] = records
        return web.json_response(body)

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(form)
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = request.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
        if client_id != self.client_id or client_secret != self.client_secret:
            return web.json_response({"error": "invalid_client",
                                      "error_description": "Unauthorized"}, status=401)
        grant = form.get("grant_type")
        if grant == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return _grant_error("Token has been expired or revoked.")
            return web.json_response({"access_token": self.issue_token(form["refresh_token"]),
                                      "expires_in": 3599, "token_type": "Bearer",
                                      "scope": SCOPE})
        if grant == "authorization_code":
            challenge = self.codes.pop(form.get("code", ""), None)
            digest = b64url(hashlib.sha256(form.get("code_verifier", "").encode()).digest())
            if challenge is None or digest != challenge:
                return _grant_error("Bad Request")
            refresh = "refresh-" + secrets.token_hex(6)
            return web.json_response({"access_token": self.issue_token(refresh),
                                      "expires_in": 3599, "refresh_token": refresh,
                                      "scope": SCOPE, "token_type": "Bearer"})
        return web.json_response({"error": "unsupported_grant_type"}, status=400)


def _grant_error(description: str) -> web.Response:
    return web.json_response({"error": "invalid_grant", "error_description": description},
                             status=400)


def _flatten(part: dict[str, Any]) -> list[dict[str, Any]]:
    out = [part]
    for child in part.get("parts", []):
        out.extend(_flatten(child))
    return out


def _endpoint(request: web.Request) -> str:
    path = request.path
    if path == "/token":
        return "token"
    if "/attachments/" in path:
        return "attachments.get"
    if path.endswith("/messages"):
        return "messages.list"
    if "/messages/" in path:
        return "messages.get"
    return path.rsplit("/", 1)[-1]  # profile, history
