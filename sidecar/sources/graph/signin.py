"""Microsoft sign-in via msal: tokens for Graph, refresh-token rotation persisted to the keyring.

Each account's serialized msal token cache lives in the OS keyring (``msal-cache`` / account)
and is written back every time msal changes it, because Microsoft rotates refresh tokens: a
cache not saved after a refresh holds a spent token. Connecting uses msal's auth-code flow
(PKCE, state, nonce) with a loopback redirect served here, or the device-code flow.
All msal calls block (requests), so they run in threads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sidecar.errors import NeedsReauth, PermanentError, TransientError
from sidecar.secrets import get_secret, set_secret
from sidecar.sources.http import TokenProvider

log = logging.getLogger(__name__)

CACHE_KIND = "msal-cache"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com/common"
#: Scopes each provider needs (msal adds openid/profile/offline_access itself).
SCOPES: dict[str, tuple[str, ...]] = {
    "outlook": ("https://graph.microsoft.com/Mail.Read",),
    "teams": ("https://graph.microsoft.com/Chat.Read",
              "https://graph.microsoft.com/ChannelMessage.Read.All"),
}
#: msal error codes meaning "the user must sign in again".
_REAUTH_ERRORS = {"invalid_grant", "interaction_required", "consent_required",
                  "login_required", "no_account"}
_TRANSIENT_ERRORS = {"temporarily_unavailable", "server_error", "slow_down"}

@dataclass(frozen=True, slots=True)
class MsalConfig:
    """Where and as whom to sign in; ``verify`` may name a CA bundle (tests use a fake IdP)."""

    client_id: str
    authority: str = DEFAULT_AUTHORITY
    verify: bool | str = True
    validate_authority: bool = True
    #: None: msal's default (on for Microsoft's clouds); False for a private/fake authority.
    instance_discovery: bool | None = None
    timeout: float = 30.0


@dataclass
class _Slot:
    """One msal app + cache per account; the lock serializes its threads."""

    app: Any
    cache: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


_SLOTS: dict[tuple[MsalConfig, str], _Slot] = {}
_SLOTS_LOCK = threading.Lock()


def _new_app(config: MsalConfig, cache: Any) -> Any:
    """Build msal's app (does OIDC discovery over the network: call from a thread)."""
    import msal
    import requests

    http: dict[str, Any] = {"verify": config.verify, "timeout": config.timeout}
    if isinstance(config.verify, str):
        # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override a session's CA bundle, so a
        # private CA needs a session that ignores the environment (and its proxies).
        session = requests.Session()
        session.verify = config.verify
        session.trust_env = False
        with_timeout = functools.partial(session.request, timeout=config.timeout)
        session.request = with_timeout  # type: ignore[method-assign]
        session.mount("https://", requests.adapters.HTTPAdapter(max_retries=1))
        http = {"http_client": session}
    try:
        return msal.PublicClientApplication(
            config.client_id, authority=config.authority, token_cache=cache,
            validate_authority=config.validate_authority,
            instance_discovery=config.instance_discovery, **http)
    except requests.RequestException as exc:
        raise TransientError(f"cannot reach Microsoft sign-in ({config.authority}): {exc}",
                             code="auth_unreachable") from None
    except ValueError as exc:
        raise PermanentError(f"Microsoft sign-in is misconfigured: {exc}",
                             code="auth_config") from None


def _slot(config: MsalConfig, account: str) -> _Slot:
    import msal

    with _SLOTS_LOCK:
        slot = _SLOTS.get((config, account))
    if slot is None:
        cache = msal.SerializableTokenCache()
        slot = _Slot(app=_new_app(config, cache), cache=cache)
        with _SLOTS_LOCK:
            slot = _SLOTS.setdefault((config, account), slot)
    return slot


def _save(cache: Any, account: str) -> None:
    """Persist the cache whenever msal changed it (rotated refresh token, new access token)."""
    if cache.has_state_changed:
        set_secret(CACHE_KIND, account, cache.serialize())
        log.debug("saved the rotated Microsoft token cache for %s", account)


def _classify(result: Mapping[str, Any], account: str) -> Exception:
    error = str(result.get("error", "unknown"))
    desc = str(result.get("error_description", "")).split("\r\n")[0][:300]
    if error in _REAUTH_ERRORS:
        return NeedsReauth(f"Microsoft sign-in for {account} is no longer valid ({error}: "
                           f"{desc}); connect the account again")
    if error in _TRANSIENT_ERRORS:
        return TransientError(f"Microsoft sign-in is unavailable ({error}: {desc})")
    return PermanentError(f"Microsoft sign-in failed for {account} ({error}: {desc})",
                          code="auth_failed")


def _silent(config: MsalConfig, account: str, scopes: Sequence[str], force: bool) -> str:
    import requests

    stored = get_secret(CACHE_KIND, account)  # NoKeyring propagates: say so, do not guess
    if not stored:
        raise NeedsReauth(f"no Microsoft sign-in is stored for {account}; connect the account")
    slot = _slot(config, account)
    with slot.lock:
        slot.cache.deserialize(stored)
        accounts = slot.app.get_accounts(username=account) or slot.app.get_accounts()
        if not accounts:
            raise NeedsReauth(f"no Microsoft account {account} in the stored sign-in; "
                              "connect the account again")
        try:
            result = slot.app.acquire_token_silent_with_error(
                list(scopes), account=accounts[0], force_refresh=force)
        except requests.RequestException as exc:
            raise TransientError(f"cannot reach Microsoft sign-in: {exc}") from None
        finally:
            _save(slot.cache, account)
    if not result:
        raise NeedsReauth(f"the stored Microsoft sign-in for {account} has no usable token; "
                          "connect the account again")
    if "access_token" not in result:
        raise _classify(result, account)
    return str(result["access_token"])


async def access_token(account: str, scopes: Sequence[str], *, config: MsalConfig,
                       force_refresh: bool = False) -> str:
    """A Graph access token for ``account`` (refreshing, and saving the rotated cache, as needed).

    Raises :class:`NeedsReauth` when there is no sign-in or the grant was revoked/expired,
    :class:`sidecar.secrets.NoKeyring` when there is no keyring to read it from.
    """
    return await asyncio.to_thread(_silent, config, account, scopes, force_refresh)


def token_provider(account: str, scopes: Sequence[str], *, config: MsalConfig) -> TokenProvider:
    """The async callable the Graph sources take: ``await provider(force_refresh=False)``."""

    async def provider(force_refresh: bool = False) -> str:
        return await access_token(account, scopes, config=config, force_refresh=force_refresh)

    return provider


def _username(result: Mapping[str, Any]) -> str:
    claims = result.get("id_token_claims") or {}
    name = claims.get("preferred_username") or claims.get("email") or claims.get("upn")
    if not name:
        raise PermanentError("Microsoft sign-in returned no account name (was the 'profile' "
                             "scope refused?)", code="auth_failed")
    return str(name)


def _store_new_grant(cache: Any, result: Mapping[str, Any]) -> str:
    """After an interactive sign-in: the account's cache replaces whatever was stored."""
    if "access_token" not in result:
        raise _classify(result, "the new account")
    account = _username(result)
    set_secret(CACHE_KIND, account, cache.serialize())  # cached apps reload it on next use
    return account


# -- connect: auth code with loopback redirect --------------------------------------------

_DONE_PAGE = ("<!doctype html><meta charset=utf-8><title>Signed in</title>"
              "<p>{msg}</p><p>You can close this window.</p>")


class MicrosoftFlow:
    """A pending browser sign-in: open ``url``; ``await wait()`` returns the account name."""

    def __init__(self, app: Any, cache: Any, flow: dict[str, Any], runner: Any) -> None:
        self._app, self._cache, self._flow, self._runner = app, cache, flow, runner
        self._result: asyncio.Future[dict[str, str]] = (
            asyncio.get_running_loop().create_future())
        self.url: str = flow["auth_uri"]
        self.redirect_uri: str = flow["redirect_uri"]
        self.state: str = flow["state"]

    async def _callback(self, request: Any) -> Any:
        from aiohttp import web

        params = {k: str(v) for k, v in (await request.post()).items()} or dict(request.query)
        if params.get("state") != self.state or not ("code" in params or "error" in params):
            return web.Response(status=400, text="unexpected request")
        if not self._result.done():
            self._result.set_result(params)
        msg = ("Sign-in was cancelled." if "error" in params
               else "Signed in to Microsoft. The app is finishing the connection.")
        return web.Response(text=_DONE_PAGE.format(msg=msg), content_type="text/html")

    async def wait(self, timeout: float = 300.0) -> str:
        """Wait for the redirect, redeem the code (msal checks state, PKCE, nonce), save."""
        try:
            try:
                params = await asyncio.wait_for(asyncio.shield(self._result), timeout)
            except TimeoutError:
                raise PermanentError(f"Microsoft sign-in was not completed within "
                                     f"{timeout:.0f}s", code="auth_timeout") from None
        finally:
            await self.close()
        if "error" in params:
            desc = params.get("error_description", "")
            if params["error"] == "access_denied":
                raise PermanentError(f"Microsoft sign-in was cancelled or consent was denied "
                                     f"({desc})", code="access_denied")
            raise PermanentError(f"Microsoft sign-in failed: {params['error']} {desc}",
                                 code="auth_failed")
        return await asyncio.to_thread(self._redeem, params)

    def _redeem(self, params: dict[str, str]) -> str:
        import requests

        try:
            result = self._app.acquire_token_by_auth_code_flow(self._flow, params)
        except ValueError as exc:  # state mismatch and similar
            raise PermanentError(f"Microsoft sign-in response was rejected: {exc}",
                                 code="auth_failed") from None
        except requests.RequestException as exc:
            raise TransientError(f"cannot reach Microsoft sign-in: {exc}") from None
        return _store_new_grant(self._cache, result)

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


async def start_microsoft_flow(client_id: str, authority: str, scopes: Sequence[str], *,
                               login_hint: str | None = None, **options: Any) -> MicrosoftFlow:
    """Start the loopback server and the auth-code flow; give ``flow.url`` to the browser.

    ``options`` are further :class:`MsalConfig` fields (verify, instance_discovery …).
    """
    import msal
    from aiohttp import web

    config = MsalConfig(client_id=client_id, authority=authority, **options)
    cache = msal.SerializableTokenCache()
    app = await asyncio.to_thread(_new_app, config, cache)
    holder: list[MicrosoftFlow] = []

    async def callback(request: web.Request) -> web.StreamResponse:
        return await holder[0]._callback(request) if holder else web.Response(status=503)

    server = web.Application()
    server.router.add_route("*", "/", callback)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        # form_post: the code arrives in a POST body, never in a URL or the browser history
        flow = app.initiate_auth_code_flow(
            list(scopes), redirect_uri=f"http://127.0.0.1:{port}/", login_hint=login_hint,
            prompt="select_account", response_mode="form_post")
    except Exception:
        await runner.cleanup()
        raise
    holder.append(MicrosoftFlow(app, cache, flow, runner))
    return holder[0]


# -- connect: device code -----------------------------------------------------------------


class DeviceCodeFlow:
    """Show ``user_code`` and ``verification_uri`` to the user; ``await wait()`` polls."""

    def __init__(self, app: Any, cache: Any, flow: dict[str, Any]) -> None:
        self._app, self._cache, self._flow = app, cache, flow
        self.user_code: str = flow["user_code"]
        self.verification_uri: str = flow.get("verification_uri") or flow.get(
            "verification_url", "")
        self.message: str = flow.get("message", "")
        self.expires_at: float = float(flow.get("expires_at", time.time() + 900))

    async def wait(self, timeout: float | None = None) -> str:
        deadline = self.expires_at if timeout is None else min(self.expires_at,
                                                               time.time() + timeout)
        while True:
            result = await asyncio.to_thread(self._poll)
            error = result.get("error")
            if "access_token" in result:
                return _store_new_grant(self._cache, result)
            if error in ("authorization_declined", "access_denied"):
                raise PermanentError("Microsoft sign-in was declined", code="access_denied")
            if error not in ("authorization_pending", "slow_down"):
                raise _classify(result, "the new account")
            if time.time() >= deadline:
                raise PermanentError("the Microsoft sign-in code expired before it was used",
                                     code="auth_timeout")
            await asyncio.sleep(max(1, int(self._flow.get("interval", 5))))

    def _poll(self) -> dict[str, Any]:
        import requests

        try:
            return dict(self._app.acquire_token_by_device_flow(
                self._flow, exit_condition=lambda flow: True))
        except requests.RequestException as exc:
            raise TransientError(f"cannot reach Microsoft sign-in: {exc}") from None


async def start_device_code(client_id: str, authority: str, scopes: Sequence[str],
                            **options: Any) -> DeviceCodeFlow:
    """The fallback when no browser can reach a loopback port (remote shells, locked hosts)."""
    import msal

    config = MsalConfig(client_id=client_id, authority=authority, **options)
    cache = msal.SerializableTokenCache()
    app = await asyncio.to_thread(_new_app, config, cache)
    flow = await asyncio.to_thread(app.initiate_device_flow, list(scopes))
    if "user_code" not in flow:
        raise _classify(flow, "the new account")
    return DeviceCodeFlow(app, cache, flow)
