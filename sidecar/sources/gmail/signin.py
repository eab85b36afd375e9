"""Google OAuth for Gmail agents: connect on a loopback redirect, keep tokens fresh in the keyring.

Tokens live only in the OS keyring; every blocking OAuth call (token exchange, refresh,
keyring access) runs in a thread so the event loop never stalls; a revoked or expired grant
surfaces as :class:`NeedsReauth` ("reconnect the account") instead of an opaque failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import secrets
import socket
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from sidecar.errors import ConfigError, NeedsReauth, PermanentError, SidecarError, TransientError
from sidecar.redaction import register_secret
from sidecar.secrets import get_secret, set_secret
from sidecar.sources.http import TokenProvider

log = logging.getLogger(__name__)

GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
DEFAULT_API_BASE = "https://gmail.googleapis.com"
#: The keyring ``kind`` Gmail tokens are stored under (``get_secret("gmail", account)``).
SECRET_KIND = "gmail"


class GmailAuth(Protocol):
    """What a Gmail source's ``credentials_factory(account)`` returns."""

    async def token(self) -> str:
        """A valid access token (refreshed first when missing or expiring)."""

    async def refresh(self, stale: str | None = None) -> str:
        """A new access token after the API rejected ``stale`` with 401."""


class GoogleCredentials:
    """One account's google-auth ``Credentials``: loaded from, refreshed into, the keyring."""

    def __init__(self, account: str, *, kind: str = SECRET_KIND) -> None:
        self.account = account
        self.kind = kind
        self._creds: Any = None
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """A valid access token, refreshing first when it is missing or about to expire."""
        async with self._lock:
            creds = await self._load()
            if not creds.valid:
                await self._refresh(creds)
            return str(creds.token)

    async def refresh(self, stale: str | None = None) -> str:
        """Refresh after a 401; concurrent 401s for the same ``stale`` token share one refresh."""
        async with self._lock:
            creds = await self._load()
            if stale is None or creds.token == stale or not creds.valid:
                await self._refresh(creds)
            return str(creds.token)

    async def _load(self) -> Any:
        if self._creds is not None:
            return self._creds
        raw = await asyncio.to_thread(get_secret, self.kind, self.account)
        if not raw:
            raise NeedsReauth(f"Gmail account {self.account} is not connected (no token in the "
                              "OS keyring): reconnect the account")
        try:
            creds = _from_info(json.loads(raw))
        except (ValueError, TypeError, KeyError, AttributeError):
            raise NeedsReauth(f"the stored Gmail token for {self.account} is unreadable: "
                              "reconnect the account") from None
        register_secret(creds.token)
        register_secret(creds.refresh_token)
        self._creds = creds
        return creds

    async def _refresh(self, creds: Any) -> None:
        from google.auth.exceptions import RefreshError, TransportError
        from google.auth.transport.requests import Request

        try:
            await asyncio.to_thread(creds.refresh, Request())
        except RefreshError as exc:
            raise _refresh_error(exc, self.account) from None
        except TransportError as exc:
            raise TransientError(f"could not reach Google to refresh the token for "
                                 f"{self.account} ({type(exc).__name__})") from None
        register_secret(creds.token)
        register_secret(creds.refresh_token)
        await asyncio.to_thread(set_secret, self.kind, self.account, creds.to_json())
        log.info("refreshed the Gmail access token for %s", self.account)


def _from_info(info: dict[str, Any]) -> Any:
    """Credentials from ``Credentials.to_json()`` output, keeping its ``token_uri``.

    (``from_authorized_user_info`` always substitutes Google's endpoint.) The URI must be
    https, or http on loopback (the test server), so a tampered entry cannot send the
    refresh token elsewhere in clear text.
    """
    from google.oauth2.credentials import Credentials

    parsed = Credentials.from_authorized_user_info(info)
    token_uri = info.get("token_uri") or parsed.token_uri
    split = urlsplit(token_uri)
    if split.scheme != "https" and (split.scheme, split.hostname) not in (
            ("http", "127.0.0.1"), ("http", "localhost"), ("http", "::1")):
        raise ValueError("token_uri must be https")
    return Credentials(
        token=parsed.token, refresh_token=parsed.refresh_token, token_uri=token_uri,
        scopes=parsed.scopes, client_id=parsed.client_id, client_secret=parsed.client_secret,
        expiry=parsed.expiry, account=info.get("account", ""))


def google_tokens(auth: GmailAuth) -> TokenProvider:
    """``auth`` as the HTTP client's token provider: a forced refresh names the refused token,
    so concurrent 401s for it share one refresh."""
    last: str | None = None

    async def tokens(force_refresh: bool = False) -> str:
        nonlocal last
        last = await (auth.refresh(last) if force_refresh else auth.token())
        return last

    return tokens


def keyring_credentials(account: str) -> GoogleCredentials:
    """The default ``credentials_factory`` of :class:`sidecar.sources.gmail.source.GmailSource`."""
    return GoogleCredentials(account)


def _refresh_error(exc: Exception, account: str) -> SidecarError:
    """Classify a google-auth RefreshError without echoing its text (it may quote a body)."""
    detail = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
    error = str(detail.get("error") or "")
    first = str(exc.args[0]) if exc.args else ""
    if error == "invalid_grant" or first.startswith("invalid_grant"):
        return NeedsReauth(f"Google revoked or expired the Gmail access for {account}: "
                           "reconnect the account")
    if getattr(exc, "retryable", False):
        return TransientError(f"Google could not refresh the token for {account} right now")
    return NeedsReauth(f"Google refused to refresh the Gmail token for {account} "
                       f"({error or 'refresh failed'}): reconnect the account")


def _page(status: int, title: str, text: str) -> web.Response:
    body = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>")
    return web.Response(status=status, text=body, content_type="text/html")


def _retrieve(fut: asyncio.Future[str]) -> None:
    """Mark a failed flow's exception as seen even when nobody awaits ``wait()``."""
    if not fut.cancelled():
        fut.exception()


class GoogleFlow:
    """One pending sign-in: open :attr:`url` in a browser, then ``await wait()``."""

    def __init__(self, flow: Any, url: str, state: str, runner: web.AppRunner, *,
                 api_base: str, kind: str) -> None:
        self._flow = flow
        self.url = url
        self.state = state
        self.redirect_uri: str = flow.redirect_uri
        self._runner = runner
        self._api_base = api_base.rstrip("/")
        self._kind = kind
        self._future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._future.add_done_callback(_retrieve)

    async def wait(self, timeout: float = 300.0) -> str:
        """The connected account's email once the redirect arrives and the token is stored."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._future), timeout)
        except TimeoutError:
            raise PermanentError(f"Google sign-in was not completed within {timeout:g}s; "
                                 "start again", code="oauth_timeout") from None
        finally:
            await self._close()

    async def cancel(self) -> None:
        self._fail(PermanentError("Google sign-in was cancelled", code="oauth_cancelled"))
        await self._close()

    def _fail(self, exc: SidecarError) -> None:
        if not self._future.done():
            self._future.set_exception(exc)

    async def _close(self) -> None:
        await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        """The loopback redirect: verify state, report denial, or exchange the code."""
        if self._future.done():
            return _page(409, "Sign-in already finished", "You can close this window.")
        query = request.query
        if not secrets.compare_digest(query.get("state", ""), self.state):
            self._fail(PermanentError("Google sign-in failed: the reply did not carry this "
                                      "sign-in's state (stale or forged redirect); start again",
                                      code="oauth_state_mismatch"))
            return _page(400, "Sign-in failed", "The reply did not match this sign-in.")
        if "error" in query:
            error = query["error"]
            if error == "access_denied":
                exc = PermanentError("Google sign-in was declined: access to Gmail was not "
                                     "granted, so the account is not connected",
                                     code="oauth_denied")
            else:
                exc = PermanentError(f"Google sign-in failed: {error}", code="oauth_error")
            self._fail(exc)
            return _page(400, "Sign-in not completed", exc.message)
        code = query.get("code")
        if not code:
            self._fail(PermanentError("Google sign-in failed: no code in the reply",
                                      code="oauth_error"))
            return _page(400, "Sign-in failed", "No authorization code was received.")
        try:
            account = await self._complete(code)
        except SidecarError as exc:
            self._fail(exc)
            return _page(502, "Sign-in failed", exc.message)
        if not self._future.done():
            self._future.set_result(account)
        return _page(200, "Gmail connected", f"{account} is connected. You can close this "
                                             "window.")

    async def _complete(self, code: str) -> str:
        import requests
        from oauthlib.oauth2 import OAuth2Error

        try:
            await asyncio.to_thread(self._flow.fetch_token, code=code)
        except OAuth2Error as exc:
            raise PermanentError(f"Google refused the sign-in code ({exc.error}); start again",
                                 code="oauth_error") from None
        except requests.RequestException as exc:
            raise TransientError(f"could not reach Google to finish sign-in "
                                 f"({type(exc).__name__})") from None
        creds = self._flow.credentials
        register_secret(creds.token)
        register_secret(creds.refresh_token)
        if not creds.refresh_token:
            raise PermanentError("Google returned no refresh token; remove the app's access "
                                 "in your Google account and connect again", code="oauth_error")
        account = await self._profile_email(str(creds.token))
        await asyncio.to_thread(set_secret, self._kind, account, creds.to_json())
        return account

    async def _profile_email(self, token: str) -> str:
        url = f"{self._api_base}/gmail/v1/users/me/profile"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s, \
                    s.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                if resp.status != 200:
                    raise PermanentError(f"Gmail refused the new credentials (HTTP "
                                         f"{resp.status}); start again", code="oauth_error")
                profile = await resp.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"could not reach Gmail to identify the account "
                                 f"({type(exc).__name__})") from None
        email = profile.get("emailAddress")
        if not isinstance(email, str) or "@" not in email:
            raise PermanentError("Gmail did not say which account was connected",
                                 code="oauth_error")
        return email


async def start_google_flow(client_config: dict[str, Any], account_hint: str | None, *,
                            scopes: Sequence[str] = (GMAIL_READONLY,),
                            api_base: str = DEFAULT_API_BASE,
                            kind: str = SECRET_KIND) -> GoogleFlow:
    """Start a loopback sign-in (offline access, forced consent, PKCE S256, random state)."""
    from google_auth_oauthlib.flow import Flow

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        redirect_uri = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        try:
            flow = Flow.from_client_config(client_config, scopes=list(scopes),
                                           redirect_uri=redirect_uri)
        except ValueError as exc:
            raise ConfigError(f"Google client config is invalid: {exc}",
                              field="google.client_config") from None
        extra = {"login_hint": account_hint} if account_hint else {}
        url, state = flow.authorization_url(access_type="offline", prompt="consent", **extra)
        app = web.Application()
        runner = web.AppRunner(app, access_log=None)  # the redirect URL carries the code
        google_flow = GoogleFlow(flow, url, state, runner, api_base=api_base, kind=kind)
        app.router.add_get("/", google_flow.handle)
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return google_flow
