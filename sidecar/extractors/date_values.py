"""Date values in records: the document's horizon, and epoch ms from whatever a model writes.

Finding and resolving date *expressions* in text is :mod:`sidecar.extractors.dates`; this
module judges and normalises the values that end up in a record's date fields.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time, timedelta

from sidecar.extractors.dates import _MAX_MS, _dt_ms, resolve_date

_NUMERIC = re.compile(r"[+-]?(?P<int>\d+)(?:\.\d+)?")

#: A date this long before the document's reference, or this long after it, is not one of its
#: deadlines or milestones (a typography article's "1898", a mistyped year).
HORIZON_PAST = timedelta(days=366)
HORIZON_FUTURE = timedelta(days=3 * 366)


def within_horizon(ms: int | None, reference: datetime) -> bool:
    """Is ``ms`` a plausible date for a document dated ``reference``?"""
    if ms is None:
        return False
    ref_ms = reference.timestamp() * 1000
    return (ref_ms - HORIZON_PAST.total_seconds() * 1000 <= ms
            <= ref_ms + HORIZON_FUTURE.total_seconds() * 1000)


def _number_ms(value: float | int) -> int | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    ms = round(value if abs(value) > 1e11 else value * 1000)
    return ms if abs(ms) <= _MAX_MS else None


def to_epoch_ms(value: object, reference: datetime) -> int | None:
    """Normalise what a model or API may put in a date field: int/float epoch seconds or ms (ms if > 1e11), ISO strings ("2026-12-01", "2026-12-01T10:00:00Z"), natural expressions -> resolve_date; None/''/garbage -> None."""  # noqa: E501
    if value is None or isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            return _number_ms(value)
        if isinstance(value, datetime):
            return _dt_ms(value, reference)
        if isinstance(value, date):
            return _dt_ms(datetime.combine(value, time()), reference)
        if not isinstance(value, str) or not value.strip():
            return None
        text = value.strip()
        number = _NUMERIC.fullmatch(text)
        if number is not None:  # epoch digits; short numbers ("2026", "12") are not dates
            return _number_ms(float(text)) if len(number["int"]) >= 9 else None
        try:
            return _dt_ms(datetime.fromisoformat(text), reference)
        except ValueError:
            return resolve_date(text, reference)
    except (ValueError, OverflowError, OSError):
        return None
