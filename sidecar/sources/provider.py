"""What a source plug-in offers: how its agents' sources are built and how its accounts sign in.

Each package under ``sidecar/sources/`` (``localdir``, ``gmail``, ``graph``) exports one
:class:`Provider` per provider name; :mod:`sidecar.sources.registry` maps names to them. A new
source is a new package plus one line in the registry (and its name in
:data:`sidecar.domain.PROVIDERS`, so agents may name it).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from sidecar.domain import Agent
from sidecar.errors import ConfigError
from sidecar.settings import Config
from sidecar.sources.base import Source
from sidecar.store import Store


class Flow(Protocol):
    """A sign-in under way: ``wait`` returns the connected account (``cancel`` / ``close``
    are optional and looked for by :class:`sidecar.accounts.Accounts`)."""

    async def wait(self, timeout: float) -> str: ...


@dataclass(frozen=True, slots=True)
class SignIn:
    """A started sign-in: the flow to wait on and what the user is shown."""

    flow: Any
    url: str
    user_code: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Wiring:
    """What every source is built from: the store, the settings, the run."""

    store: Store
    config: Config
    run_id: str | None = None
    #: Local folders: just these paths (a watcher batch); None scans everything.
    only: set[str] | None = None


class Provider(abc.ABC):
    """One provider's plug-in: builds its sources and, for cloud accounts, starts sign-ins."""

    #: The name agents use (``agent.provider``; ``local`` for folder agents).
    name: ClassVar[str]

    @abc.abstractmethod
    def source(self, agent: Agent, wiring: Wiring) -> Source:
        """The source serving ``agent`` for one run."""

    async def sign_in(self, client: Mapping[str, Any], account_hint: str | None,
                      flow_kind: str | None, wiring: Wiring) -> SignIn:
        """Start connecting an account (the flow ends in the keyring, never in SQLite)."""
        raise ConfigError(f"{self.name} agents have no account to connect", field="provider")
