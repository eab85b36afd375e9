"""``sidecar status``: every agent's next run, last run and its outcome, from the store.

The same fields as the ``status`` frame, computed from the database and the pure schedule
math; live-only facts (a run in progress, a battery deferral) come from the daemon's frame.
"""

from __future__ import annotations

import argparse
from typing import Any

from sidecar.commands.common import print_json, with_store
from sidecar.store import Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="agents' next and last runs, outbox backlog")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_run)


async def _collect(store: Store) -> dict[str, Any]:
    from sidecar.clock import iso, now, parse_iso
    from sidecar.schedule import cron_error, upcoming

    agents = []
    for r in await store.agents.records():
        runs = await store.runs.list(agent_id=r["id"], limit=1)
        error = cron_error(r["schedule_cron"])
        nxt = iso(upcoming(r["schedule_cron"], parse_iso(r.get("last_run_at")), now())) \
            if r["enabled"] else None
        agents.append({"id": r["id"], "name": r["name"], "kind": r["kind"],
                       "enabled": r["enabled"], "state": r["state"],
                       "schedule_cron": r["schedule_cron"], "schedule_error": error,
                       "last_run_at": r.get("last_run_at"), "next_run_at": nxt,
                       "last_run": runs[0] if runs else None})
    return {"agents": agents, "outbox_pending": await store.outbox.count("pending"),
            "held": await store.held.count()}


def _run(args: argparse.Namespace) -> int:
    status = with_store(args, _collect)
    if args.json:
        print_json(status)
        return 0
    for a in status["agents"]:
        last = a["last_run"]
        outcome = (f"{last['status']} ({last['items_processed']} docs, {last['items_created']} "
                   f"created, {len(last['errors'])} errors)") if last else "never ran"
        nxt = a["next_run_at"] or (a["schedule_error"] or "disabled")
        flag = "" if a["state"] == "ok" else f"  [{a['state']}]"
        print(f"{a['id']:18} {a['name'][:24]:24} next {nxt:26} last {outcome}{flag}")
    print(f"outbox: {status['outbox_pending']} record(s) waiting for Electron; "
          f"{status['held']} held until the app answers the insert they depend on "
          "(a new project, a task a reply comments on)")
    return 0
