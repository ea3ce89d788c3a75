-- Error entries dropped by the bound are not restored; the schema is.
DROP FUNCTION tessera_last_errors(jsonb, integer);
ALTER TABLE executions DROP COLUMN claim_token;
