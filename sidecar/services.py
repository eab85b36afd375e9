"""One wiring point: the services behind a run, built the same way for the daemon
(``server.py``), ``sidecar run`` and ``sidecar extract``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.accounts import Accounts
from sidecar.delivery import Delivery
from sidecar.domain import Agent
from sidecar.extractors.pool import ExtractorPool
from sidecar.hub import Hub
from sidecar.paths import Paths
from sidecar.runner import Runner
from sidecar.settings import Config
from sidecar.sources.base import Source
from sidecar.sources.provider import Wiring
from sidecar.sources.registry import make_source
from sidecar.store import Store

log = logging.getLogger(__name__)

#: ``sources(agent, run_id, only)``: the source serving one run of ``agent``.
SourceFactory = Callable[[Agent, str | None, set[str] | None], Source]


def source_factory(store: Store, config: Config) -> SourceFactory:
    """Sources for ``store``'s agents: the registry's plug-in for each, with the settings."""

    def sources(agent: Agent, run_id: str | None, only: set[str] | None) -> Source:
        return make_source(agent, Wiring(store, config, run_id=run_id, only=only))

    return sources


@dataclass
class Services:
    """What runs an agent: engines, sources, the runner, delivery to the app, sign-ins."""

    store: Store
    hub: Hub
    delivery: Delivery
    engines: ExtractorPool
    runner: Runner
    accounts: Accounts

    async def close(self) -> None:
        """Stop in reverse order of need: sign-ins, runs, engines, then delivery."""
        await self.accounts.close()
        await self.runner.stop()
        await self.engines.close()
        await self.delivery.stop()


def engines(config: Config, paths: Paths) -> ExtractorPool:
    """The extraction engines (built lazily, one local model for every agent)."""
    return ExtractorPool(config, paths)


def build_services(store: Store, hub: Hub, config: Config, paths: Paths) -> Services:
    """Every service a run needs, wired together (nothing started: delivery starts only where
    an app is connected to receive the records)."""
    delivery = Delivery(hub, store.outbox, window=config.delivery_window,
                        timeout=config.insert_timeout_seconds)
    pool = engines(config, paths)
    runner = Runner(store, hub, delivery, sources=source_factory(store, config),
                    extractors=pool.for_agent,
                    initial_lookback_days=config.initial_lookback_days)
    return Services(store, hub, delivery, pool, runner, Accounts(store, hub, config))
