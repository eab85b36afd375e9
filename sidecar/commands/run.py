"""``sidecar run AGENT``: run one agent once, here, and print the records it queued.

The same runner, sources, extractor and outbox as the daemon, without a WebSocket: the
records wait in the outbox and reach Electron the next time it connects to the daemon.
``--demo`` creates (or reuses) an agent over ``examples/`` so a new user sees the whole
loop in one command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from sidecar.commands.flags import add_setting_flags, config_from_args
from sidecar.domain import record_title, validate_agent
from sidecar.errors import ConfigError
from sidecar.paths import Paths
from sidecar.settings import Config, setting
from sidecar.store.outbox import Entry

DEMO_ID = "a_demo_examples"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run one agent once (no daemon needed) and print its records")
    p.add_argument("agent", nargs="?", help="agent id or name")
    p.add_argument("--demo", metavar="FOLDER", nargs="?", const="examples", default=None,
                   help="create/reuse a demo agent over FOLDER (default: examples/) and run it")
    p.add_argument("--full", action="store_true", help="re-extract every document")
    p.add_argument("--format", choices=("jsonl", "text"), default="text",
                   help="text (default) or one JSON tool_call payload per line")
    add_setting_flags(p, ["model", "model_threads", "model_context", "extraction_strategy",
                          "remote_base_url", "remote_model", "allowed_roots",
                          "initial_lookback_days"])
    p.set_defaults(func=_run)


async def _resolve_agent(store: Any, args: argparse.Namespace, config: Config) -> str:
    if args.demo is not None:
        folder = Path(args.demo)  # resolved by _run, off the event loop
        existing = await store.agents.get_agent(DEMO_ID)
        agent = validate_agent({
            "id": DEMO_ID, "kind": "local", "name": f"Demo: {folder.name}",
            "directories": [str(folder)], "data_types": ["tasks", "notes"],
            "schedule_cron": "0 9 * * *", "watch": False}, existing=existing,
            allowed_roots=config.allowed_roots)
        await store.agents.upsert(agent)
        return DEMO_ID
    if not args.agent:
        raise ConfigError("name an agent (id or name) or pass --demo", field="agent")
    records = await store.agents.records()
    match = [r for r in records if args.agent in (r["id"], r["name"])]
    if len(match) != 1:
        known = ", ".join(f"{r['id']} ({r['name']})" for r in records) or "none"
        raise ConfigError(f"{'no' if not match else 'more than one'} agent matches "
                          f"{args.agent!r}; agents: {known}", field="agent")
    return str(match[0]["id"])


async def _run_once(args: argparse.Namespace, config: Config, paths: Paths,
                    out: TextIO) -> int:
    from sidecar.hub import Hub
    from sidecar.lifecycle import InstanceLock
    from sidecar.services import build_services
    from sidecar.store import Store

    lock = InstanceLock(paths.lock_file).acquire()  # the daemon must not run on this data dir
    try:
        async with Store(paths.database) as store:
            agent_id = await _resolve_agent(store, args, config)
            services = build_services(store, Hub(max_frame_bytes=config.max_frame_bytes),
                                      config, paths)
            try:  # no app is connected: the records wait in the outbox for the daemon
                run_id, _ = await services.runner.start(agent_id, "manual", full=args.full)
                record = await services.runner.wait(run_id)
            finally:
                await services.close()
            entries = await store.outbox.for_run(run_id)
    finally:
        lock.release()
    assert record is not None
    _print(out, args.format, record, entries)
    return 0 if record["status"] in ("success", "partial") else 1


def _print(out: TextIO, fmt: str, record: dict[str, Any], entries: list[Entry]) -> None:
    from sidecar import protocol as p
    from sidecar.delivery import tool_call_for

    for entry in entries:
        if fmt == "jsonl":  # exactly the frame Electron will receive
            out.write(json.dumps(p.to_dict(tool_call_for(entry)), ensure_ascii=False) + "\n")
            continue
        data = entry.data
        path = (entry.meta.get("source") or {}).get("path") or ""
        done = " (done)" if data.get("status") == "done" else ""
        out.write(f"[{entry.table:9}] {record_title(data)}{done}  ({Path(path).name})\n")
    out.flush()
    summary = (f"run {record['id']}: {record['status']}, {record['items_processed']} "
               f"document(s) extracted, {len(entries)} record(s) queued for Electron")
    if record["items_processed"] == 0 and not entries and not record.get("errors"):
        summary += " (nothing new since the last run; --full re-extracts, and records "
        summary += "already queued are never queued twice)"
    print(summary, file=sys.stderr)
    for err in record.get("errors") or []:
        print(f"  ! {err}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from sidecar.commands.common import quiet_logging
    from sidecar.stdio import claim_stdout

    out = claim_stdout()
    config = config_from_args(args)
    quiet_logging(args, config)
    paths = Paths.from_config(config).ensure()
    if args.demo is not None:
        args.demo = str(Path(args.demo).resolve())
        # the user named this folder on the command line: that allows it, for this run
        config = config.replace(allowed_roots=(*config.allowed_roots, Path(args.demo)))
        if (args.initial_lookback_days is None
                and not os.environ.get(setting("initial_lookback_days").env)):
            # the examples are dated: the demo shows their work whatever today's date is
            config = config.replace(initial_lookback_days=0)
    return asyncio.run(_run_once(args, config, paths, out))
