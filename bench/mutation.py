"""Mutation testing of the core modules: how many deliberate bugs do the fast tests catch?

A benchmark, not part of CI. Each module is mutated by mutmut (3.x) in a throwaway copy of
the repository, against the fast, in-process tests that guard it; the script prints the kill
rate per module and every surviving mutant with its diff, for a person to judge.

    .venv/bin/python bench/mutation.py                      # every module, 15 min each
    .venv/bin/python bench/mutation.py codec readers --minutes 5 --children 1

Kill rate = (killed + timed out) / (killed + timed out + survived + no tests); mutants not
reached within the time bound are reported apart ("not checked"), never counted as killed.
mutmut switches mutants when a function is called, so code that only runs at import time
(module constants built by a function) is reported as surviving: see the survivor list.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    """One module and the fast tests (pytest node ids or paths) that guard it."""

    source: str
    tests: tuple[str, ...]


#: The core modules and their fast tests. mutmut attributes tests to functions by tracing the
#: test process, so what only a daemon subprocess runs counts as "no tests" (most of delivery
#: and runner: their suites drive the real daemon); the in-process tests are what is measured.
TARGETS: dict[str, Target] = {
    "codec": Target("sidecar/protocol/codec.py", ("tests/test_protocol.py",)),
    "readers": Target("sidecar/readers/__init__.py", ("tests/test_readers.py",)),
    "scheduler": Target("sidecar/scheduler.py", (
        "tests/test_scheduler.py", "tests/test_scheduler_mutants.py")),
    "outbox": Target("sidecar/store/outbox.py", (
        "tests/test_store.py", "tests/test_outbox_mutants.py",
        "tests/reliability/test_responsiveness.py::"
        "test_queueing_thousands_of_records_lets_other_requests_in")),
    "delivery": Target("sidecar/delivery.py", (
        "tests/test_delivery.py::test_an_ack_that_lands_while_send_awaits_is_not_resent",
        "tests/test_delivery_mutants.py")),
    "runner": Target("sidecar/runner.py", (
        "tests/test_runner_mutants.py", "tests/test_runner_cancel.py",
        "tests/reliability/test_responsiveness.py::"
        "test_queueing_thousands_of_records_lets_other_requests_in",
        "tests/reliability/test_responsiveness.py::"
        "test_one_document_goes_to_the_engine_and_its_records_to_the_outbox")),
    "dates": Target("sidecar/extractors/dates.py", (
        "tests/test_dates.py", "tests/test_dates_mutants.py")),
    "date_values": Target("sidecar/extractors/date_values.py", (
        "tests/test_dates.py", "tests/test_dates_mutants.py", "tests/test_reference_date.py")),
    "postprocess": Target("sidecar/extractors/postprocess.py", (
        "tests/test_extractive.py", "tests/test_reference_date.py", "tests/test_schema.py",
        "tests/test_postprocess_mutants.py")),
}
KILLED = {"killed", "timeout"}
COUNTED = KILLED | {"survived", "no tests"}
_IGNORE = shutil.ignore_patterns(".venv", ".git", "mutants", "__pycache__", ".pytest_cache",
                                 ".hypothesis", "*.gguf")


@dataclass
class Outcome:
    name: str
    statuses: Counter[str] = field(default_factory=Counter)
    survivors: list[tuple[str, str]] = field(default_factory=list)  # (mutant, diff)
    seconds: float = 0.0
    timed_out: bool = False

    @property
    def counted(self) -> int:
        return sum(n for s, n in self.statuses.items() if s in COUNTED)

    @property
    def rate(self) -> float | None:
        killed = sum(self.statuses[s] for s in KILLED)
        return killed / self.counted if self.counted else None


def _setup_cfg(target: Target, isolation: str = "fork") -> str:
    tests = "\n".join(f"    {t}" for t in target.tests)
    return (f"[mutmut]\nsource_paths=sidecar\nprocess_isolation={isolation}\n"
            f"only_mutate={target.source}\n"
            f"pytest_add_cli_args_test_selection=\n{tests}\n"
            "pytest_add_cli_args=\n    -p\n    no:cacheprovider\n"
            "also_copy=\n    scripts\n    docs\n    examples\n    bench\n    models\n")


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
out = {}
for name in sys.stdin.read().split():
    try:
        out[name] = get_diff_for_mutant(name)
    except Exception as exc:
        out[name] = f"(no diff: {exc})"
print(json.dumps(out))
"""


def _mutmut(*args: str) -> list[str]:
    return [sys.executable, "-m", "mutmut", *args]


def run_one(name: str, target: Target, *, minutes: float, children: int,
            keep: Path | None, isolation: str = "fork") -> Outcome:
    """Mutate one module in a fresh copy of the repository; never touches the working tree."""
    out = Outcome(name)
    work = Path(tempfile.mkdtemp(prefix=f"mutation-{name}-"))
    copy = work / "repo"
    shutil.copytree(ROOT, copy, ignore=_IGNORE)
    (copy / "setup.cfg").write_text(_setup_cfg(target, isolation), encoding="utf-8")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    log = (work / "mutmut.log").open("w", encoding="utf-8")
    t0 = time.monotonic()
    proc = subprocess.Popen(_mutmut("run", "--max-children", str(children)), cwd=copy,
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        proc.wait(timeout=minutes * 60)
    except subprocess.TimeoutExpired:
        out.timed_out = True
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out.seconds = time.monotonic() - t0
    log.close()
    results = subprocess.run(_mutmut("results", "--all", "true"), cwd=copy, env=env,
                             capture_output=True, text=True, timeout=300)
    alive: list[tuple[str, str]] = []
    for line in results.stdout.splitlines():
        m = re.match(r"\s+(\S+): (.+)$", line)
        if not m:
            continue
        mutant, status = m[1], m[2].strip()
        out.statuses[status] += 1
        if status in ("survived", "no tests"):
            alive.append((mutant, status))
    if alive:  # one process for every diff (``mutmut show`` takes a second per mutant)
        shown = subprocess.run([sys.executable, "-c", _DIFFS], cwd=copy, env=env,
                               input="\n".join(m for m, _ in alive), capture_output=True,
                               text=True, timeout=600)
        diffs = json.loads(shown.stdout or "{}")
        for mutant, status in alive:
            diff = [ln for ln in diffs.get(mutant, "").splitlines()
                    if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
            out.survivors.append((f"{mutant} ({status})", "\n".join(diff)))
    if not out.statuses:
        tail = (work / "mutmut.log").read_text(errors="replace")[-2000:]
        print(f"{name}: mutmut gave no results; its log ends with:\n{tail}", file=sys.stderr)
    if keep is not None:
        dest = keep / name
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(work), dest)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return out


def equivalence(diff: str) -> str | None:
    """Why a survivor cannot change behaviour, when that shows in its diff alone (else None).

    Letter case only, in SQL text, ``sqlite3.Row`` keys or the codec name "utf-8": all three
    ignore it. Log text and failpoint names: the daemon's suites check those (failpoints arm
    only under the crash suite's SIDECAR_FAILPOINT), not the fast tests.
    """
    old = [ln[1:] for ln in diff.splitlines() if ln.startswith("-")]
    new = [ln[1:] for ln in diff.splitlines() if ln.startswith("+")]
    caseless = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|FROM|WHERE)\b|row\[|utf-8", re.I)
    if old and len(old) == len(new) and all(
            a.lower() == b.lower() and caseless.search(a) for a, b in zip(old, new, strict=True)):
        return "letter case"
    if old and all(re.search(r"\blog\.(debug|info|warning|exception|error)\(", a) for a in old):
        return "log text"
    if old and all("failpoints.hit(" in a for a in old):
        return "failpoint name"
    return None


def report(outcomes: list[Outcome], target_rate: float) -> str:
    lines = [f"{'module':<12} {'killed':>7} {'survived':>9} {'no tests':>9} {'timeout':>8} "
             f"{'unchecked':>10} {'kill rate':>10}  time"]
    for o in outcomes:
        s = o.statuses
        rate = "-" if o.rate is None else f"{o.rate * 100:.1f} %"
        flag = "" if o.rate is None or o.rate >= target_rate else "  < target"
        lines.append(f"{o.name:<12} {s['killed']:>7} {s['survived']:>9} {s['no tests']:>9} "
                     f"{s['timeout']:>8} {s['not checked']:>10} {rate:>10}  "
                     f"{o.seconds / 60:.1f} min{' (time bound hit)' if o.timed_out else ''}"
                     f"{flag}")
    lines.append("\nWith the survivors whose diff shows them equivalent (letter case, log text,"
                 " failpoint name) left out:")
    for o in outcomes:
        same = Counter(k for _, d in o.survivors if (k := equivalence(d)))
        counted = o.counted - sum(same.values())
        if counted:
            killed = sum(o.statuses[s] for s in KILLED)
            lines.append(f"{o.name:<12} {killed / counted * 100:5.1f} %  ({dict(same)})")
    for o in outcomes:
        if o.survivors:
            lines.append(f"\n-- {o.name}: {len(o.survivors)} surviving mutant(s)")
            for mutant, diff in o.survivors:
                why = equivalence(diff)
                lines.append(f"{mutant}{f'  [equivalent: {why}]' if why else ''}\n{diff}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*",
                    help=f"modules to mutate (default: all of {', '.join(TARGETS)})")
    ap.add_argument("--minutes", type=float, default=15.0, help="time bound per module")
    ap.add_argument("--children", type=int, default=1,
                    help="parallel mutant runs (the machine is shared: keep it low)")
    ap.add_argument("--target", type=float, default=0.85, help="kill rate to flag below")
    ap.add_argument("--isolation", choices=("fork", "forkserver"), default="fork",
                    help="mutmut's process_isolation (forkserver: workers start clean)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep each module's copy and mutmut state under this folder")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.modules) - set(TARGETS))
    if unknown:
        ap.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    outcomes = []
    for name in args.modules or list(TARGETS):
        print(f"mutating {name} ({TARGETS[name].source}) for at most {args.minutes:g} min …",
              file=sys.stderr, flush=True)
        outcomes.append(run_one(name, TARGETS[name], minutes=args.minutes,
                                children=args.children, keep=args.keep,
                                isolation=args.isolation))
    print(report(outcomes, args.target))
    if args.json is not None:
        args.json.write_text(json.dumps([
            {"module": o.name, "source": TARGETS[o.name].source, "statuses": dict(o.statuses),
             "kill_rate": o.rate, "seconds": round(o.seconds, 1), "time_bound_hit": o.timed_out,
             "survivors": [{"mutant": m, "diff": d, "equivalent": equivalence(d)}
                           for m, d in o.survivors]}
            for o in outcomes], indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
