"""Mutation testing of the core modules: how many deliberate bugs do the fast tests catch?

A benchmark, not part of CI. Each module is mutated by mutmut (3.x) in a throwaway copy of
the repository, against the fast, in-process tests that guard it; the script prints the kill
rate per module and every surviving mutant with its diff, for a person to judge.

    .venv/bin/python bench/mutation.py                      # every module, 15 min each
    .venv/bin/python bench/mutation.py codec readers --minutes 5 --children 1
    .venv/bin/python bench/mutation.py delivery --from-kept DIR  # report a --keep DIR again

Survivors are marked "equivalent" when their diff alone shows it (letter case, a line of a
logging call, a failpoint name) and "harmless" when a person judged them so (``JUDGED``,
each with why); both are listed, and rates are printed with and without them.

Kill rate = (killed + timed out) / (killed + timed out + survived + no tests); mutants not
reached within the time bound are reported apart ("not checked"), never counted as killed.
mutmut switches mutants when a function is called, so code that only runs at import time
(module constants built by a function) is reported as surviving: see the survivor list.
"""

from __future__ import annotations

import argparse
import ast
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
#: test process, so what only a daemon subprocess runs counts as "no tests": delivery and
#: runner are measured by their in-process suites (test_delivery_mutants, test_runner_mutants:
#: the real Delivery/Runner over SQLite with a recording hub), not the daemon suites.
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
    #: source lines found only inside logging calls (for :func:`equivalence`)
    log_only: frozenset[str] = frozenset()

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
    collect(out, copy, target, env)
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


def collect(out: Outcome, copy: Path, target: Target, env: dict[str, str]) -> None:
    """Read mutmut's results (statuses, survivors' diffs) from the copy it ran in."""
    out.log_only = log_only_lines(copy / target.source)
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


_LOG_METHODS = {"debug", "info", "warning", "error", "exception"}


def log_only_lines(source: Path) -> frozenset[str]:
    """Lines (stripped) that occur in ``source`` only inside a logging call's statement
    (``log.info(…)``, a rate-limited ``self._quiet.warning(…)``), never in other code: a
    mutant changing only such lines changes only what is logged."""
    text = source.read_text(encoding="utf-8")
    lines = text.splitlines()
    in_log: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
            continue
        func = node.value.func
        if not (isinstance(func, ast.Attribute) and func.attr in _LOG_METHODS):
            continue
        owner = func.value
        name = owner.id if isinstance(owner, ast.Name) else (
            owner.attr if isinstance(owner, ast.Attribute) else "")
        if name in ("log", "_quiet", "quiet", "logger"):
            in_log.update(range(node.lineno - 1, (node.end_lineno or node.lineno)))
    logged = {lines[i].strip() for i in in_log}
    elsewhere = {ln.strip() for i, ln in enumerate(lines) if i not in in_log}
    return frozenset(ln for ln in logged - elsewhere if ln)


def equivalence(diff: str, log_only: frozenset[str] = frozenset()) -> str | None:
    """Why a survivor cannot change behaviour, when that shows in its diff alone (else None).

    Letter case only, in SQL text, ``sqlite3.Row`` keys or the codec name "utf-8": all three
    ignore it. Log text (a line of a logging call, ``log_only``) and failpoint names: the
    daemon's suites check those (failpoints arm only under the crash suite's
    SIDECAR_FAILPOINT), not the fast tests.
    """
    old = [ln[1:] for ln in diff.splitlines() if ln.startswith("-")]
    new = [ln[1:] for ln in diff.splitlines() if ln.startswith("+")]
    caseless = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|FROM|WHERE)\b|row\[|utf-8", re.I)
    if old and len(old) == len(new) and all(
            a.lower() == b.lower() and caseless.search(a) for a, b in zip(old, new, strict=True)):
        return "letter case"
    if old and all(re.search(r"\blog\.(debug|info|warning|exception|error)\(", a)
                   or a.strip() in log_only for a in old):
        return "log text"
    if old and all("failpoints.hit(" in a for a in old):
        return "failpoint name"
    return None


@dataclass(frozen=True)
class Judged:
    """A survivor a person read and found harmless, matched by its function and by text
    in its removed (``old``) and added (``new``) lines, so it survives renumbering."""

    module: str
    function: str
    old: str
    new: str
    why: str

    def matches(self, module: str, mutant: str, diff: str) -> bool:
        old = "\n".join(ln[1:] for ln in diff.splitlines() if ln.startswith("-"))
        new = "\n".join(ln[1:] for ln in diff.splitlines() if ln.startswith("+"))
        where = (f"\u01c1{self.function}__mutmut", f"x_{self.function}__mutmut")
        return (module == self.module and any(w in mutant for w in where)
                and self.old in old and self.new in new)


_EQ_CLOCK = "on a continuous clock equality never decides"
_TIMING = "timing only (tests assert no wall-clock bounds): "

#: Survivors judged harmless, each with why (what the README's survivor list says). Timing
#: entries change when something happens, never whether or in what order.
JUDGED: tuple[Judged, ...] = (
    Judged("delivery", "_take", "self._load[f.client_id] <= 0", "self._load[f.client_id] < 0",
           "a client's count left at 0 in the Counter reads as 0, like a deleted one"),
    Judged("delivery", "_on_disconnect", "discard(client.id)", "discard(None)",
           "a gone client's id is never reused (ids count up): left in the stalled set, it "
           "changes nothing"),
    Judged("delivery", "on_tool_result", "if f is None and frame.id not in self._settling",
           "if f is None or frame.id not in self._settling",
           "a call in flight is then also looked up in SQLite, where it is pending: same "
           "outcome, one more query"),
    Judged("delivery", "_next_entry", "self._tried.pop(entry.call_id, None)",
           "self._tried.pop(None, None)",
           "the settle of that call drops it from _tried as well"),
    Judged("delivery", "_still_pending", "if entry.call_id in self._settling or entry.call_id",
           "if entry.call_id in self._settling and entry.call_id",
           "the same two checks follow the SQLite lookup: same answer, one query more"),
    Judged("delivery", "_next_entry", "limit=512", "limit=513",
           "page size of a read from SQLite: any size sends the same calls in the same order"),
    Judged("delivery", "_next_entry", "limit=512", "pending_after(self._loaded_seq, )",
           "page size of a read from SQLite (the default, 500): same calls, same order"),
    Judged("delivery", "_load_due", "self._next_retry > now", "self._next_retry >= now",
           "a retry due this instant is loaded on the next turn, which follows at once"),
    Judged("delivery", "_load_due", "page = 512", "page = 513",
           "page size: the page is read and compared with the same number"),
    Judged("delivery", "_load_due", "limit=page", "due_retries(now, )",
           "the default limit is the same 512"),
    Judged("delivery", "_load_due", "now + 1.0", "now + 2.0",
           _TIMING + "with a full page in flight the next is looked for after 2 s, not 1"),
    Judged("delivery", "_load_due", "now if fresh else", "(fresh) and False",
           _TIMING + "a second full page of due retries is looked for 1 s later, not at once"),
    Judged("delivery", "_retry_due_in", "max(0.0,", "max(1.0,",
           _TIMING + "a retry falling due waits up to 1 s more before it is sent"),
    Judged("delivery", "_run", "self.timeout / 4 if self._inflight",
           "(self._inflight) or True",
           "the loop also wakes every timeout/4 with nothing in flight: idle wake-ups only"),
    Judged("delivery", "_run", "self.timeout / 4", "self.timeout / 5",
           _TIMING + "timed-out calls are looked for every timeout/5, not /4"),
    Judged("delivery", "_run", "self.timeout / 4", "self.timeout * 4",
           _TIMING + "a timed-out call is noticed up to 4x the timeout late, not 1/4 (still "
           "moved)"),
    Judged("delivery", "_pump", "target = self._target() or target",
           "self._target() and target",
           "differs only if the writers change during _next_entry's await; a send to a gone "
           "client returns False and re-queues the call"),
    Judged("delivery", "_expire", "now - f.sent_at >= self.timeout",
           "now - f.sent_at > self.timeout", _EQ_CLOCK),
    Judged("delivery", "_expire", "expired[f.client_id] += 1", "expired[f.client_id]",
           "the count only feeds the log line; the client is stalled either way"),
    Judged("delivery", "_expire", "others = len(", "others = None",
           "``others`` only feeds the log line"),
    Judged("delivery", "drained", "timeout: float = 30.0", "timeout: float = 31.0",
           "the one caller (the runner) passes its own timeout"),
    Judged("delivery", "drained", "while loop.time() < deadline",
           "while loop.time() <= deadline", _EQ_CLOCK),
    Judged("delivery", "drained", "min(0.25,", "min(1.25,",
           _TIMING + "the wait between checks; a committed settle wakes it at once"),
    Judged("delivery", "drained", "deadline - loop.time()", "deadline + loop.time()",
           _TIMING + "min(0.25, …) differs only in the last 0.25 s; the loop's deadline check "
           "ends it at most 0.25 s late"),
    *(Judged("runner", "start", "name=f\"run-{run['id']}\"", new,
             "the run task's name shows only in debugging output")
      for new in ("name=None", "      )", "name=f\"XXrun-")),
    Judged("runner", "_execute", "last_progress = 0.0", "last_progress = 1.0",
           "time.monotonic() is far above 1.25 s on a running machine: the first document "
           "still gets its progress frame"),
    Judged("delivery", "__init__", "window: int = 64", "window: int = 65",
           "every caller passes its window (the server and `sidecar run`, from the settings)"),
    Judged("delivery", "__init__", "timeout: float = 30.0", "timeout: float = 31.0",
           "every caller passes its insert timeout (from the settings)"),
    Judged("delivery", "__init__", "self._buffer: list[Entry] = []",
           "self._buffer: list[Entry] = None",
           "None and [] are both empty to `if not self._buffer`, which refills it first"),
    *(Judged("delivery", "__init__", "RateLimitedLog(log, interval=60.0)", new,
             "how often a repeated warning is logged")
      for new in ("RateLimitedLog(log, )", "interval=61.0")),
    Judged("delivery", "start", "next_retry_at(0.0)", "next_retry_at(1.0)",
           "retry times are epoch seconds, far above 1.0"),
    *(Judged("delivery", "start", 'name="delivery', new,
             "an asyncio task's name shows only in debugging output")
      for new in ("name=None", "loop(), )", "_run(), )", 'name="XXdelivery', 'name="DELIVERY')),
    Judged("delivery", "_flush", "        return True", "        return False",
           "an empty flush's result is read nowhere (the flush loop flushes only with acks "
           "waiting; stop ignores it)"),
    Judged("delivery", "_flush", "self._tried.pop(s.call_id, None)", "self._tried.pop(None, None)",
           "memory only: a settled call's timeout record stays, never read again (a settled "
           "call is never sent again)"),
    Judged("delivery", "_flush", "if is_disk_full(exc):", "if is_disk_full(None):",
           "it only picks which of two warnings is logged"),
    Judged("runner", "_extract_one", "max(len(found), 1)", "max(len(found), 2)",
           "range(0, max(n, 2), 256) has the same slice starts as range(0, max(n, 1), 256)"),
    Judged("runner", "_extract_one", "extra if start == 0 else", "(start == 0) or True",
           "the new project's suggestion is queued again with each later slice and ignored "
           "(same idempotency key): still one row"),
    Judged("runner", "_finish", "self.active.pop(agent.id, None)", "self.active.pop(agent.id, )",
           "a run is closed once (``closing`` guards cancel's close): its key is always there"),
    Judged("runner", "start", "agent_id=agent.id, agent=agent", "agent_id=None",
           "ActiveRun.agent_id is never read (Runner.active is keyed by the agent's id)"),
    *(Judged("runner", "_run", "files_total=0", new,
             "_execute sets files_total before any frame carries it; nothing else reads "
             "the counters") for new in ("files_total=None", "files_total=1",
                                         "files_done=0, items_found=0")),
)


def harmless(module: str, mutant: str, diff: str) -> str | None:
    return next((j.why for j in JUDGED if j.matches(module, mutant, diff)), None)


def verdict(o: Outcome, mutant: str, diff: str) -> tuple[str, str] | None:
    """("equivalent" | "harmless", why) for a survivor that is one, else None."""
    if why := equivalence(diff, o.log_only):
        return "equivalent", why
    if why := harmless(o.name, mutant, diff):
        return "harmless", why
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
                 " failpoint name) left out, then also those judged harmless (JUDGED):")
    for o in outcomes:
        kinds = [v for m, d in o.survivors if (v := verdict(o, m, d))]
        same = Counter(why for kind, why in kinds if kind == "equivalent")
        judged = sum(1 for kind, _ in kinds if kind == "harmless")
        killed = sum(o.statuses[s] for s in KILLED)
        counted = o.counted - sum(same.values())
        if counted:
            rest = counted - judged
            lines.append(f"{o.name:<12} {killed / counted * 100:5.1f} %  ({dict(same)}); "
                         f"{killed / rest * 100 if rest else 100:5.1f} % without the {judged} "
                         "judged harmless")
    for o in outcomes:
        if o.survivors:
            lines.append(f"\n-- {o.name}: {len(o.survivors)} surviving mutant(s)")
            for mutant, diff in o.survivors:
                v = verdict(o, mutant, diff)
                lines.append(f"{mutant}{f'  [{v[0]}: {v[1]}]' if v else ''}\n{diff}")
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
    ap.add_argument("--from-kept", type=Path, default=None, metavar="DIR",
                    help="no new run: report again on the copies a --keep run left in DIR")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.modules) - set(TARGETS))
    if unknown:
        ap.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    outcomes = []
    for name in args.modules or list(TARGETS):
        if args.from_kept is not None:
            kept = Outcome(name)
            collect(kept, args.from_kept / name / "repo", TARGETS[name],
                    {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
            outcomes.append(kept)
            continue
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
             "survivors": [{"mutant": m, "diff": d, "verdict": verdict(o, m, d)}
                           for m, d in o.survivors]}
            for o in outcomes], indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
