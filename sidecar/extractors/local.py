"""The embedded engine: a llama.cpp model on this laptop, offline, any GGUF by path.

Small models (the 135M default) are used extractively: candidates come from the document and
the model only judges them (see ``judge.py``). Larger models can write records themselves
under a JSON-Schema grammar (``generative.py``), or read each document once beside the rules
(``hybrid.py``); ``extraction_strategy=auto`` follows the model catalogue's calibrated
measurements (``model_choice.py``): an unmeasured GGUF gets the rules alone.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from sidecar.extractors.base import (
    ExtractionProblem,
    ExtractionRequest,
    ExtractionResult,
    Extractor,
)
from sidecar.extractors.extractive import Tuning
from sidecar.extractors.hybrid import VERSION as HYBRID_VERSION
from sidecar.extractors.hybrid import extract_hybrid
from sidecar.extractors.judge import ModelJudge
from sidecar.extractors.llama_runtime import LlamaRuntime
from sidecar.extractors.offload import extractive_off_loop
from sidecar.extractors.postprocess import reference_date
from sidecar.extractors.schema import allowed_tables
from sidecar.model_choice import auto_strategy
from sidecar.model_files import ModelFile, resolve
from sidecar.paths import Paths
from sidecar.settings import Config

log = logging.getLogger(__name__)


class LocalExtractor(Extractor):
    """Extraction with the embedded llama.cpp model."""

    name = "local"

    def __init__(self, runtime: LlamaRuntime, *, strategy: str = "auto",
                 tuning: Tuning | None = None) -> None:
        self.runtime = runtime
        self.tuning = tuning or Tuning()
        self.strategy = self._choose(strategy)

    @classmethod
    def from_config(cls, config: Config, paths: Paths) -> LocalExtractor:
        model = resolve(config.model, paths.model_dir)
        runtime = LlamaRuntime(model, threads=config.model_threads, n_ctx=config.model_context,
                               idle_unload_seconds=config.model_idle_unload_seconds)
        strategy, weight = config.extraction_strategy, config.judge_weight
        if strategy == "auto":  # decided from the catalogue's measurements, and said so
            choice = auto_strategy(model)
            log.info("extraction_strategy=auto: %s", choice.why)
            strategy = choice.strategy
            weight = choice.judge_weight if weight is None else weight
        elif weight is None and model.spec is not None and model.spec.judge_weight is not None:
            weight = model.spec.judge_weight
        tuning = Tuning() if weight is None else replace(Tuning(), model_weight=weight)
        return cls(runtime, strategy=strategy, tuning=tuning)

    @property
    def model(self) -> ModelFile:
        return self.runtime.model

    def _choose(self, strategy: str) -> str:
        return strategy if strategy != "auto" else auto_strategy(self.model).strategy

    def fingerprint(self) -> str:
        spec = self.model.spec
        if spec is not None:
            ident = spec.sha256[:16]
        else:
            try:
                st = self.model.path.stat()
                ident = f"{st.st_size}-{st.st_mtime_ns}"
            except OSError:
                ident = "missing"
        version = {"extractive": f"{self.tuning.version}-w{self.tuning.model_weight:g}",
                   "hybrid": f"{self.tuning.version}-{HYBRID_VERSION}"}.get(self.strategy,
                                                                          "generative-2")
        return f"local:{self.model.name}:{ident}:{version}"

    async def extract(self, request: ExtractionRequest) -> ExtractionResult:
        reference = reference_date(request)
        problems: list[ExtractionProblem] = []
        stats: dict[str, Any] = {"strategy": self.strategy}
        if not allowed_tables(request.data_types) or not request.text.strip():
            return ExtractionResult(stats=stats)
        before = (self.runtime.tokens_evaluated, self.runtime.tokens_reused)
        if self.strategy == "extractive":
            # a model measured to add nothing (weight 0) is neither asked nor loaded
            judge = (ModelJudge(self.runtime, request.prompt_template)
                     if self.tuning.model_weight else None)
            items = await extractive_off_loop(request, reference, self.tuning, judge, problems)
            stats["model_calls"] = judge.calls if judge else 0
            chunks = 1
        elif self.strategy == "hybrid":
            items, stats_h = await extract_hybrid(self.runtime, request, reference, self.tuning,
                                                  problems)
            stats.update(stats_h)
            chunks = stats_h["model_calls"] or 1
        else:
            from sidecar.extractors.generative import LlamaCompleter, extract_generative

            completer = LlamaCompleter(self.runtime)
            items, problems, chunks = await extract_generative(
                completer, request, reference, n_ctx=self.runtime.n_ctx)
            stats["model_calls"] = completer.calls
        stats["tokens_evaluated"] = self.runtime.tokens_evaluated - before[0]
        stats["tokens_reused"] = self.runtime.tokens_reused - before[1]
        return ExtractionResult(items=tuple(items), problems=tuple(problems), chunks=chunks,
                                stats=stats)

    async def close(self) -> None:
        await self.runtime.close()
