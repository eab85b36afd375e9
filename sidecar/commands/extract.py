"""``sidecar extract PATH…``: run the extraction pipeline on files or folders and print records.

The same readers, extractor and validation as an agent run, without a daemon, store or
Electron: what a user runs to see what an agent would suggest. Records are printed as the
insert ``tool_call`` payloads Electron would receive, one JSON object per line
(``--format text`` for people).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path, PurePath
from typing import Any, TextIO

from sidecar.commands.flags import add_setting_flags, config_from_args
from sidecar.domain import DEFAULT_EXCLUDES, Agent, record_title
from sidecar.errors import ConfigError
from sidecar.extractors.base import ALLOWED_TABLES, ExtractedRecord, ExtractionRequest
from sidecar.paths import Paths
from sidecar.settings import Config

#: What the engines extract from a document (projects and taskComments refer to the app's own
#: records: a project id, a task id).
DOCUMENT_TABLES = ("tasks", "notes", "timelines")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="extract records from files or folders and print them")
    p.add_argument("paths", nargs="+", type=Path, help="files or folders to read")
    p.add_argument("--types", default=",".join(DOCUMENT_TABLES),
                   help="comma-separated data types (tasks, notes, timelines, projects, "
                        f"taskComments); default every table a document gives: "
                        f"{','.join(DOCUMENT_TABLES)} (timelines are held without "
                        "--project-id, and the output says so)")
    p.add_argument("--prompt", default="", help="the agent's instructions (prompt_template)")
    p.add_argument("--engine", choices=("local", "remote"), default="local")
    p.add_argument("--project-id", default=None, help="projectId for the records (timelines)")
    p.add_argument("--min-confidence", type=float, default=0.0)
    p.add_argument("--format", choices=("jsonl", "text"), default="jsonl",
                   help="jsonl (default): one JSON object per record; text: a readable summary")
    p.add_argument("--max-file-bytes", type=int, default=20_000_000)
    add_setting_flags(p, ["model", "model_threads", "model_context", "extraction_strategy",
                          "remote_base_url", "remote_model", "remote_timeout_seconds"])
    p.set_defaults(func=_run)


def _files(paths: list[Path]) -> list[Path]:
    from sidecar.pathfilter import included
    from sidecar.readers import SUPPORTED_EXTENSIONS

    out: list[Path] = []
    for root in paths:
        if root.is_file():
            out.append(root)
            continue
        if not root.is_dir():
            raise ConfigError(f"{root}: no such file or folder", field="paths")
        for path in sorted(root.rglob("*")):
            rel = PurePath(path.relative_to(root).as_posix())
            parents_ok = all(
                included(PurePath(*rel.parts[: i + 1]), extensions=(), include_globs=(),
                         exclude=DEFAULT_EXCLUDES, is_dir=True)
                for i in range(len(rel.parts) - 1))
            if path.is_file() and parents_ok and included(
                    rel, extensions=tuple(SUPPORTED_EXTENSIONS), include_globs=(),
                    exclude=DEFAULT_EXCLUDES, is_dir=False):
                out.append(path)
    return out


def _agent(args: argparse.Namespace, types: tuple[str, ...]) -> Agent:
    """The command line as an agent: the engine, instructions and project it would have."""
    return Agent(id="extract", kind="local", name="sidecar extract", engine=args.engine,
                 data_types=types, prompt_template=args.prompt,
                 min_confidence=args.min_confidence, project_id=args.project_id)


def _frame(path: Path, n: int, item: ExtractedRecord) -> dict[str, Any]:
    """The insert frame Electron would receive for this record (the daemon's own function),
    with the file it came from."""
    from sidecar.delivery import tool_call_for
    from sidecar.protocol import to_dict
    from sidecar.store.outbox import Entry, stable_key

    data = dict(item.data)
    entry = Entry(seq=n, call_id=f"x{n}", idempotency_key=stable_key(f"file:{path}", item.table,
                                                                      data),
                  agent_id="extract", run_id=None, table=item.table, data=data,
                  meta={"source": {**item.source.to_json(), "reference": item.reference},
                        "confidence": round(item.confidence, 3)})
    return {"file": str(path), **to_dict(tool_call_for(entry))}


async def _extract_all(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    from sidecar.readers import SkipFile, read_document
    from sidecar.services import engines

    types = tuple(t.strip() for t in args.types.split(",") if t.strip())
    bad = [t for t in types if t not in ALLOWED_TABLES]
    if bad or not types:
        raise ConfigError(f"unknown data types {bad}; allowed: {sorted(ALLOWED_TABLES)}",
                          field="types")
    files = _files(args.paths)
    total = 0
    agent = _agent(args, types)
    pool = engines(config, Paths.from_config(config))
    try:
        extractor = await pool.for_agent(agent)
        for path in files:
            started = time.perf_counter()
            try:
                doc = await asyncio.to_thread(read_document, path, max_bytes=args.max_file_bytes)
            except SkipFile as exc:
                _emit(out, args.format == "jsonl", {"file": str(path), "skipped": exc.reason,
                                       "message": exc.message})
                continue
            result = await extractor.extract(ExtractionRequest.for_document(
                doc, data_types=agent.data_types, prompt_template=agent.prompt_template,
                label=str(path), min_confidence=agent.min_confidence,
                project_id=agent.project_id))
            took = time.perf_counter() - started
            if args.format == "text":
                out.write(f"\n{path}  ({len(doc.text)} chars, {len(result.items)} records, "
                          f"{took:.1f} s)\n")
            for item in result.items:
                total += 1
                _emit(out, args.format == "jsonl", _frame(path, total, item))
            for problem in result.problems:
                _emit(out, args.format == "jsonl", {"file": str(path), "problem": problem.message})
            for notice in result.stats.get("notices", ()):
                _emit(out, args.format == "jsonl", {"file": str(path), "notice": notice})
    finally:
        await pool.close()
    if args.format == "text":
        out.write(f"\n{total} record(s) from {len(files)} file(s)\n")
    return 0


def _emit(out: TextIO, as_json: bool, obj: dict[str, Any]) -> None:
    if as_json:
        out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        return
    if "skipped" in obj:
        out.write(f"\n{obj['file']}: skipped ({obj['skipped']}): {obj['message']}\n")
    elif "problem" in obj:
        out.write(f"  ! {obj['problem']}\n")
    elif "notice" in obj:
        out.write(f"  i {obj['notice']}\n")
    else:
        data = obj["data"]
        title = record_title(data)
        extra = [f"{k}={data[k]}" for k in ("status", "priority", "assignee", "dueDate", "date")
                 if k in data]
        out.write(f"  [{obj['table']:9}] {title}  ({obj['confidence']:.2f}"
                  f"{'; ' + ', '.join(extra) if extra else ''})\n")


def _run(args: argparse.Namespace) -> int:
    from sidecar.commands.common import quiet_logging
    from sidecar.stdio import claim_stdout

    out = claim_stdout()  # llama.cpp must not print into our output
    config = config_from_args(args)
    quiet_logging(args, config)
    return asyncio.run(_extract_all(args, config, out))
