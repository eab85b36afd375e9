"""``sidecar agents list|add|remove``: manage agents without Electron."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sidecar.commands.common import print_json, with_store
from sidecar.commands.flags import add_setting_flags, config_from_args
from sidecar.domain import validate_agent
from sidecar.store import Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agents", help="list, add or remove agents")
    asub = p.add_subparsers(dest="agents_command", metavar="ACTION")
    asub.required = True

    ls = asub.add_parser("list", help="list agents")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_list)

    add = asub.add_parser("add", help="add (or replace, with --id) an agent")
    add.add_argument("--json", dest="agent_json", metavar="OBJECT",
                     help="the whole agent as a JSON object (same shape as agent_upsert)")
    add.add_argument("--id", help="agent id (default: generated)")
    add.add_argument("--name", help="display name")
    add.add_argument("--kind", choices=["local", "cloud"], default=None)
    add.add_argument("--dir", dest="directories", action="append", metavar="DIR",
                     help="a folder to read (repeatable)")
    add.add_argument("--ext", dest="extensions", action="append", metavar="EXT",
                     help="file extension to include, e.g. .md (repeatable)")
    add.add_argument("--types", help="comma list of tasks,notes,timelines,projects,taskComments")
    add.add_argument("--prompt", dest="prompt_template", help="instructions for the extractor")
    add.add_argument("--cron", dest="schedule_cron", help="cron schedule, e.g. '0 * * * *'")
    add.add_argument("--provider", choices=["gmail", "outlook", "teams"],
                     help="cloud agent provider")
    add.add_argument("--engine", choices=["local", "remote"])
    add.add_argument("--project-id", dest="project_id",
                     help="the app's project every record of this agent belongs to")
    add.add_argument("--disabled", action="store_true", help="add it disabled")
    add.add_argument("--no-watch", action="store_true", help="do not watch folders for changes")
    add_setting_flags(add, ["allowed_roots"])
    add.set_defaults(func=_add)

    rm = asub.add_parser("remove", help="remove an agent (its runs stay in the log)")
    rm.add_argument("agent_id")
    rm.set_defaults(func=_remove)


def _list(args: argparse.Namespace) -> int:
    records = with_store(args, lambda s: s.agents.records())
    if args.json:
        print_json(records)
        return 0
    if not records:
        print("no agents (add one with `sidecar agents add`)", file=sys.stderr)
        return 0
    for r in records:
        where = ", ".join(r.get("directories", [])) or r.get("provider") or ""
        state = "enabled" if r["enabled"] else "disabled"
        print(f"{r['id']:16} {r['kind']:6} {state:9} {r['schedule_cron']:14} {r['name']}  "
              f"[{where}]")
    return 0


def _agent_from_args(args: argparse.Namespace) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(args.agent_json) if args.agent_json else {}
    if not isinstance(raw, dict):
        raise SystemExit("sidecar: --json must be a JSON object")
    for key in ("id", "name", "directories", "extensions", "prompt_template", "schedule_cron",
                "provider", "engine", "project_id"):
        value = getattr(args, key)
        if value is not None:
            raw[key] = value
    if args.types:
        raw["data_types"] = [t.strip() for t in args.types.split(",") if t.strip()]
    raw.setdefault("kind", args.kind or ("cloud" if raw.get("provider") else "local"))
    if args.disabled:
        raw["enabled"] = False
    if args.no_watch:
        raw["watch"] = False
    return raw


def _add(args: argparse.Namespace) -> int:
    raw = _agent_from_args(args)
    roots = config_from_args(args).allowed_roots

    async def go(store: Store) -> dict[str, Any]:
        existing = await store.agents.get_agent(raw["id"]) if raw.get("id") else None
        agent = validate_agent(raw, existing=existing, allowed_roots=roots)
        created = await store.agents.upsert(agent)
        record = await store.agents.record(agent.id)
        assert record is not None
        from sidecar.linking import agent_warnings

        return {"created": created, "agent": record, "warnings": agent_warnings(agent)}

    result = with_store(args, go)
    print_json(result["agent"])
    print(f"agent {result['agent']['id']} {'added' if result['created'] else 'updated'}",
          file=sys.stderr)
    for warning in result["warnings"]:  # what agent_upsert_result.warnings says
        print(f"sidecar: warning: {warning}", file=sys.stderr)
    return 0


def _remove(args: argparse.Namespace) -> int:
    deleted = with_store(args, lambda s: s.agents.delete(args.agent_id))
    if not deleted:
        print(f"sidecar: no agent with id {args.agent_id!r}", file=sys.stderr)
        return 1
    print(f"agent {args.agent_id} removed", file=sys.stderr)
    return 0
