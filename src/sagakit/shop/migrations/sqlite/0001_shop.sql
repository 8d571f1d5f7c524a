-- The checkout domain: users, items, orders, and each participant's own records.
-- Money and stock are integers; CHECKs make a negative balance or stock impossible.
CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    balance INTEGER NOT NULL CHECK (balance >= 0)
);

CREATE TABLE items (
    item_id TEXT PRIMARY KEY,
    stock   INTEGER NOT NULL CHECK (stock >= 0),
    price   INTEGER NOT NULL CHECK (price >= 0)
);

CREATE TABLE orders (
    order_id   TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (user_id),
    address    TEXT NOT NULL,
    total      INTEGER NOT NULL CHECK (total >= 0),
    created_at REAL NOT NULL
);

CREATE TABLE order_lines (
    order_id TEXT NOT NULL REFERENCES orders (order_id),
    item_id  TEXT NOT NULL REFERENCES items (item_id),
    qty      INTEGER NOT NULL CHECK (qty >= 1),
    PRIMARY KEY (order_id, item_id)
) WITHOUT ROWID;

-- Each participant's inbox: one row per idempotency key, written in the same transaction
-- as the effect. A compensation that finds no row leaves a 'voided' tombstone, so that a
-- late action with that key is refused instead of applied.
CREATE TABLE payments (
    idempotency_key TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    amount          INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('charged', 'rejected', 'refunded', 'voided')),
    updated_at      REAL NOT NULL
);

CREATE TABLE reservations (
    idempotency_key TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL,
    lines           TEXT NOT NULL, -- JSON {"item_id": qty}
    status          TEXT NOT NULL CHECK (status IN ('reserved', 'rejected', 'released', 'voided')),
    updated_at      REAL NOT NULL
);

CREATE TABLE shipments (
    idempotency_key TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL,
    address         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('shipped', 'rejected', 'cancelled', 'voided')),
    updated_at      REAL NOT NULL
);
