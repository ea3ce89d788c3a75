DROP TABLE execution_events;
DROP TABLE executions;
