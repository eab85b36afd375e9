"""The reference engine: the extractive pipeline with no model (evidence only).

It needs nothing but the document, so it is the contract suite's reference implementation,
the baseline the model is measured against in ``bench/quality.py``, and a working engine
on a machine where no model can be loaded.
"""

from __future__ import annotations

from sidecar.extractors.base import (
    ExtractionProblem,
    ExtractionRequest,
    ExtractionResult,
    Extractor,
)
from sidecar.extractors.extractive import Tuning
from sidecar.extractors.offload import extractive_off_loop
from sidecar.extractors.postprocess import reference_date
from sidecar.extractors.schema import allowed_tables


class RulesExtractor(Extractor):
    name = "rules"

    def __init__(self, tuning: Tuning | None = None) -> None:
        self.tuning = tuning or Tuning()

    def fingerprint(self) -> str:
        return f"rules:{self.tuning.version}"

    async def extract(self, request: ExtractionRequest) -> ExtractionResult:
        if not allowed_tables(request.data_types) or not request.text.strip():
            return ExtractionResult(stats={"strategy": "rules"})
        reference = reference_date(request)
        problems: list[ExtractionProblem] = []
        items = await extractive_off_loop(request, reference, self.tuning, None, problems)
        return ExtractionResult(items=tuple(items), problems=tuple(problems),
                                stats={"strategy": "rules"})
