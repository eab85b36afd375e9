"""Which source serves an agent: its kind and provider decide."""

from __future__ import annotations

from sidecar.agents import Agent
from sidecar.errors import SidecarError
from sidecar.sources.base import Source
from sidecar.store import Store


def make_source(store: Store, agent: Agent, run_id: str, only: set[str] | None) -> Source:
    if agent.kind == "local":
        from sidecar.sources.localdir import LocalFolderSource
        from sidecar.store.files import FileStateStore

        return LocalFolderSource(agent, FileStateStore(store.db), run_id=run_id, only=only)
    raise SidecarError(f"{agent.provider} agents are not available in this build",
                       code="unsupported")
