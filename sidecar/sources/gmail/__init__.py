"""Gmail: the source (new mail and attachments through the Gmail API) and its Google sign-in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.domain import Agent
from sidecar.errors import ConfigError
from sidecar.redaction import register_secret
from sidecar.sources.base import Source
from sidecar.sources.gmail.source import GmailSource, build_query
from sidecar.sources.provider import Provider, SignIn, Wiring

__all__ = ["PROVIDER", "GmailSource", "build_query"]


class GmailProvider(Provider):
    """Gmail agents; sign-in with Google's installed-app client on a loopback redirect."""

    name = "gmail"

    def source(self, agent: Agent, wiring: Wiring) -> Source:
        return GmailSource(agent, wiring.store, run_id=wiring.run_id,
                           api_base=wiring.config.gmail_api_base)

    async def sign_in(self, client: Mapping[str, Any], account_hint: str | None,
                      flow_kind: str | None, wiring: Wiring) -> SignIn:
        from sidecar.sources.gmail.signin import start_google_flow

        config = client.get("client_config")
        if not isinstance(config, dict):
            raise ConfigError("oauth_start.client.client_config must be Google's "
                              "installed-app client JSON", field="client.client_config")
        for section in config.values():  # the client secret is never logged either
            if isinstance(section, dict):
                register_secret(section.get("client_secret"))
        flow = await start_google_flow(config, account_hint,
                                       api_base=wiring.config.gmail_api_base)
        return SignIn(flow, flow.url)


PROVIDER = GmailProvider()
