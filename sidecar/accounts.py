"""Connected accounts: OAuth flows Electron starts, and the cloud sources that use them.

Tokens only ever live in the OS keyring (the flows put them there). What is kept in SQLite
is the non-secret OAuth client setting Microsoft needs again at refresh time (client id,
authority). A finished flow is reported with a pushed ``oauth_status`` frame; agents of
that account that were waiting for a reconnect become usable again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from sidecar import protocol as p
from sidecar.domain import Agent
from sidecar.errors import ConfigError, NeedsReauth, SidecarError
from sidecar.hub import Hub
from sidecar.settings import Config
from sidecar.sources.base import Source
from sidecar.store import Store

log = logging.getLogger(__name__)

MICROSOFT_CLIENT_KEY = "oauth_client.microsoft"
FLOW_TIMEOUT = 600.0
#: MsalConfig fields Electron (or a test) may set in ``oauth_start.client``.
_MSAL_FIELDS = ("client_id", "authority", "verify", "validate_authority", "instance_discovery")


@dataclass
class _Pending:
    flow_id: str
    provider: str
    flow: Any
    task: asyncio.Task[None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Accounts:
    """Runs connect flows and builds cloud sources for agents."""

    def __init__(self, store: Store, hub: Hub, config: Config) -> None:
        self.store = store
        self.hub = hub
        self.config = config
        self.pending: dict[str, _Pending] = {}

    # -- connecting --------------------------------------------------------------------------

    async def start(self, provider: str, client: dict[str, Any], account_hint: str | None,
                    flow_kind: str | None) -> tuple[str, str, str | None, str | None]:
        """Begin a sign-in; returns (flow_id, url, user_code, message)."""
        from sidecar.secrets import require_keyring

        require_keyring()  # tokens can only go to the OS keyring
        flow_id = "f_" + secrets.token_hex(6)
        user_code = message = None
        if provider == "gmail":
            from sidecar.oauth_google import start_google_flow

            config = client.get("client_config")
            if not isinstance(config, dict):
                raise ConfigError("oauth_start.client.client_config must be Google's "
                                  "installed-app client JSON", field="client.client_config")
            from sidecar.logging_setup import register_secret

            for section in config.values():  # the client secret is never logged either
                if isinstance(section, dict):
                    register_secret(section.get("client_secret"))
            flow = await start_google_flow(config, account_hint,
                                           api_base=self.config.gmail_api_base)
            url = flow.url
        elif provider in ("outlook", "teams"):
            from sidecar import msal_auth

            options = {k: client[k] for k in _MSAL_FIELDS if k in client}
            if not isinstance(options.get("client_id"), str):
                raise ConfigError("oauth_start.client.client_id is required for Microsoft",
                                  field="client.client_id")
            options.setdefault("authority", msal_auth.DEFAULT_AUTHORITY)
            cid, authority = options.pop("client_id"), options.pop("authority")
            scopes = msal_auth.SCOPES[provider]
            if flow_kind == "device_code":
                flow = await msal_auth.start_device_code(cid, authority, scopes, **options)
                url, user_code, message = flow.verification_uri, flow.user_code, flow.message
            else:
                flow = await msal_auth.start_microsoft_flow(cid, authority, scopes,
                                                            login_hint=account_hint, **options)
                url = flow.url
            await self.store.kv.set(MICROSOFT_CLIENT_KEY,
                                    {"client_id": cid, "authority": authority, **options})
        else:
            raise ConfigError(f"unknown provider {provider!r}", field="provider")
        pending = _Pending(flow_id, provider, flow)
        pending.task = asyncio.create_task(self._finish(pending), name=f"oauth-{flow_id}")
        self.pending[flow_id] = pending
        return flow_id, url, user_code, message

    async def _finish(self, pending: _Pending) -> None:
        status, account, message = "failed", None, None
        try:
            account = await pending.flow.wait(FLOW_TIMEOUT)
            status = "connected"
            await self._reconnected(pending.provider, account)
        except asyncio.CancelledError:
            status, message = "cancelled", "sign-in cancelled"
        except SidecarError as exc:
            status = {"oauth_cancelled": "cancelled", "oauth_timeout": "timeout",
                      "auth_timeout": "timeout"}.get(exc.code, "failed")
            message = exc.message
        except Exception as exc:  # a library error must still reach the user
            log.exception("%s sign-in failed", pending.provider)
            message = f"sign-in failed: {exc}"
        finally:
            self.pending.pop(pending.flow_id, None)
            with contextlib.suppress(Exception):
                close = getattr(pending.flow, "close", None)
                if close is not None:
                    await close()
        log.info("%s sign-in %s: %s", pending.provider, pending.flow_id, status)
        await self.hub.broadcast(p.OAuthStatus(flow_id=pending.flow_id, provider=pending.provider,
                                               status=status, account=account, message=message))

    async def _reconnected(self, provider: str, account: str) -> None:
        for record in await self.store.agents.records(kind="cloud"):
            if record.get("provider") == provider and record.get("account") == account \
                    and record.get("state") == "needs_reauth":
                await self.store.agents.set_state(record["id"], "ok")

    async def cancel(self, flow_id: str) -> bool:
        pending = self.pending.get(flow_id)
        if pending is None:
            return False
        cancel = getattr(pending.flow, "cancel", None)
        if cancel is not None:
            await cancel()
        elif pending.task is not None:
            pending.task.cancel()
        return True

    async def close(self) -> None:
        for flow_id in list(self.pending):
            await self.cancel(flow_id)

    # -- sources -----------------------------------------------------------------------------

    def source(self, agent: Agent, run_id: str) -> Source:
        if agent.provider == "gmail":
            from sidecar.sources.gmail import GmailSource

            return GmailSource(agent, self.store, run_id=run_id,
                               api_base=self.config.gmail_api_base)
        from sidecar.sources.graph import OutlookSource, TeamsSource

        cls = OutlookSource if agent.provider == "outlook" else TeamsSource
        return cls(agent, self.store, run_id=run_id, token_provider=self._ms_tokens(agent),
                   api_base=self.config.graph_api_base)

    def _ms_tokens(self, agent: Agent) -> Any:
        from sidecar import msal_auth

        provider: Any = None

        async def tokens(force_refresh: bool = False) -> str:
            nonlocal provider
            if provider is None:
                saved = await self.store.kv.get(MICROSOFT_CLIENT_KEY)
                if not saved or not agent.account:
                    raise NeedsReauth(f"{agent.provider} account is not connected: connect "
                                      "it from the app first")
                provider = msal_auth.token_provider(
                    agent.account, msal_auth.SCOPES[agent.provider or "outlook"],
                    config=msal_auth.MsalConfig(**saved))
            return str(await provider(force_refresh=force_refresh))

        return tokens
