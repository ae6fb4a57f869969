-- treadle checkpoints, schema 1. Applied by PostgresCheckpointer.open() inside one transaction,
-- under an advisory lock, in the checkpointer's schema (search_path); recorded in schema_migrations.

-- One row per session: the monotonic latest pointer. `token` changes with every write of the latest
-- step; `log_end` is the next free position of the session's message log.
CREATE TABLE sessions (
    session_id  TEXT PRIMARY KEY,
    latest_step BIGINT NOT NULL,
    token       TEXT NOT NULL,
    log_end     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,  -- unix ms, from the runner's clock
    updated_at  BIGINT NOT NULL
);

-- One row per stored step: a self-contained snapshot, or a delta against `base_step`. Every row of a
-- delta's chain lies in [root_step, step]. The step's messages are log entries
-- [messages_start, messages_start + messages_len) of the session's message log. The step's metadata
-- is JSONB (queryable: ran_nodes @> '["plan"]'); `body`, which carries state values, is `json`,
-- which keeps the text exactly (JSONB would turn the float 1e300 into an integer, -0.0 into 0.0 and
-- refuse "\u0000").
CREATE TABLE steps (
    session_id       TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    step             BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('snapshot', 'delta')),
    base_step        BIGINT,
    root_step        BIGINT NOT NULL,
    messages_start   BIGINT NOT NULL,
    messages_len     BIGINT NOT NULL,
    ran_nodes        JSONB NOT NULL,
    skipped_nodes    JSONB NOT NULL,
    updated_channels JSONB NOT NULL,
    body             JSON NOT NULL,
    PRIMARY KEY (session_id, step)
);
CREATE INDEX steps_session_created_at ON steps (session_id, created_at);

-- Each message a session ever held, stored once, in append order, as {"role": …, "content": …}
-- (`json`, so any text round-trips; read it with message->>'content').
CREATE TABLE messages (
    session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    message    JSON NOT NULL,
    PRIMARY KEY (session_id, seq)
);

-- Who runs a session now. The lease itself is a session-level advisory lock held by the owner's
-- connection (released by the server the moment that connection ends); this row names the owner and
-- carries its heartbeat for operators.
CREATE TABLE session_leases (
    session_id   TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    acquired_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL
);
