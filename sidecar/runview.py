"""Runs as frames carry them: error lists capped with their total, long lines clipped.

The run log in SQLite keeps every line whole; a frame stays small whatever a run met (20,000
skipped files, an engine error per document). Pure functions, shared by the handlers that
answer ``status``/``run_list`` and by the runner's ``run_finished``.
"""

from __future__ import annotations

from typing import Any

#: Entries of a run's ``errors`` a frame carries (``errors_total`` says how many there
#: are), error lines one reply carries over all its runs, and characters of one line.
ERRORS_IN_FRAME = 50
ERROR_LINES_PER_REPLY = 100
ERROR_LINE_CHARS = 500


def clip_line(line: str) -> str:
    """Long lines (a 4 KB path) keep their start and their end, where the reason is."""
    if len(line) <= ERROR_LINE_CHARS:
        return line
    half = (ERROR_LINE_CHARS - 1) // 2
    return f"{line[:half]}…{line[-half:]}"


def capped(run: dict[str, Any], per_run: int = ERRORS_IN_FRAME) -> dict[str, Any]:
    """``run`` with at most ``per_run`` clipped error lines and ``errors_total``."""
    errors = run.get("errors") or []
    return {**run, "errors": [clip_line(e) for e in errors[:per_run]],
            "errors_total": len(errors)}
