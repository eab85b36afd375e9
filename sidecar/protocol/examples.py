"""Records the frames' examples share (docs/protocol.md prints them).

tests/test_protocol_examples.py holds them to real frames from the daemon: at every level their
keys are the keys it sends, so the docs cannot show a field that does not exist.
"""

from __future__ import annotations

from typing import Any

AGENT: dict[str, Any] = {
    "id": "a_3f2c", "kind": "local", "name": "Client folder", "enabled": True,
    "directories": ["/home/me/Clients"], "extensions": [".md", ".txt", ".pdf"],
    "include_globs": [], "exclude": [".git/", "node_modules/", ".*"],
    "max_file_bytes": 26214400, "data_types": ["tasks", "notes"],
    "prompt_template": "Extract my action items.", "schedule_cron": "0 * * * *",
    "engine": "local", "remote": {}, "min_confidence": 0.0, "project_id": None,
    "watch": True, "poll": False, "state": "ok", "last_run_at": None,
    "created_at": "2026-12-05T08:00:00.000Z", "updated_at": "2026-12-05T08:00:00.000Z"}

MODEL: dict[str, Any] = {
    "name": "smollm2-135m-instruct-q4_1",
    "file": "/home/me/.local/share/sidecar/models/SmolLM2-135M-Instruct.Q4_1.gguf",
    "size": 98362432, "sha256": "b179c952…", "license": "Apache-2.0", "state": "present",
    "default": True}

#: A run as run_started carries it (still running).
RUN_STARTED: dict[str, Any] = {
    "id": "r_77", "agent_id": "a_3f2c", "agent_kind": "local", "trigger": "manual",
    "status": "running", "items_processed": 0, "items_created": 0, "errors": [],
    "started_at": "2026-12-05T09:00:00.000Z", "completed_at": None, "delivered_at": None}

#: A closed run: ``extracted`` records queued, ``delivered`` acked, ``failed`` refused for
#: good, ``pending`` still on their way (in the outbox or waiting out a retry).
RUN_FINISHED: dict[str, Any] = {
    **RUN_STARTED, "status": "partial", "items_processed": 12, "items_created": 8,
    "errors": ["/home/me/Clients/scan.pdf: no text layer (skipped: no_text)"],
    "errors_total": 1, "completed_at": "2026-12-05T09:00:02.000Z",
    "extracted": 11, "delivered": 8, "failed": 0, "pending": 3}

#: The same run once its last record settled (run_delivered).
RUN_DELIVERED: dict[str, Any] = {
    **RUN_FINISHED, "items_created": 10, "delivered": 10, "failed": 1, "pending": 0,
    "errors": ["/home/me/Clients/scan.pdf: no text layer (skipped: no_text)",
               "Insert failed (tasks, '/home/me/Clients/brief.md'): NOT NULL constraint "
               "failed: tasks.title"], "errors_total": 2,
    "delivered_at": "2026-12-05T09:00:05.000Z"}

#: A run as status, run_list and hello_result show it (with skip counts).
RUN_VIEW: dict[str, Any] = {**RUN_DELIVERED, "skipped": {"permanent": 1, "transient": 0}}
