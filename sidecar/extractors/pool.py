"""One engine instance per kind: one local model in memory for every agent, remote by endpoint."""

from __future__ import annotations

import asyncio
import logging

from sidecar.domain import Agent
from sidecar.extractors.base import Extractor
from sidecar.paths import Paths
from sidecar.settings import Config

log = logging.getLogger(__name__)


class ExtractorPool:
    """Builds engines lazily (llama_cpp is imported on first local use, not at start-up)."""

    def __init__(self, config: Config, paths: Paths) -> None:
        self.config = config
        self.paths = paths
        self._local: Extractor | None = None
        self._remote: dict[tuple[str, str], Extractor] = {}
        self._lock = asyncio.Lock()

    async def for_agent(self, agent: Agent) -> Extractor:
        async with self._lock:
            if agent.engine == "remote":
                return self._remote_for(agent)
            if self._local is None:
                from sidecar.extractors.local import LocalExtractor

                self._local = LocalExtractor.from_config(self.config, self.paths)
            return self._local

    def _remote_for(self, agent: Agent) -> Extractor:
        from sidecar.extractors.remote import RemoteExtractor

        base_url = agent.remote.get("base_url") or self.config.remote_base_url
        model = agent.remote.get("model") or self.config.remote_model
        key = (base_url, model)
        if key not in self._remote:
            self._remote[key] = RemoteExtractor.from_config(self.config, base_url=base_url,
                                                            model=model)
        return self._remote[key]

    async def close(self) -> None:
        engines = [e for e in (self._local, *self._remote.values()) if e is not None]
        for engine in engines:
            try:
                await engine.close()
            except Exception:  # closing must not mask shutdown
                log.exception("closing %s engine failed", engine.name)
        self._local = None
        self._remote.clear()
