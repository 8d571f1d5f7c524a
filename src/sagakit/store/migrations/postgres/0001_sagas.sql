-- Saga instances, their steps and their history. Times are seconds since the epoch
-- (double precision), as in the SQLite store; leases use the database's clock.
CREATE TABLE saga_instances (
    seq          bigserial PRIMARY KEY,       -- insertion order: newest-first listings, cursors
    saga_id      text NOT NULL UNIQUE,
    name         text NOT NULL,
    version      integer NOT NULL,
    status       text NOT NULL,
    input        jsonb NOT NULL,
    business_key text,
    error        text,
    failed_step  text,
    created_at   double precision NOT NULL,
    updated_at   double precision NOT NULL,
    owner        text,                        -- the process holding the lease
    fence        bigint NOT NULL DEFAULT 0,   -- grows on every claim; stale writers are refused
    lease_until  double precision
);

-- At most one saga per business key that is not compensated: "one checkout per order".
CREATE UNIQUE INDEX saga_instances_one_per_key
    ON saga_instances (name, business_key)
    WHERE business_key IS NOT NULL AND status <> 'compensated';

CREATE INDEX saga_instances_by_key ON saga_instances (name, business_key, seq);
CREATE INDEX saga_instances_by_status ON saga_instances (status, seq);
CREATE INDEX saga_instances_active ON saga_instances (lease_until)
    WHERE status IN ('running', 'compensating');
CREATE INDEX saga_instances_by_owner ON saga_instances (owner) WHERE owner IS NOT NULL;

CREATE TABLE saga_steps (
    saga_id               text NOT NULL,
    idx                   integer NOT NULL,
    name                  text NOT NULL,
    status                text NOT NULL,
    attempts              integer NOT NULL,
    compensation_attempts integer NOT NULL,
    result                jsonb,
    error                 text,
    started_at            double precision,
    finished_at           double precision,
    PRIMARY KEY (saga_id, idx)
);

CREATE TABLE saga_events (
    id      bigserial PRIMARY KEY,
    saga_id text NOT NULL,
    at      double precision NOT NULL,
    type    text NOT NULL,
    step    text,
    attempt integer,
    detail  text
);

CREATE INDEX saga_events_by_saga ON saga_events (saga_id, id);
