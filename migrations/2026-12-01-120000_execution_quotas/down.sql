DROP TABLE execution_usage;
DROP INDEX executions_unfinished;
ALTER TABLE executions DROP COLUMN reruns;
