"""Which source serves an agent: its kind and provider decide."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sidecar.domain import Agent
from sidecar.errors import SidecarError
from sidecar.sources.base import Source
from sidecar.store import Store

if TYPE_CHECKING:
    from sidecar.accounts import Accounts


def make_source(store: Store, agent: Agent, run_id: str, only: set[str] | None,
                accounts: Accounts | None = None, *,
                allowed_roots: Sequence[str | Path] | None = None) -> Source:
    if agent.kind == "local":
        from sidecar.sources.localdir import LocalFolderSource
        from sidecar.store.files import FileStateStore

        return LocalFolderSource(agent, FileStateStore(store.db), run_id=run_id, only=only,
                                 allowed_roots=allowed_roots)
    if accounts is None:
        raise SidecarError(f"{agent.provider} agents need the daemon's account service",
                           code="unsupported")
    return accounts.source(agent, run_id)
