-- Durable background executions and their event log (the executions domain).

CREATE TABLE executions (
    id               uuid        PRIMARY KEY,
    owner_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind             text        NOT NULL,
    queue            text        NOT NULL,
    name             text        NOT NULL,
    input            jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         smallint    NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT now(),
    attempt          integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout_s        integer     CHECK (timeout_s IS NULL OR timeout_s >= 1),
    progress         smallint    NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    progress_message text,
    result           jsonb,
    -- Every failed attempt: [{"attempt": 1, "at": "...", "message": "..."}].
    errors           jsonb       NOT NULL DEFAULT '[]',
    -- The claim: which worker runs which attempt, until when. Every write a
    -- worker makes is fenced on (worker_id, attempt).
    worker_id        uuid,
    lease_expires_at timestamptz,
    cancel_requested boolean     NOT NULL DEFAULT false,
    idempotency_key  text,
    request_hash     bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- What workers claim: queued, due, highest priority first.
CREATE INDEX executions_claimable ON executions (queue, priority DESC, run_at, id) WHERE status = 'queued';
-- What the rescuer scans: running executions whose lease may have expired.
CREATE INDEX executions_leases ON executions (lease_expires_at) WHERE status = 'running';
-- Listing a user's executions, newest first.
CREATE INDEX executions_owner ON executions (owner_id, id DESC);
-- Pruning finished executions.
CREATE INDEX executions_finished ON executions (finished_at) WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX executions_idempotency ON executions (owner_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TRIGGER executions_touch_updated_at
    BEFORE UPDATE ON executions
    FOR EACH ROW EXECUTE FUNCTION tessera_touch_updated_at();

-- Every status and progress change, in order: the SSE stream replays it and
-- resumes from `Last-Event-ID`.
CREATE TABLE execution_events (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id uuid        NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    event        text        NOT NULL CHECK (event IN ('status', 'progress')),
    data         jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX execution_events_by_execution ON execution_events (execution_id, id);
