-- treadle work queue, schema 2: sessions waiting for a worker, and who runs them (SPEC §12).
-- Written by runner.enqueue() and `treadle submit`; claimed by workers with FOR UPDATE SKIP LOCKED.

-- One row per enqueued session. `app` is the definition hash of the graph that must run it (a
-- worker claims only its own graph's sessions). `input` is the initial state, as `json` for the
-- reason `steps.body` is (exact text). `owner` names the worker running it; while it runs, that
-- worker holds a session-level advisory lock on hashtextextended('treadle worker <schema> <owner>', 0)
-- and renews `heartbeat_at`: a running row whose lock is free or whose heartbeat is stale belongs
-- to a dead worker and goes back to `pending`. `attempts` counts runs that failed or lost their
-- worker; `last_error` says why the last one did.
CREATE TABLE session_queue (
    session_id   TEXT PRIMARY KEY,
    app          TEXT NOT NULL,
    input        JSON NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'completed', 'failed', 'paused')),
    owner        TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    claimed_at   TIMESTAMPTZ,
    heartbeat_at TIMESTAMPTZ
);
-- The claim's order: highest priority first, then oldest.
CREATE INDEX session_queue_pending ON session_queue (app, priority DESC, created_at)
    WHERE status = 'pending';
CREATE INDEX session_queue_running ON session_queue (owner) WHERE status = 'running';
