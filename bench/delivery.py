"""Outbox → client insert throughput of the real daemon: windowed delivery vs one at a time.

    python bench/delivery.py [--items 5000] [--window 64]

Pre-fills the outbox of a fresh data dir with N insert items (through the store, as the
tests do), starts ``sidecar serve`` (the daemon's default window, then ``--delivery-window 1``,
the seed's one-at-a-time), and times hello → every item acked and committed
(``outbox_pending`` = 0) for clients that ack each tool_call after 1 ms (each call handled
concurrently, like an async insert), after 1 ms one call at a time, and at once.
Ratios are windowed/serial from the same run. Targets: ≥10× at 1 ms, ≥5,000/s immediate.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.client import DaemonProcess, SidecarClient  # noqa: E402
from sidecar.store import Store  # noqa: E402
from sidecar.store.outbox import NewEntry, idempotency_key  # noqa: E402

AGENT = "a_bench"
ACK_DELAY = 0.001
MODES = ("delay-concurrent", "delay-serial", "immediate")


async def fill(data_dir: Path, n: int) -> None:
    async with Store(data_dir / "sidecar.sqlite3") as store:
        items = [NewEntry(idempotency_key=idempotency_key(AGENT, "b" * 8, i), agent_id=AGENT,
                         run_id=None, table="tasks",
                         data={"title": f"Task {i}", "status": "todo", "priority": "medium"},
                         meta={"source": {"path": f"/docs/{i}.md", "span": [0, 6]},
                               "confidence": 0.9})
                 for i in range(n)]
        for start in range(0, n, 1000):
            await store.outbox.enqueue(items[start:start + 1000])


async def consume(c: SidecarClient, n: int, mode: str) -> tuple[int, int]:
    """Ack ``n`` distinct tool_calls; returns (distinct ids, re-sent duplicates seen)."""
    seen: set[str] = set()
    dups = 0
    tasks: set[asyncio.Task[None]] = set()

    async def later(call: dict[str, Any]) -> None:
        await asyncio.sleep(ACK_DELAY)
        await c.ack(call)

    while len(seen) < n:
        call = await c.next_push("tool_call", timeout=60)
        if call["id"] in seen:
            dups += 1
            continue
        seen.add(call["id"])
        if mode == "immediate":
            await c.ack(call)
        elif mode == "delay-serial":
            await asyncio.sleep(ACK_DELAY)
            await c.ack(call)
        else:
            t = asyncio.create_task(later(call))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return len(seen), dups


async def measure(n: int, window: int | None, mode: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        await fill(data_dir, n)
        extra = ["--delivery-window", str(window)] if window is not None else []
        d = await DaemonProcess.start(data_dir, token=secrets.token_urlsafe(24),
                                      extra_args=extra)
        try:
            c = await d.connect()
            t0 = time.perf_counter()
            await c.hello()
            distinct, dups = await consume(c, n, mode)
            t_acked = time.perf_counter() - t0
            for _ in range(12000):  # ≤ 60 s
                if (await c.request({"type": "status"}))["outbox_pending"] == 0:
                    break
                await asyncio.sleep(0.005)
            t_committed = time.perf_counter() - t0
            await c.close()
        finally:
            await d.stop()
    return {"items": distinct, "dups": dups, "acked_s": t_acked, "committed_s": t_committed,
            "rate": n / t_committed}


def line(label: str, m: dict[str, float]) -> str:
    return (f"  {label:26} {m['rate']:9,.0f} inserts/s  ({int(m['items'])} items, all acked "
            f"{m['acked_s']:.2f}s, committed {m['committed_s']:.2f}s, re-sends {int(m['dups'])})")


async def main_async(n: int, window: int | None) -> list[str]:
    wlabel = f"window={window}" if window is not None else "default window"
    out: list[str] = [f"{n} queued inserts per case; real daemon, real WebSocket"]
    res: dict[tuple[str, str], dict[str, float]] = {}
    for mode in MODES:
        delay = "" if mode == "immediate" else f" ({ACK_DELAY * 1e3:.0f} ms before each ack)"
        out.append(f"client: {mode}{delay}")
        for key, w in ((wlabel, window), ("window=1 (seed)", 1)):
            res[(mode, key)] = m = await measure(n, w, mode)
            out.append(line(key, m))
        ratio = res[(mode, wlabel)]["rate"] / res[(mode, "window=1 (seed)")]["rate"]
        out.append(f"  ratio windowed/serial: {ratio:.1f}x")
    r_delay = (res[("delay-concurrent", wlabel)]["rate"]
               / res[("delay-concurrent", "window=1 (seed)")]["rate"])
    r_imm = res[("immediate", wlabel)]["rate"]
    out.append(f"targets: 1 ms-ack ratio ≥10x: {r_delay:.1f}x "
               f"{'ok' if r_delay >= 10 else 'UNDER'} | immediate-ack ≥5,000/s: {r_imm:,.0f}/s "
               f"{'ok' if r_imm >= 5000 else 'UNDER'}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--window", type=int, default=None,
                    help="windowed case's --delivery-window (default: the daemon's default)")
    args = ap.parse_args()
    print("\n".join(asyncio.run(main_async(args.items, args.window))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
