"""Spawn → ready-line time and idle RSS of ``sidecar serve``, median of several runs.

    python bench/startup.py [--runs 7] [--bundle dist/sidecar/sidecar | --no-bundle] [--json]

Reports the venv module (``python -m sidecar serve``) and the PyInstaller executable (``--bundle``,
or ``dist/sidecar/sidecar`` when it has been built by scripts/build-bundle) against the targets
(venv: ready ≤ 0.5 s; bundle: ready ≤ 1 s; both: idle RSS ≤ 60 MB), the bundle's size on disk
and the bundle/venv ratios. Also checks that llama_cpp was not loaded at start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.client import DaemonProcess  # noqa: E402

DEFAULT_BUNDLE = ROOT / "dist" / "sidecar" / ("sidecar.exe" if os.name == "nt" else "sidecar")


def _dir_size(path: Path) -> int:
    """Bytes on disk under ``path`` (symlinks not followed, each file counted once)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


async def one_run(command: list[str] | None, idle: float) -> tuple[float, float, float, bool]:
    """One spawn: (spawn→ready s, CPU s used to get ready, idle RSS MB, libllama mapped)."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        d = await DaemonProcess.start(Path(tmp), token=secrets.token_urlsafe(24),
                                      command=command)
        ready = time.perf_counter() - t0
        proc = psutil.Process(d.ready.pid)
        cpu = sum(proc.cpu_times()[:2])
        c = await d.connect()
        await c.hello()
        await c.close()
        await asyncio.sleep(idle)
        rss = proc.memory_info().rss / 1e6
        try:
            llama = any("libllama" in m.path for m in proc.memory_maps())
        except psutil.Error:
            llama = False
        await d.stop()
    return ready, cpu, rss, llama


def summarize(samples: list[tuple[float, float, float, bool]]) -> dict[str, float]:
    """Medians (and the ready-time spread) of one target's runs."""
    ready = [s[0] for s in samples]
    return {
        "ready_median_s": statistics.median(ready),
        "ready_min_s": min(ready),
        "ready_max_s": max(ready),
        "ready_cpu_median_s": statistics.median(s[1] for s in samples),
        "rss_median_mb": statistics.median(s[2] for s in samples),
        "llama_loaded": float(any(s[3] for s in samples)),
    }


async def measure_all(targets: dict[str, list[str] | None], runs: int, idle: float
                      ) -> dict[str, dict[str, float]]:
    """Runs interleaved (venv, bundle, venv, …) so a load spike hurts both alike."""
    samples: dict[str, list[tuple[float, float, float, bool]]] = {k: [] for k in targets}
    for _ in range(runs):
        for name, command in targets.items():
            samples[name].append(await one_run(command, idle))
    return {name: summarize(s) for name, s in samples.items()}


def report(name: str, m: dict[str, float], ready_target: float, rss_target: float) -> str:
    ok_ready = "ok" if m["ready_median_s"] <= ready_target else "OVER"
    ok_rss = "ok" if m["rss_median_mb"] <= rss_target else "OVER"
    return (f"{name:8} ready median {m['ready_median_s']:.3f}s (min {m['ready_min_s']:.3f}, "
            f"max {m['ready_max_s']:.3f}; CPU {m['ready_cpu_median_s']:.3f}s) target "
            f"≤{ready_target}s {ok_ready} | idle RSS "
            f"{m['rss_median_mb']:.1f} MB target ≤{rss_target} MB {ok_rss} | llama.cpp "
            f"loaded at start: {'YES' if m['llama_loaded'] else 'no'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--idle", type=float, default=1.0, help="seconds idle before reading RSS")
    ap.add_argument("--bundle", type=Path, help="path to the bundled sidecar executable")
    ap.add_argument("--no-bundle", action="store_true", help="measure the venv only")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args()
    bundle_exe: Path | None = None
    if not args.no_bundle:
        bundle_exe = args.bundle or (DEFAULT_BUNDLE if DEFAULT_BUNDLE.is_file() else None)
        if bundle_exe is not None and not bundle_exe.is_file():
            ap.error(f"no bundle at {bundle_exe}: run scripts/build-bundle")
    lines = []
    out: dict[str, object] = {}
    targets: dict[str, list[str] | None] = {"venv": None}
    if bundle_exe is not None:
        targets["bundle"] = [str(bundle_exe)]
    measured = asyncio.run(measure_all(targets, args.runs, args.idle))
    venv = measured["venv"]
    out["venv"] = venv
    lines.append(report("venv", venv, 0.5, 60))
    if bundle_exe is None:
        lines.append("bundle: not built (scripts/build-bundle), not measured")
    else:
        bundle = measured["bundle"]
        size_mb = _dir_size(bundle_exe.parent) / 1e6
        ready_ratio = bundle["ready_median_s"] / venv["ready_median_s"]
        cpu_ratio = bundle["ready_cpu_median_s"] / venv["ready_cpu_median_s"]
        rss_ratio = bundle["rss_median_mb"] / venv["rss_median_mb"]
        out.update(bundle=bundle, bundle_path=str(bundle_exe), bundle_size_mb=size_mb,
                   ratio_ready=ready_ratio, ratio_ready_cpu=cpu_ratio, ratio_rss=rss_ratio)
        lines.append(report("bundle", bundle, 1.0, 60))
        lines.append(f"bundle size on disk: {size_mb:.1f} MB ({bundle_exe.parent})")
        lines.append(f"ratio bundle/venv: ready {ready_ratio:.2f}x (CPU {cpu_ratio:.2f}x), "
                     f"idle RSS {rss_ratio:.2f}x")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None:
        out["loadavg_1m"] = load
        lines.append(f"(1-min load average {load:.1f} on {os.cpu_count()} CPUs)")
    print(json.dumps(out, indent=2) if args.json else "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
