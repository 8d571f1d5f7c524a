-- The checkout domain: users, items, orders, and each participant's own records.
-- Money and stock are integers; CHECKs make a negative balance or stock impossible.
CREATE TABLE users (
    user_id text PRIMARY KEY,
    balance bigint NOT NULL CHECK (balance >= 0)
);

CREATE TABLE items (
    item_id text PRIMARY KEY,
    stock   bigint NOT NULL CHECK (stock >= 0),
    price   bigint NOT NULL CHECK (price >= 0)
);

CREATE TABLE orders (
    order_id   text PRIMARY KEY,
    user_id    text NOT NULL REFERENCES users (user_id),
    address    text NOT NULL,
    total      bigint NOT NULL CHECK (total >= 0),
    created_at double precision NOT NULL
);

CREATE TABLE order_lines (
    order_id text NOT NULL REFERENCES orders (order_id),
    item_id  text NOT NULL REFERENCES items (item_id),
    qty      bigint NOT NULL CHECK (qty >= 1),
    PRIMARY KEY (order_id, item_id)
);

-- Each participant's inbox: one row per idempotency key, written in the same transaction
-- as the effect. A compensation that finds no row leaves a 'voided' tombstone, so that a
-- late action with that key is refused instead of applied.
CREATE TABLE payments (
    idempotency_key text PRIMARY KEY,
    user_id         text NOT NULL,
    amount          bigint NOT NULL,
    status          text NOT NULL CHECK (status IN ('charged', 'rejected', 'refunded', 'voided')),
    updated_at      double precision NOT NULL
);

CREATE TABLE reservations (
    idempotency_key text PRIMARY KEY,
    order_id        text NOT NULL,
    lines           jsonb NOT NULL, -- {"item_id": qty}
    status          text NOT NULL CHECK (status IN ('reserved', 'rejected', 'released', 'voided')),
    updated_at      double precision NOT NULL
);

CREATE TABLE shipments (
    idempotency_key text PRIMARY KEY,
    order_id        text NOT NULL,
    address         text NOT NULL,
    status          text NOT NULL CHECK (status IN ('shipped', 'rejected', 'cancelled', 'voided')),
    updated_at      double precision NOT NULL
);
