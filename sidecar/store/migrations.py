"""Schema history: append a script, never edit one; ``PRAGMA user_version`` is the index."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # v1: agents, the run log, and room for file state, the outbox, cursors and settings.
    """
    CREATE TABLE agents (
        id            TEXT PRIMARY KEY,
        kind          TEXT NOT NULL CHECK (kind IN ('local', 'cloud')),
        name          TEXT NOT NULL,
        enabled       INTEGER NOT NULL DEFAULT 1,
        schedule_cron TEXT NOT NULL,
        config        TEXT NOT NULL,
        state         TEXT NOT NULL DEFAULT 'ok',
        last_run_at   TEXT,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL
    );
    CREATE TABLE runs (
        id              TEXT PRIMARY KEY,
        agent_id        TEXT NOT NULL,
        agent_kind      TEXT NOT NULL,
        trigger         TEXT NOT NULL DEFAULT 'manual',
        status          TEXT NOT NULL
                        CHECK (status IN ('running', 'success', 'partial', 'error', 'cancelled')),
        items_processed INTEGER NOT NULL DEFAULT 0,
        items_created   INTEGER NOT NULL DEFAULT 0,
        errors          TEXT NOT NULL DEFAULT '[]',
        started_at      TEXT NOT NULL,
        completed_at    TEXT
    );
    CREATE INDEX runs_by_agent ON runs (agent_id, started_at DESC);
    CREATE INDEX runs_by_start ON runs (started_at DESC);
    CREATE TABLE file_state (
        agent_id       TEXT NOT NULL,
        path           TEXT NOT NULL,
        size           INTEGER,
        mtime_ns       INTEGER,
        content_hash   TEXT,
        extraction_key TEXT,
        status         TEXT NOT NULL DEFAULT 'new',
        last_result    TEXT,
        last_run_id    TEXT,
        updated_at     TEXT NOT NULL,
        PRIMARY KEY (agent_id, path)
    );
    CREATE TABLE outbox (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        idempotency_key TEXT NOT NULL UNIQUE,
        call_id         TEXT NOT NULL UNIQUE,
        agent_id        TEXT NOT NULL,
        run_id          TEXT,
        table_name      TEXT NOT NULL,
        data            TEXT NOT NULL,
        meta            TEXT NOT NULL DEFAULT '{}',
        state           TEXT NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'acked', 'failed')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        created_at      TEXT NOT NULL,
        sent_at         TEXT,
        acked_at        TEXT
    );
    CREATE INDEX outbox_by_state ON outbox (state, seq);
    CREATE INDEX outbox_by_run ON outbox (run_id);
    CREATE TABLE cursors (
        agent_id   TEXT PRIMARY KEY,
        cursor     TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE settings (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    # v2: every file a run skipped, and whether it will be retried (the run log's full list;
    # frames carry the first few and the totals).
    """
    CREATE TABLE run_skips (
        run_id   TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        item     TEXT NOT NULL,
        reason   TEXT NOT NULL,
        kind     TEXT NOT NULL CHECK (kind IN ('permanent', 'transient')),
        message  TEXT NOT NULL,
        PRIMARY KEY (run_id, item)
    );
    """,
    # v3: retryable inserts and delivery-aware runs. ``next_at`` (epoch seconds): a call the
    # app answered with a retryable error waits in the outbox until then (NULL: never
    # retried); ``delivered_at``: when run_delivered was sent (the run's last record settled).
    """
    ALTER TABLE outbox ADD COLUMN next_at REAL;
    CREATE INDEX outbox_retry ON outbox (next_at) WHERE next_at IS NOT NULL;
    ALTER TABLE runs ADD COLUMN delivered_at TEXT;
    """,
    # v4: records that wait for another insert's id (tasks and timelines of a suggested new
    # project, comments on a task the sidecar suggested), the id each acked insert got
    # (``result_id``, JSON), and which tasks came from which email thread.
    """
    ALTER TABLE outbox ADD COLUMN result_id TEXT;
    CREATE TABLE held (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        idempotency_key TEXT NOT NULL UNIQUE,
        parent_call_id  TEXT NOT NULL,
        field           TEXT NOT NULL,
        agent_id        TEXT NOT NULL,
        run_id          TEXT,
        table_name      TEXT NOT NULL,
        data            TEXT NOT NULL,
        meta            TEXT NOT NULL DEFAULT '{}',
        created_at      TEXT NOT NULL
    );
    CREATE INDEX held_by_parent ON held (parent_call_id);
    CREATE INDEX held_by_run ON held (run_id);
    CREATE TABLE thread_tasks (
        thread_key TEXT NOT NULL,
        call_id    TEXT NOT NULL,
        title      TEXT NOT NULL,
        source     TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (thread_key, call_id)
    );
    """,
)

LATEST = len(MIGRATIONS)
