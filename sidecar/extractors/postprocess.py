"""What every engine's output goes through: the seed's validation, thresholds, de-duplication."""

from __future__ import annotations

from datetime import datetime

from sidecar.extractors.base import (
    ExtractedItem,
    ExtractionProblem,
    ExtractionRequest,
)
from sidecar.extractors.schema import InvalidItem, allowed_tables, normalize_item


def reference_date(request: ExtractionRequest) -> datetime:
    """What "Friday" means: the document's own date, else now, in local time."""
    ref = request.document_date or datetime.now()
    return ref.astimezone() if ref.tzinfo is None else ref


def finalize(items: list[ExtractedItem], request: ExtractionRequest, reference: datetime,
             problems: list[ExtractionProblem]) -> list[ExtractedItem]:
    """Normalize against the seed schemas, apply the threshold, drop duplicates."""
    allowed = set(allowed_tables(request.data_types))
    out: list[ExtractedItem] = []
    seen: set[tuple[str, str]] = set()
    for it in items:
        if it.table not in allowed or it.confidence < request.min_confidence:
            continue
        try:
            data = normalize_item(it.table, it.data, reference=reference,
                                  project_id=request.project_id)
        except InvalidItem as exc:
            problems.append(ExtractionProblem(chunk=None, message=str(exc)))
            continue
        title = str(data.get("title") or data.get("name") or data.get("content", ""))
        key = (it.table, " ".join(title.lower().split()))
        if key in seen:
            continue
        seen.add(key)
        out.append(ExtractedItem(it.table, data, it.source, max(0.0, min(1.0, it.confidence))))
    return out
