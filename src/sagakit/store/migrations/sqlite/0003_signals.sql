-- External signals delivered to a saga (SagaOrchestrator.signal): kept until its WaitFor step
-- consumes one; the first delivery of a name wins, so a duplicate is harmless.
CREATE TABLE saga_signals (
    saga_id TEXT NOT NULL,
    name    TEXT NOT NULL,
    payload TEXT,                -- JSON
    at      REAL NOT NULL,
    PRIMARY KEY (saga_id, name)
) WITHOUT ROWID;
