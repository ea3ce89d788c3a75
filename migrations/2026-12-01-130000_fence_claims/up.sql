-- Stronger fencing and bounded error histories for executions.

-- A random token minted by each claim and cleared when the execution leaves
-- `running`. Every write a worker makes requires it, so a worker whose claim
-- was rescued cannot write even when a later claim repeats its worker id and
-- attempt number (a rescue, a failure and a user's retry can bring both back).
-- Rows running when this migration runs have none: no worker can renew them,
-- so the rescuer takes them back once their leases lapse.
ALTER TABLE executions ADD COLUMN claim_token uuid;

-- The last `keep` entries of an error history (a jsonb array), oldest first:
-- each failed attempt appends its error through this, so a row stays small
-- however many attempts it has had.
CREATE FUNCTION tessera_last_errors(history jsonb, keep integer) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_array_length(history) <= keep THEN history
           ELSE coalesce((SELECT jsonb_agg(entry ORDER BY position)
                          FROM jsonb_array_elements(history) WITH ORDINALITY AS t(entry, position)
                          WHERE position > jsonb_array_length(history) - keep), '[]'::jsonb)
           END
$$;

-- Histories already longer than the bound the workers keep (10) are cut to it.
UPDATE executions SET errors = tessera_last_errors(errors, 10) WHERE jsonb_array_length(errors) > 10;
