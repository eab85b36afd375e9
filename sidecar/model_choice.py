"""Which model, and which strategy, fits this machine: the catalogue's measurements against RAM
and cores. Used by ``sidecar models recommend`` and by ``extraction_strategy=auto``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.model_files import Manifest, ModelFile, ModelSpec, load_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Machine:
    """What a model needs from the laptop: RAM (total and free now) and physical cores."""

    total_ram: int
    available_ram: int
    cores: int

    ram_known: bool = True

    @classmethod
    def probe(cls) -> Machine:
        try:
            import psutil

            mem = psutil.virtual_memory()
            cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
            return cls(total_ram=mem.total, available_ram=mem.available, cores=cores)
        except Exception as exc:  # a sandbox that hides memory: judge by cores alone
            log.warning("cannot read this machine's memory (%s); RAM is not checked", exc)
            return cls(total_ram=1 << 62, available_ram=1 << 62, cores=os.cpu_count() or 1,
                       ram_known=False)

    def describe(self) -> str:
        ram = (f"{self.total_ram / 1e9:.1f} GB RAM ({self.available_ram / 1e9:.1f} GB free)"
               if self.ram_known else "RAM unknown")
        return f"{ram}, {self.cores} core(s)"


@dataclass(frozen=True, slots=True)
class Choice:
    """A decision and the sentence that explains it."""

    spec: ModelSpec | None
    strategy: str
    judge_weight: float | None
    why: str


def fits(spec: ModelSpec, machine: Machine) -> tuple[bool, str]:
    """Whether ``spec`` can run here as measured, and the numbers that decide it."""
    rss = int(spec.measured.get("rss_bytes") or 0)
    if machine.total_ram < spec.min_ram_bytes:
        return False, (f"needs {spec.min_ram_bytes / 1e9:.1f} GB of RAM, this machine has "
                       f"{machine.total_ram / 1e9:.1f} GB")
    if rss and machine.available_ram < rss:
        return False, (f"needs {rss / 1e9:.1f} GB free while it runs, "
                       f"{machine.available_ram / 1e9:.1f} GB is free now")
    if machine.cores < spec.min_cores:
        return False, (f"needs {spec.min_cores} cores to reach its measured speed, this "
                       f"machine has {machine.cores}")
    return True, (f"fits: {spec.min_ram_bytes / 1e9:.1f} GB RAM and {spec.min_cores} core(s) "
                  "needed")


def measured_text(spec: ModelSpec) -> str:
    m = spec.measured
    if not m:
        return "no measured figures"
    parts = [f"tasks F1 {m['tasks_f1']:.3f}" if "tasks_f1" in m else "",
             f"{m['docs_per_min']:g} docs/min" if "docs_per_min" in m else "",
             f"{m['rss_bytes'] / 1e9:.1f} GB RSS" if m.get("rss_bytes") else ""]
    where = ", ".join(str(m[k]) for k in ("machine", "date") if m.get(k))
    return ", ".join(p for p in parts if p) + (f" (measured on {where})" if where else "")


def recommend(manifest: Manifest, machine: Machine) -> tuple[ModelSpec, list[str]]:
    """The best-measured model that fits (tasks F1, then speed), and one line per model why."""
    lines: list[str] = []
    fitting: list[ModelSpec] = []
    for spec in manifest.models:
        ok, why = fits(spec, machine)
        lines.append(f"{spec.name}: {measured_text(spec)}; {why}")
        if ok:
            fitting.append(spec)
    if not fitting:  # nothing fits: the smallest still runs the rules (weight 0: never loaded)
        best = min(manifest.models, key=lambda s: s.size)
        lines.append(f"nothing fits as measured; {best.name} is the smallest")
        return best, lines
    best = max(fitting, key=lambda s: (usable_f1(s), -s.size))
    lines.append(f"recommended: {best.name} (the highest tasks F1 as auto would use it, "
                 f"the smaller on a tie, of the {len(fitting)} that fit "
                 f"{machine.describe()})")
    return best, lines


def usable_f1(spec: ModelSpec) -> float:
    """Tasks F1 of the strategy ``auto`` would run with this model (its calibration, else
    its measured figure): a model whose best calibrated strategy is the rules adds nothing."""
    best = calibrated_best(spec)
    m = best[1] if best is not None else spec.measured
    return round(float(m.get("tasks_f1", 0)), 3)


def catalogued(model: ModelFile, manifest: Manifest | None = None) -> ModelSpec | None:
    """The catalogue entry for ``model``; a GGUF given by path counts when name and size match."""
    if model.spec is not None:
        return model.spec
    try:
        manifest = manifest or load_manifest()
        size = model.path.stat().st_size
    except Exception:  # no manifest, no file: nothing is known about it
        return None
    return next((m for m in manifest.models
                 if m.file == model.path.name and m.size == size), None)


#: Below this speed (documents a minute, as calibrated) a strategy is not chosen by ``auto``.
MIN_DOCS_PER_MIN = 1.0
#: How each calibrated strategy runs: (extraction_strategy, judge weight or None: the spec's).
_RUNS: dict[str, tuple[str, float | None]] = {
    "rules": ("extractive", 0.0), "judge": ("extractive", None),
    "generative": ("generative", None), "hybrid": ("hybrid", None)}


def calibrated_best(spec: ModelSpec) -> tuple[str, Mapping[str, Any]] | None:
    """The calibrated strategy with the best mean of tasks and timelines F1 among those fast
    enough (ties: the faster); None when the entry has no calibration."""
    usable = [(name, m) for name, m in spec.calibrated.items()
              if name in _RUNS and float(m.get("docs_per_min", 0)) >= MIN_DOCS_PER_MIN
              and "tasks_f1" in m]
    if not usable:
        return None

    def score(m: Mapping[str, Any]) -> tuple[float, float]:
        f1 = (float(m["tasks_f1"]) + float(m.get("timelines_f1", m["tasks_f1"]))) / 2
        return round(f1, 3), float(m.get("docs_per_min", 0))

    return max(usable, key=lambda pair: score(pair[1]))


def auto_strategy(model: ModelFile, machine: Machine | None = None) -> Choice:
    """``extraction_strategy=auto``: a catalogued model as calibrated (the strategy measured
    best on held-out documents), if this machine fits it; anything else the rules alone
    (judge weight 0: the model is neither asked nor loaded)."""
    spec = catalogued(model)
    if spec is None or spec.strategy is None:
        return Choice(None, "extractive", 0.0,
                      f"{model.name} has no measured figures in the model catalogue: "
                      "extracting with the rules only (the model is not asked); set "
                      "extraction_strategy (and judge_weight) to use it anyway")
    ok, why = fits(spec, machine or Machine.probe())
    if not ok:
        return Choice(spec, "extractive", 0.0,
                      f"{spec.name} {why}: extracting with the rules only")
    best = calibrated_best(spec)
    if best is not None:
        name, m = best
        strategy, weight = _RUNS[name]
        weight = spec.judge_weight if weight is None else weight
        return Choice(spec, strategy, weight, (
            f"{spec.name}: {name} ({strategy}"
            + (f", judge weight {weight:g}" if strategy == "extractive" else "")
            + f"), the best calibrated strategy: tasks F1 {float(m['tasks_f1']):.3f}"
            + (f", timelines F1 {float(m['timelines_f1']):.3f}" if "timelines_f1" in m else "")
            + f", {float(m.get('docs_per_min', 0)):g} docs/min"
            + (f" ({m['set']})" if m.get("set") else "")))
    weight = spec.judge_weight
    how = (f"{spec.strategy}, judge weight {weight:g}" if spec.strategy == "extractive"
           and weight is not None else spec.strategy)
    return Choice(spec, spec.strategy, weight,
                  f"{spec.name}: {how} as measured ({measured_text(spec)})")
