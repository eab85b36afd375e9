"""Each benchmark still runs against today's daemon: a bench that crashes is caught here, not
when someone next needs its figures (bench/latency.py went unnoticed when allowed roots came)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Small sizes: this checks that each bench completes and prints its summary, not its speed.
CASES = {
    "startup": (["--runs", "1", "--idle", "0.2", "--no-bundle"], "llama.cpp loaded at start: no"),
    "scan": (["--files", "200", "--repeats", "1"], "items yielded [1]"),
    "delivery": (["--items", "60"], "ratio windowed/serial"),
    "latency": (["--saves", "2", "--quiet", "0.3", "--spacing", "0.5"], "created 1"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bench_runs_and_prints_its_summary(name: str, tmp_path: Path) -> None:
    args, expect = CASES[name]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("SIDECAR_ALLOWED_ROOTS", None)  # as a user runs it: the daemon's own default
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), *args],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expect in proc.stdout, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "!!" not in proc.stdout, proc.stdout[-2000:]  # the benches' own failure marker
