-- The vectors `embed_texts` executions produce (inference domain), one row per
-- input text, read back page by page. Rows go with their execution.

CREATE TABLE inference_embeddings (
    execution_id uuid    NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    position     integer NOT NULL CHECK (position >= 0),
    tokens       integer NOT NULL CHECK (tokens > 0),
    embedding    real[]  NOT NULL,
    PRIMARY KEY (execution_id, position)
);
