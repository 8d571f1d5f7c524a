-- Saga instances, their steps and their history.
CREATE TABLE saga_instances (
    seq          INTEGER PRIMARY KEY,         -- insertion order: newest-first listings, cursors
    saga_id      TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    status       TEXT NOT NULL,
    input        TEXT NOT NULL,               -- JSON
    business_key TEXT,
    error        TEXT,
    failed_step  TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    owner        TEXT,                        -- the process holding the lease
    fence        INTEGER NOT NULL DEFAULT 0,  -- grows on every claim; stale writers are refused
    lease_until  REAL
);

-- At most one saga per business key that is not compensated: "one checkout per order".
CREATE UNIQUE INDEX saga_instances_one_per_key
    ON saga_instances (name, business_key)
    WHERE business_key IS NOT NULL AND status <> 'compensated';

CREATE INDEX saga_instances_by_key ON saga_instances (name, business_key, seq);
CREATE INDEX saga_instances_by_status ON saga_instances (status, seq);
CREATE INDEX saga_instances_active ON saga_instances (lease_until)
    WHERE status IN ('running', 'compensating');

CREATE TABLE saga_steps (
    saga_id               TEXT NOT NULL,
    idx                   INTEGER NOT NULL,
    name                  TEXT NOT NULL,
    status                TEXT NOT NULL,
    attempts              INTEGER NOT NULL,
    compensation_attempts INTEGER NOT NULL,
    result                TEXT,              -- JSON
    error                 TEXT,
    started_at            REAL,
    finished_at           REAL,
    PRIMARY KEY (saga_id, idx)
) WITHOUT ROWID;

CREATE TABLE saga_events (
    id      INTEGER PRIMARY KEY,
    saga_id TEXT NOT NULL,
    at      REAL NOT NULL,
    type    TEXT NOT NULL,
    step    TEXT,
    attempt INTEGER,
    detail  TEXT
);

CREATE INDEX saga_events_by_saga ON saga_events (saga_id, id);
