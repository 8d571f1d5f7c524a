-- One row that `GET /readyz` writes to prove the store accepts writes.
CREATE TABLE sagakit_readiness (
    id        integer PRIMARY KEY CHECK (id = 1),
    probed_at double precision NOT NULL
);
