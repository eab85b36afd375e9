"""``sidecar runs``: the run log, newest first."""

from __future__ import annotations

import argparse

from sidecar.commands.common import print_json, with_store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="show the run log (newest first)")
    p.add_argument("--agent", dest="agent_id", help="only this agent's runs")
    p.add_argument("--limit", type=int, default=20, help="how many runs (1-500, default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 500:
        raise SystemExit("sidecar: --limit must be between 1 and 500")
    runs = with_store(args, lambda s: s.runs.list(agent_id=args.agent_id, limit=args.limit))
    if args.json:
        print_json(runs)
        return 0
    for r in runs:
        errors = f"  {len(r['errors'])} error(s)" if r["errors"] else ""
        print(f"{r['started_at']}  {r['id']}  {r['agent_id']:16} {r['status']:9} "
              f"processed={r['items_processed']} created={r['items_created']}{errors}")
    if not runs:
        print("no runs yet")
    return 0
