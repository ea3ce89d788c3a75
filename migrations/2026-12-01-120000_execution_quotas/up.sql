-- Per-user execution quotas (issue 12): how often an execution was re-run, and
-- the ledger of metered work (e.g. texts embedded) behind the daily allowances.

-- `POST /executions/{id}/retry` counts here; past MAX_EXECUTION_RERUNS it is refused.
ALTER TABLE executions ADD COLUMN reruns integer NOT NULL DEFAULT 0 CHECK (reruns >= 0);

-- Counting a user's unfinished executions (the MAX_UNFINISHED_EXECUTIONS_PER_USER quota).
CREATE INDEX executions_unfinished ON executions (owner_id) WHERE status IN ('queued', 'running');

-- One row per metered submission or re-run: what a user spent of a kind's
-- daily allowance, and when. Kept apart from `executions` so that deleting an
-- execution does not give its allowance back; a user's rows older than a day
-- are removed when they next spend.
CREATE TABLE execution_usage (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id   uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       text        NOT NULL,
    units      bigint      NOT NULL CHECK (units > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX execution_usage_by_owner ON execution_usage (owner_id, kind, created_at) INCLUDE (units);
