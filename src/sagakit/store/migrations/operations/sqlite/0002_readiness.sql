-- One row that `GET /readyz` writes to prove the store accepts writes.
CREATE TABLE sagakit_readiness (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at REAL NOT NULL
);
