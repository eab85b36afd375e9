"""Save-to-insert latency of a watched folder: file written → tool_call on the WebSocket.

    python bench/latency.py [--saves 10] [--quiet 0.3] [--spacing 3]

Starts the real daemon with ``--watch-quiet-seconds`` (the watcher's debounce, the floor of
this latency) and the real default model, creates a local agent with ``watch`` on over a
temp folder (tasks, engine local), connects a client that acks every tool_call, then saves a
new meeting-notes file with one clear action item ``--saves`` times (plus one unmeasured
warm-up that pays for the model load) and reports save → first tool_call for that file
(median, p95), and save → run_started / run_finished for context.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.client import DaemonProcess, SidecarClient  # noqa: E402

NAMES = ("Dana", "Marco", "Priya", "Lena", "Omar", "Kenji", "Sofia", "Tom", "Aisha", "Ben",
         "Carla", "Ivan")


def default_model_dir() -> Path:
    from sidecar.paths import Paths
    from sidecar.settings import Config

    return Paths.from_config(Config.load({})).model_dir


def notes(i: int) -> str:
    who = NAMES[i % len(NAMES)]
    return (f"Weekly sync with Northwind — meeting notes #{i}\n"
            f"Attendees: {who}, Alex, Sam\n\n"
            f"- Reviewed the Q{i % 4 + 1} budget; no changes needed.\n"
            f"- The client is happy with milestone {i + 3}.\n\n"
            f"Action items:\n"
            f"- [ ] Send the invoice #{4100 + i} to {who} by Friday\n")


@dataclass
class Watcher:
    """Drains pushed frames, acks tool_calls, and timestamps what arrives."""

    client: SidecarClient
    calls: dict[str, float] = field(default_factory=dict)  # source path → first arrival
    call_frames: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def loop(self) -> None:
        while True:
            frame = await self.client.pushed.get()
            now = time.perf_counter()
            if frame.get("type") == "tool_call":
                path = (frame.get("source") or {}).get("path") or "?"
                self.calls.setdefault(path, now)
                self.call_frames.setdefault(path, frame)
                await self.client.ack(frame)
            elif frame.get("type") in ("run_started", "run_finished"):
                self.runs.append((now, frame))
            self.changed.set()

    def run_times_after(self, t: float) -> tuple[float | None, float | None, dict[str, Any]]:
        started = finished = None
        record: dict[str, Any] = {}
        for when, f in self.runs:
            if when < t:
                continue
            if f["type"] == "run_started" and started is None:
                started = when - t
            if f["type"] == "run_finished" and finished is None:
                finished = when - t
                record = f.get("run") or {}
        return started, finished, record

    async def wait_call(self, path: str, t_saved: float, timeout: float) -> float | None:
        deadline = time.perf_counter() + timeout
        while path not in self.calls:
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 1.0)):
                    await self.changed.wait()
        return self.calls[path] - t_saved


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q * (len(s) - 1))))
    return s[k]


async def main_async(saves: int, quiet: float, spacing: float, timeout: float) -> list[str]:
    out: list[str] = []
    model_dir = default_model_dir()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "notes"
        folder.mkdir()
        data_dir = Path(tmp) / "data"
        d = await DaemonProcess.start(
            data_dir, token=secrets.token_urlsafe(24),
            extra_args=["--watch-quiet-seconds", str(quiet), "--model-dir", str(model_dir),
                        "--allowed-root", str(folder)])
        try:
            c = await d.connect()
            hello = await c.hello()
            created = await c.request({"type": "agent_upsert", "agent": {
                "kind": "local", "name": "Latency bench", "directories": [str(folder)],
                "data_types": ["tasks"], "engine": "local", "watch": True}})
            if created.get("type") != "agent_upsert_result":
                raise RuntimeError(f"agent_upsert failed: {created}")
            models = [m.get("name", m) if isinstance(m, dict) else m
                      for m in hello.get("models", [])]
            out.append(f"watch quiet period (the floor) = {quiet:.2f}s; model dir {model_dir}; "
                       f"hello models {models}")
            w = Watcher(c)
            task = asyncio.create_task(w.loop())
            await asyncio.sleep(1.0)  # let the observer start

            latencies: list[float] = []
            missing: list[str] = []
            for i in range(saves + 1):
                path = folder / f"meeting-{i:02d}.md"
                path.write_text(notes(i), encoding="utf-8")
                t_saved = time.perf_counter()
                key = str(path.resolve())
                lat = await w.wait_call(key, t_saved, timeout * (3 if i == 0 else 1))
                # let the run finish (its run_finished waits for our acks)
                for _ in range(int(timeout * 10)):
                    if w.run_times_after(t_saved)[1] is not None:
                        break
                    await asyncio.sleep(0.1)
                started, finished, record = w.run_times_after(t_saved)
                label = "warm-up (model load)" if i == 0 else f"save {i:2d}"
                title = (w.call_frames.get(key) or {}).get("data", {}).get("title")
                fmt = (lambda x: "—" if x is None else f"{x:.2f}s")  # noqa: E731
                out.append(f"  {label:21} tool_call {fmt(lat):>7}  run_started {fmt(started):>7}"
                           f"  run_finished {fmt(finished):>7}  "
                           f"created {record.get('items_created', '—')}  "
                           f"title {title!r}")
                if i > 0:
                    if lat is None:
                        missing.append(path.name)
                    else:
                        latencies.append(lat)
                await asyncio.sleep(spacing)

            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            status = await c.request({"type": "status"})
            runs = await c.request({"type": "run_list", "limit": 50})
            await c.close()
        finally:
            await d.stop()
    triggers: dict[str, int] = {}
    for r in runs.get("runs", []):
        triggers[r.get("trigger", "?")] = triggers.get(r.get("trigger", "?"), 0) + 1
    out.append(f"runs by trigger: {triggers}; outbox pending at end: "
               f"{status.get('outbox_pending')}")
    if latencies:
        out.append(f"save → tool_call over {len(latencies)} saves: median "
                   f"{statistics.median(latencies):.2f}s, p95 {pct(latencies, 0.95):.2f}s, "
                   f"min {min(latencies):.2f}s, max {max(latencies):.2f}s "
                   f"(floor = quiet period {quiet:.2f}s; median above floor "
                   f"{statistics.median(latencies) - quiet:.2f}s)")
    if missing:
        out.append(f"NO tool_call within {timeout:.0f}s for {len(missing)}/{saves} saves: "
                   f"{', '.join(missing)}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--saves", type=int, default=10)
    ap.add_argument("--quiet", type=float, default=0.3, help="--watch-quiet-seconds")
    ap.add_argument("--spacing", type=float, default=3.0, help="seconds between saves")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-save wait for a tool_call")
    args = ap.parse_args()
    print("\n".join(asyncio.run(main_async(args.saves, args.quiet, args.spacing,
                                           args.timeout))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
