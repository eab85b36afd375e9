"""Which plug-in serves a provider name: the one table a new source is added to."""

from __future__ import annotations

from collections.abc import Callable

from sidecar.domain import Agent
from sidecar.errors import ConfigError
from sidecar.sources.base import Source
from sidecar.sources.provider import Provider, Wiring


def _local() -> Provider:
    from sidecar.sources.localdir import PROVIDER

    return PROVIDER


def _gmail() -> Provider:
    from sidecar.sources.gmail import PROVIDER

    return PROVIDER


def _outlook() -> Provider:
    from sidecar.sources.graph import OUTLOOK

    return OUTLOOK


def _teams() -> Provider:
    from sidecar.sources.graph import TEAMS

    return TEAMS


#: Provider name → its plug-in, imported on first use (aiohttp, google-auth, msal stay unloaded
#: until an agent or a sign-in needs them).
PROVIDERS: dict[str, Callable[[], Provider]] = {
    "local": _local, "gmail": _gmail, "outlook": _outlook, "teams": _teams}


def provider(name: str | None) -> Provider:
    """The plug-in for ``name``; an unknown name is a clear error, never some other source."""
    load = PROVIDERS.get(name or "")
    if load is None:
        known = ", ".join(sorted(n for n in PROVIDERS if n != "local"))
        raise ConfigError(f"unknown provider {name!r} (known: {known})", field="provider")
    return load()


def provider_name(agent: Agent) -> str | None:
    """``local`` for a folder agent, else the agent's provider."""
    return "local" if agent.kind == "local" else agent.provider


def make_source(agent: Agent, wiring: Wiring) -> Source:
    """The source serving ``agent`` for one run."""
    return provider(provider_name(agent)).source(agent, wiring)
