"""Spawn → ready-line time and idle RSS of ``sidecar serve``, median of several runs.

    python bench/startup.py [--runs 7] [--bundle dist/sidecar/sidecar]

Reports the venv module and, with ``--bundle``, the PyInstaller executable, against the
targets (venv: ready ≤ 0.5 s, idle RSS ≤ 60 MB; bundle: ready ≤ 1 s). Also checks that
llama_cpp was not imported at start-up.
"""

from __future__ import annotations

import argparse
import asyncio
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


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def measure(command: list[str] | None, runs: int, idle: float) -> dict[str, float]:
    ready_s: list[float] = []
    rss_mb: list[float] = []
    llama_loaded = False
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            d = await DaemonProcess.start(Path(tmp), token=secrets.token_urlsafe(24),
                                          command=command)
            ready_s.append(time.perf_counter() - t0)
            c = await d.connect()
            await c.hello()
            await c.close()
            await asyncio.sleep(idle)
            proc = psutil.Process(d.ready.pid)
            rss_mb.append(proc.memory_info().rss / 1e6)
            try:
                llama_loaded |= any("libllama" in m.path for m in proc.memory_maps())
            except psutil.Error:
                pass
            await d.stop()
    return {
        "ready_median_s": statistics.median(ready_s),
        "ready_min_s": min(ready_s),
        "ready_max_s": max(ready_s),
        "rss_median_mb": statistics.median(rss_mb),
        "llama_loaded": float(llama_loaded),
    }


def report(name: str, m: dict[str, float], ready_target: float, rss_target: float) -> str:
    ok_ready = "ok" if m["ready_median_s"] <= ready_target else "OVER"
    ok_rss = "ok" if m["rss_median_mb"] <= rss_target else "OVER"
    return (f"{name:8} ready median {m['ready_median_s']:.3f}s (min {m['ready_min_s']:.3f}, "
            f"max {m['ready_max_s']:.3f}) target ≤{ready_target}s {ok_ready} | idle RSS "
            f"{m['rss_median_mb']:.1f} MB target ≤{rss_target} MB {ok_rss} | llama.cpp "
            f"loaded at start: {'YES' if m['llama_loaded'] else 'no'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--idle", type=float, default=1.0, help="seconds idle before reading RSS")
    ap.add_argument("--bundle", type=Path, help="path to the bundled sidecar executable")
    args = ap.parse_args()
    lines = []
    venv = asyncio.run(measure(None, args.runs, args.idle))
    lines.append(report("venv", venv, 0.5, 60))
    if args.bundle:
        bundle = asyncio.run(measure([str(args.bundle)], args.runs, args.idle))
        lines.append(report("bundle", bundle, 1.0, 60))
        size = _dir_size(args.bundle.parent) / 1e6
        lines.append(f"bundle size on disk: {size:.1f} MB ({args.bundle.parent})")
        lines.append(f"ratio bundle/venv ready: "
                     f"{bundle['ready_median_s'] / venv['ready_median_s']:.2f}x")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
