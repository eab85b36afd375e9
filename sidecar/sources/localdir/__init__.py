"""Local folders: the agent's directories, scanned (and watched) by the sidecar itself."""

from __future__ import annotations

from sidecar.domain import Agent
from sidecar.sources.base import Source
from sidecar.sources.localdir.source import LocalFolderSource, agent_accept
from sidecar.sources.provider import Provider, Wiring

__all__ = ["PROVIDER", "LocalFolderSource", "agent_accept"]


class LocalProvider(Provider):
    """Folder agents: no account, the folders are the configuration."""

    name = "local"

    def source(self, agent: Agent, wiring: Wiring) -> Source:
        return LocalFolderSource(agent, wiring.store, run_id=wiring.run_id, only=wiring.only,
                                 allowed_roots=wiring.config.allowed_roots)


PROVIDER = LocalProvider()
