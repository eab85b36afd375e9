"""Microsoft Graph: the Outlook and Teams sources and their msal sign-in.

Tokens live in the OS keyring (msal's cache); SQLite keeps only the non-secret client setting
Microsoft needs again at refresh time (client id, authority), under :data:`CLIENT_KEY`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from sidecar.domain import Agent
from sidecar.errors import ConfigError, NeedsReauth
from sidecar.sources.base import Source
from sidecar.sources.graph.source import OutlookSource, TeamsSource
from sidecar.sources.http import TokenProvider
from sidecar.sources.provider import Provider, SignIn, Wiring
from sidecar.store import Store

__all__ = ["CLIENT_KEY", "OUTLOOK", "TEAMS", "OutlookSource", "TeamsSource"]

CLIENT_KEY = "oauth_client.microsoft"
#: MsalConfig fields Electron (or a test) may set in ``oauth_start.client``.
_MSAL_FIELDS = ("client_id", "authority", "verify", "validate_authority", "instance_discovery")


class GraphProvider(Provider):
    """Outlook or Teams agents: one Microsoft account, the scopes of the provider."""

    source_class: ClassVar[type[OutlookSource] | type[TeamsSource]]

    def source(self, agent: Agent, wiring: Wiring) -> Source:
        return self.source_class(agent, wiring.store, run_id=wiring.run_id,
                                 token_provider=keyring_tokens(agent, wiring.store),
                                 api_base=wiring.config.graph_api_base)

    async def sign_in(self, client: Mapping[str, Any], account_hint: str | None,
                      flow_kind: str | None, wiring: Wiring) -> SignIn:
        from sidecar.sources.graph import signin

        options = {k: client[k] for k in _MSAL_FIELDS if k in client}
        if not isinstance(options.get("client_id"), str):
            raise ConfigError("oauth_start.client.client_id is required for Microsoft",
                              field="client.client_id")
        options.setdefault("authority", signin.DEFAULT_AUTHORITY)
        cid, authority = options.pop("client_id"), options.pop("authority")
        scopes = signin.SCOPES[self.name]
        if flow_kind == "device_code":
            device = await signin.start_device_code(cid, authority, scopes, **options)
            started = SignIn(device, device.verification_uri, device.user_code, device.message)
        else:
            flow = await signin.start_microsoft_flow(cid, authority, scopes,
                                                     login_hint=account_hint, **options)
            started = SignIn(flow, flow.url)
        await wiring.store.kv.set(CLIENT_KEY, {"client_id": cid, "authority": authority,
                                               **options})
        return started


def keyring_tokens(agent: Agent, store: Store) -> TokenProvider:
    """Access tokens for ``agent``'s account from msal's keyring cache, with the client
    setting saved at sign-in (read on first use: a run that lists nothing never asks)."""
    provider: Any = None

    async def tokens(force_refresh: bool = False) -> str:
        nonlocal provider
        if provider is None:
            from sidecar.sources.graph import signin

            saved = await store.kv.get(CLIENT_KEY)
            if not saved or not agent.account:
                raise NeedsReauth(f"{agent.provider} account is not connected: connect "
                                  "it from the app first")
            provider = signin.token_provider(
                agent.account, signin.SCOPES[agent.provider or "outlook"],
                config=signin.MsalConfig(**saved))
        return str(await provider(force_refresh=force_refresh))

    return tokens


class OutlookProvider(GraphProvider):
    name = "outlook"
    source_class = OutlookSource


class TeamsProvider(GraphProvider):
    name = "teams"
    source_class = TeamsSource


OUTLOOK = OutlookProvider()
TEAMS = TeamsProvider()
