"""What every engine's output goes through: the seed's validation, thresholds, de-duplication,
the document's date horizon, and timelines held when there is no project."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import PurePath

from sidecar.domain import record_title
from sidecar.extractors.base import (
    ExtractedRecord,
    ExtractionProblem,
    ExtractionRequest,
)
from sidecar.extractors.date_values import within_horizon
from sidecar.extractors.schema import InvalidItem, allowed_tables, normalize_item

#: The fields of each table that hold a date, checked against the document's horizon.
_DATE_FIELDS = {"tasks": "dueDate", "timelines": "date"}


def reference_date(request: ExtractionRequest) -> datetime:
    """What "Friday" means: the document's own date, else now, in local time."""
    ref = request.document_date or datetime.now()
    return ref.astimezone() if ref.tzinfo is None else ref


def reference_meta(request: ExtractionRequest, reference: datetime) -> dict[str, str]:
    """The reference an item's dates were resolved against, and where it came from."""
    origin = request.date_origin or ("document" if request.document_date else "now")
    return {"date": reference.isoformat(timespec="minutes"), "origin": origin}


def finalize(items: list[ExtractedRecord], request: ExtractionRequest, reference: datetime,
             problems: list[ExtractionProblem]) -> list[ExtractedRecord]:
    """Normalize against the seed schemas, apply the threshold, drop duplicates.

    A date outside the document's horizon (``date_values.within_horizon``: a year before its
    reference, three after) is removed: from a task its ``dueDate``, a timeline entirely.
    With ``request.stale_before`` (an agent's first run) a document dated before it gives no
    tasks or timelines and a task due before it is dropped (not marked done: a guess that it
    was done would still fill the review queue).
    Timelines need a project: without one they are counted and reported in one problem,
    "N timelines held: no project …", never dropped silently."""
    allowed = set(allowed_tables(request.data_types))
    if request.stale_before is not None and reference < request.stale_before:
        allowed -= {"tasks", "timelines"}  # an old document, read on a first run: indexed
    stale_ms = (request.stale_before.timestamp() * 1000 if request.stale_before is not None
                else None)
    out: list[ExtractedRecord] = []
    seen: set[tuple[str, str]] = set()
    held: list[str] = []
    doc_ref = reference_meta(request, reference)
    for it in items:
        if it.table not in allowed or it.confidence < request.min_confidence:
            continue
        raw = dict(it.data)
        if it.table == "notes" and not str(raw.get("title") or "").strip():
            raw["title"] = _label_title(request.label)
        # a timeline with no project to go to is checked like the others, then held
        hold = (it.table == "timelines" and not raw.get("projectId")
                and not request.project_id)
        try:
            data = normalize_item(it.table, raw, reference=reference,
                                  project_id="held" if hold else request.project_id)
        except InvalidItem as exc:
            problems.append(ExtractionProblem(chunk=None, message=str(exc)))
            continue
        field = _DATE_FIELDS.get(it.table)
        if field in data and not within_horizon(data[field], reference):
            if it.table == "timelines":
                continue
            del data[field]
        if hold:
            held.append(str(data["title"]))
            continue
        if (stale_ms is not None and it.table == "tasks"
                and data.get("dueDate", stale_ms) < stale_ms):
            continue  # due long before the lookback window: stale, not a suggestion
        key = (it.table, " ".join(record_title(data).lower().split()))
        if key in seen:
            continue
        seen.add(key)
        out.append(ExtractedRecord(it.table, data, it.source, max(0.0, min(1.0, it.confidence)),
                                 it.reference or doc_ref))
    if held:
        problems.append(ExtractionProblem(chunk=None, message=held_message(held)))
    return out


def stale_before(now: datetime, lookback_days: int, *, first_run: bool) -> datetime | None:
    """``ExtractionRequest.stale_before`` for a run: the lookback window's start on an agent's
    first run (``initial_lookback_days``; 0 or less: off), else None."""
    if not first_run or lookback_days <= 0:
        return None
    return now - timedelta(days=lookback_days)


def held_message(titles: list[str]) -> str:
    """The run-log line for timelines that could not be queued for want of a project."""
    n = len(titles)
    shown = "; ".join(t[:60] for t in titles[:5]) + ("; …" if n > 5 else "")
    return (f"{n} timeline{'s' if n != 1 else ''} held: no project (set the agent's project "
            f"to receive them): {shown}")


def _label_title(label: str) -> str:
    """A note's title when the document has none: its file name without the extension."""
    stem = PurePath(label).stem if label else ""
    return stem.replace("_", " ").strip() or "Notes"
