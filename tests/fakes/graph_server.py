"""A fake Microsoft Graph + Entra ID on loopback, so Outlook/Teams code meets the real wire shapes.

Graph (plain http) serves mail, attachments, chats, chat and channel messages with OData paging,
scripted failures and Graph's error body. The identity provider (https, self-signed certificate
trusted through ``ca_file``) serves OIDC discovery, the authorize redirect, the token endpoint
(authorization_code with PKCE, rotating refresh tokens, device_code) and device authorization.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import re
import secrets
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def iso(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def graph_error(status: int, code: str, message: str,
                headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"code": code, "message": message,
                      "innerError": {"request-id": secrets.token_hex(8)}}}
    return web.json_response(body, status=status, headers=headers)


@dataclass
class Failure:
    match: str
    status: int
    retry_after: int | None = None
    code: str = "Failure"


@dataclass
class User:
    username: str = "ada@contoso.test"
    oid: str = "00000000-0000-0000-0000-0000000000a1"
    name: str = "Ada Lovelace"


def _make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed CA-capable certificate for 127.0.0.1 (its own trust anchor)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-login.test")])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "fake-idp.pem", directory / "fake-idp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@dataclass
class FakeGraph:
    """Start with ``await FakeGraph(tmp_path).start()``; mutate its lists to script a mailbox."""

    workdir: Path
    tenant: str = "tenant-1"
    client_id: str = "client-1"
    page_size: int = 2
    token_lifetime: int = 3600
    user: User = field(default_factory=User)
    messages: list[dict[str, Any]] = field(default_factory=list)
    attachments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    chats: list[dict[str, Any]] = field(default_factory=list)
    chat_messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    channel_messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failures: deque[Failure] = field(default_factory=deque)
    requests: list[str] = field(default_factory=list)
    grants: list[str] = field(default_factory=list)
    access_tokens: set[str] = field(default_factory=set)
    refresh_tokens: dict[str, bool] = field(default_factory=dict)  # token → still valid
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    device_codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    deny_next: bool = False

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.graph_port = 0
        self.idp_port = 0
        self.ca_file, self._key_file = _make_cert(self.workdir)

    # -- lifecycle and addresses ------------------------------------------------------------

    async def start(self) -> FakeGraph:
        app = web.Application()
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/{tenant}/oauth2/v2.0/authorize", self._authorize)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_post("/{tenant}/oauth2/v2.0/devicecode", self._devicecode)
        app.router.add_get("/v1.0/{tail:.*}", self._graph)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        plain = web.TCPSite(self._runner, "127.0.0.1", 0)
        await plain.start()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.ca_file, self._key_file)
        tls = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        await tls.start()
        self.graph_port = plain._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.idp_port = tls._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.graph_port}/v1.0"

    @property
    def authority(self) -> str:
        return f"https://127.0.0.1:{self.idp_port}/{self.tenant}"

    # -- scripting --------------------------------------------------------------------------

    def fail(self, match: str, status: int, *, times: int = 1, retry_after: int | None = None,
             code: str = "Failure") -> None:
        """The next ``times`` Graph requests whose path contains ``match`` get ``status``."""
        for _ in range(times):
            self.failures.append(Failure(match, status, retry_after, code))

    def expire_access_tokens(self) -> None:
        self.access_tokens.clear()

    def revoke(self) -> None:
        """The user revoked consent: every refresh and access token stops working."""
        self.refresh_tokens = dict.fromkeys(self.refresh_tokens, False)
        self.access_tokens.clear()

    def approve_device(self, user_code: str) -> None:
        for state in self.device_codes.values():
            if state["user_code"] == user_code:
                state["approved"] = True

    def add_message(self, mid: str, received: str, *, subject: str = "", body: str = "",
                    content_type: str = "html", sender: str = "bob@contoso.test",
                    sender_name: str = "Bob", folder: str = "inbox",
                    conversation_id: str | None = None) -> dict[str, Any]:
        msg = {"id": mid, "subject": subject, "receivedDateTime": received,
               "conversationId": conversation_id or f"AAQk-{mid}",
               "from": {"emailAddress": {"name": sender_name, "address": sender}},
               "body": {"contentType": content_type, "content": body},
               "hasAttachments": mid in self.attachments, "_folder": folder}
        self.messages.append(msg)
        return msg

    def add_attachment(self, mid: str, name: str, data: bytes,
                       content_type: str = "text/plain") -> None:
        self.attachments.setdefault(mid, []).append({
            "@odata.type": "#microsoft.graph.fileAttachment", "id": secrets.token_hex(4),
            "name": name, "contentType": content_type, "size": len(data), "isInline": False,
            "contentBytes": base64.b64encode(data).decode()})
        for m in self.messages:
            if m["id"] == mid:
                m["hasAttachments"] = True

    def add_chat_message(self, chat_id: str, mid: str, created: str, sender: str,
                         html: str, *, channel: bool = False) -> None:
        """A chat message; with ``channel`` ``chat_id`` is "team-id/channel-id"."""
        target = self.channel_messages if channel else self.chat_messages
        target.setdefault(chat_id, []).append({
            "id": mid, "chatId": chat_id, "messageType": "message", "createdDateTime": created,
            "lastModifiedDateTime": created, "deletedDateTime": None,
            "from": {"application": None, "device": None,
                     "user": {"id": secrets.token_hex(4), "displayName": sender}},
            "body": {"contentType": "html", "content": html}})

    # -- identity provider ------------------------------------------------------------------

    def _idp(self, request: web.Request) -> str:
        return f"https://127.0.0.1:{self.idp_port}/{request.match_info['tenant']}"

    async def _discovery(self, request: web.Request) -> web.Response:
        base = self._idp(request)
        return web.json_response({
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_types_supported": ["code"], "scopes_supported": ["openid"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"]})

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        redirect = URL(q["redirect_uri"])
        if self.deny_next:
            self.deny_next = False
            return _respond(redirect, q.get("response_mode", "query"), {
                "error": "access_denied", "state": q.get("state", ""),
                "error_description": "AADSTS65004: User declined to consent to access the app."})
        code = "code-" + secrets.token_urlsafe(12)
        self.codes[code] = {"client_id": q["client_id"], "redirect_uri": q["redirect_uri"],
                            "challenge": q.get("code_challenge", ""),
                            "nonce": q.get("nonce", ""), "scope": q.get("scope", "")}
        return _respond(redirect, q.get("response_mode", "query"),
                        {"code": code, "state": q.get("state", "")})

    async def _devicecode(self, request: web.Request) -> web.Response:
        form = await request.post()
        device_code = "dc-" + secrets.token_urlsafe(12)
        user_code = secrets.token_hex(4).upper()
        self.device_codes[device_code] = {"user_code": user_code, "approved": False,
                                          "scope": str(form.get("scope", ""))}
        uri = f"https://127.0.0.1:{self.idp_port}/devicelogin"
        return web.json_response({
            "device_code": device_code, "user_code": user_code, "verification_uri": uri,
            "expires_in": 900, "interval": 1,
            "message": f"To sign in, open {uri} and enter the code {user_code}."})

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        grant = form.get("grant_type", "")
        self.grants.append(grant)
        if form.get("client_id") != self.client_id:
            return self._oauth_error("unauthorized_client", "AADSTS700016: unknown client")
        if grant == "authorization_code":
            state = self.codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            if state is None or state["redirect_uri"] != form.get("redirect_uri"):
                return self._oauth_error("invalid_grant", "AADSTS70000: bad code")
            if b64url(hashlib.sha256(verifier.encode()).digest()) != state["challenge"]:
                return self._oauth_error("invalid_grant", "AADSTS501481: PKCE mismatch")
            return self._issue(form.get("scope") or state["scope"], nonce=state["nonce"])
        if grant == "refresh_token":
            rt = form.get("refresh_token", "")
            if not self.refresh_tokens.get(rt):
                return self._oauth_error(
                    "invalid_grant", "AADSTS70008: The refresh token has expired or is invalid "
                    "due to sign-in frequency checks or revocation.", suberror="bad_token")
            self.refresh_tokens[rt] = False  # rotated: the old one is spent
            return self._issue(form.get("scope", ""))
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            state = self.device_codes.get(form.get("device_code", ""))
            if state is None:
                return self._oauth_error("expired_token", "AADSTS70019: code expired")
            if not state["approved"]:
                return self._oauth_error("authorization_pending", "AADSTS70016: pending")
            del self.device_codes[form["device_code"]]
            return self._issue(form.get("scope") or state["scope"])
        return self._oauth_error("unsupported_grant_type", f"{grant} is not supported")

    def _oauth_error(self, error: str, description: str, **extra: str) -> web.Response:
        return web.json_response({"error": error, "error_description": description,
                                  "error_codes": [70000], "timestamp": time.strftime("%F %T"),
                                  **extra}, status=400)

    def _issue(self, scope: str, *, nonce: str = "") -> web.Response:
        now = int(time.time())
        tid = "11111111-2222-3333-4444-555555555555"
        claims: dict[str, Any] = {
            "iss": f"https://127.0.0.1:{self.idp_port}/{tid}/v2.0", "aud": self.client_id,
            "sub": "sub-" + self.user.oid, "oid": self.user.oid, "tid": tid,
            "preferred_username": self.user.username, "name": self.user.name,
            "iat": now, "nbf": now, "exp": now + 3600, "ver": "2.0"}
        if nonce:
            claims["nonce"] = nonce
        id_token = ".".join([b64url(b'{"alg":"none","typ":"JWT"}'),
                             b64url(json.dumps(claims).encode()), ""])
        at, rt = "at-" + secrets.token_urlsafe(16), "rt-" + secrets.token_urlsafe(16)
        self.access_tokens.add(at)
        self.refresh_tokens[rt] = True
        reserved = {"openid", "profile", "offline_access"}
        granted = " ".join(s for s in scope.split() if s not in reserved) + " openid profile"
        return web.json_response({
            "token_type": "Bearer", "scope": granted.strip(), "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime, "access_token": at, "refresh_token": rt,
            "id_token": id_token,
            "client_info": b64url(json.dumps({"uid": self.user.oid, "utid": tid}).encode())})

    # -- Graph ------------------------------------------------------------------------------

    async def _graph(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        self.requests.append(f"{path}?{request.query_string}")
        for i, f in enumerate(self.failures):
            if f.match in path:
                del self.failures[i]
                headers = {"Retry-After": str(f.retry_after)} if f.retry_after else None
                return graph_error(f.status, f.code, f"scripted {f.status}", headers)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.access_tokens:
            return graph_error(401, "InvalidAuthenticationToken",
                               "Access token has expired or is not yet valid.",
                               {"WWW-Authenticate": 'Bearer realm=""'})
        if m := re.fullmatch(r"/me/messages/([^/]+)/attachments", path):
            return web.json_response({"value": self.attachments.get(m.group(1), [])})
        if path == "/me/messages" or (
                m := re.fullmatch(r"/me/mailFolders/([^/]+)/messages", path)):
            folder = m.group(1).lower() if m else None
            return self._messages(request, folder)
        if path == "/me/chats":
            chats = [dict(c, members=c.get("members", [])) for c in self.chats]
            return self._page(request, chats)
        if m := re.fullmatch(r"/(?:me/)?chats/([^/]+)/messages", path):
            return self._conversation(request, self.chat_messages.get(m.group(1), []), True)
        if m := re.fullmatch(r"/teams/([^/]+)/channels/([^/]+)/messages", path):
            key = f"{m.group(1)}/{m.group(2)}"
            if key not in self.channel_messages:
                return graph_error(404, "NotFound", f"channel {key} not found")
            return self._conversation(request, self.channel_messages[key], False)
        return graph_error(404, "ResourceNotFound", f"Resource not found for {path}")

    def _messages(self, request: web.Request, folder: str | None) -> web.Response:
        q = request.query
        if "$search" in q and ("$filter" in q or "$orderby" in q):
            return graph_error(400, "ErrorInvalidUrlQuery",
                               "The query parameter '$orderby'/'$filter' is invalid with $search.")
        msgs = [m for m in self.messages if folder is None or m["_folder"] == folder]
        try:
            msgs = [m for m in msgs if _matches(m, q.get("$filter", ""))]
        except ValueError as exc:
            return graph_error(400, "BadRequest", f"Invalid filter clause: {exc}")
        if "$search" in q:
            term = q["$search"].strip('"').lower()
            msgs = [m for m in msgs if term in (m["subject"] + m["body"]["content"]).lower()]
        if q.get("$orderby", "").startswith("receivedDateTime"):
            msgs.sort(key=lambda m: iso(m["receivedDateTime"]),
                      reverse=q["$orderby"].endswith("desc"))
        # like Graph: with $select only the named properties (and id) come back
        selected = set(q["$select"].split(",")) | {"id"} if "$select" in q else None
        clean = [{k: v for k, v in m.items() if not k.startswith("_")
                  and (selected is None or k in selected)} for m in msgs]
        return self._page(request, clean)

    def _conversation(self, request: web.Request, msgs: list[dict[str, Any]],
                      filterable: bool) -> web.Response:
        q = request.query
        out = sorted(msgs, key=lambda m: iso(m["createdDateTime"]), reverse=True)
        flt = q.get("$filter", "")
        if flt and not filterable:
            return graph_error(400, "BadRequest", "$filter is not supported on channel messages")
        if flt:
            m = re.fullmatch(r"createdDateTime gt (\S+)", flt)
            if not m or q.get("$orderby") != "createdDateTime desc":
                return graph_error(400, "BadRequest", f"unsupported filter {flt!r}")
            out = [x for x in out if iso(x["createdDateTime"]) > iso(m.group(1))]
        return self._page(request, out)

    def _page(self, request: web.Request, items: list[dict[str, Any]]) -> web.Response:
        top = min(int(request.query.get("$top", "50")), self.page_size)
        skip = int(request.query.get("$skip", "0"))
        body: dict[str, Any] = {"@odata.context": f"{self.api_base}/$metadata#collection",
                                "value": items[skip:skip + top]}
        if skip + top < len(items):
            nxt = URL(f"{self.api_base}{request.path[len('/v1.0'):]}").with_query(
                {**request.query, "$skip": str(skip + top)})
            body["@odata.nextLink"] = str(nxt)
        return web.json_response(body)


def _respond(redirect: URL, mode: str, params: dict[str, str]) -> web.Response:
    """The authorize endpoint's answer: a redirect, or an auto-posting form (form_post)."""
    if mode != "form_post":
        raise web.HTTPFound(redirect.with_query(params))
    inputs = "".join(f'<input type="hidden" name="{k}" value="{html.escape(v)}">'
                     for k, v in params.items())
    page = (f'<html><body onload="document.forms[0].submit()"><form method="post" '
            f'action="{html.escape(str(redirect))}">{inputs}</form></body></html>')
    return web.Response(text=page, content_type="text/html")


def _matches(msg: dict[str, Any], flt: str) -> bool:
    """The tiny OData subset the Outlook source sends."""
    if not flt:
        return True
    for clause in re.split(r"\s+and\s+", flt.strip(), flags=re.I):
        if m := re.fullmatch(r"receivedDateTime ge (\S+)", clause):
            if iso(msg["receivedDateTime"]) < iso(m.group(1)):
                return False
        elif m := re.fullmatch(r"from/emailAddress/address eq '((?:[^']|'')*)'", clause):
            if msg["from"]["emailAddress"]["address"].lower() != m.group(1).replace(
                    "''", "'").lower():
                return False
        elif m := re.fullmatch(r"contains\(subject,\s*'((?:[^']|'')*)'\)", clause):
            if m.group(1).replace("''", "'").lower() not in msg["subject"].lower():
                return False
        else:
            raise ValueError(clause)
    return True
