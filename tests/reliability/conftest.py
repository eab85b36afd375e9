"""Reliability suite wiring: every test records its figures, and the run ends with one table."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import pytest


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured number, shown in the summary table (README "Reliability")."""

    area: str
    what: str
    value: str


_FIGURES: list[Figure] = []

Record = Callable[[str, str, Any], None]


@pytest.fixture
def figure() -> Record:
    """Record a figure: ``figure("crash", "records lost", 0)``."""

    def record(area: str, what: str, value: Any) -> None:
        text = f"{value:,.1f}" if isinstance(value, float) else (
            f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value))
        _FIGURES.append(Figure(area, what, text))

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    tr = terminalreporter
    tr.section("reliability figures")
    width_area = max(len(f.area) for f in _FIGURES)
    width_what = max(len(f.what) for f in _FIGURES)
    for f in _FIGURES:
        tr.write_line(f"{f.area:<{width_area}}  {f.what:<{width_what}}  {f.value}")
    out = os.environ.get("SIDECAR_FIGURES_JSON")
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump([asdict(f) for f in _FIGURES], fh, indent=1)
