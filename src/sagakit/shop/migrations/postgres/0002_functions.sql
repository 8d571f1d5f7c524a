-- Each participant operation as one function, so that it costs one statement (one round
-- trip) instead of two or three, and so that a saga run as one unit can chain its steps in a
-- single statement (sagakit.store.postgres.PostgresCall). They do what shop/postgres.py did
-- statement by statement: the same inbox rows, the same locks in the same order, the same
-- answers. An action returns NULL when it applied (or a replay finds it applied) and the
-- refusal's message otherwise; a compensation returns whether it moved money or stock.

-- The answer to an action replayed with a key already in its inbox (shop.sqlite.replayed).
CREATE FUNCTION sagakit_shop_replayed(status text, applied text, rejection text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN status = applied THEN NULL
                WHEN status = 'rejected' THEN rejection
                ELSE 'compensated before it was applied' END
$$;

CREATE FUNCTION sagakit_shop_charge(p_key text, p_user text, p_amount bigint, p_at float8)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    seen text;
BEGIN
    -- Waits for a concurrent holder of the key, then does nothing: one charge per key.
    INSERT INTO payments (idempotency_key, user_id, amount, status, updated_at)
    VALUES (p_key, p_user, p_amount, 'charged', p_at) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT status INTO seen FROM payments WHERE idempotency_key = p_key FOR UPDATE;
        RETURN sagakit_shop_replayed(seen, 'charged', 'Insufficient balance');
    END IF;
    UPDATE users SET balance = balance - p_amount
    WHERE user_id = p_user AND balance >= p_amount;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE payments SET status = 'rejected', updated_at = p_at WHERE idempotency_key = p_key;
    RETURN 'Insufficient balance';
END
$$;

CREATE FUNCTION sagakit_shop_refund(p_key text, p_at float8)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    seen record;
BEGIN
    -- No charge yet: a tombstone, so that a late charge with this key is refused.
    INSERT INTO payments (idempotency_key, user_id, amount, status, updated_at)
    VALUES (p_key, '', 0, 'voided', p_at) ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN false;
    END IF;
    SELECT status, user_id, amount INTO seen FROM payments
    WHERE idempotency_key = p_key FOR UPDATE;
    IF seen.status <> 'charged' THEN
        RETURN false;
    END IF;
    UPDATE users SET balance = balance + seen.amount WHERE user_id = seen.user_id;
    UPDATE payments SET status = 'refunded', updated_at = p_at WHERE idempotency_key = p_key;
    RETURN true;
END
$$;

CREATE FUNCTION sagakit_shop_reserve(p_key text, p_order text, p_lines jsonb, p_at float8)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    seen text;
    line record;
BEGIN
    INSERT INTO reservations (idempotency_key, order_id, lines, status, updated_at)
    VALUES (p_key, p_order, p_lines, 'reserved', p_at) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT status INTO seen FROM reservations WHERE idempotency_key = p_key FOR UPDATE;
        RETURN sagakit_shop_replayed(seen, 'reserved', 'Not enough stock');
    END IF;
    IF (SELECT count(*) FROM jsonb_object_keys(p_lines)) = 1 THEN
        -- Nothing to undo if its one line is refused: no subtransaction.
        UPDATE items SET stock = stock - l.value::bigint
        FROM jsonb_each_text(p_lines) AS l
        WHERE item_id = l.key AND stock >= l.value::bigint;
        IF FOUND THEN
            RETURN NULL;
        END IF;
    ELSE
        BEGIN  -- a subtransaction: all lines or none, taken in item order (no deadlocks)
            FOR line IN SELECT key, value::bigint AS qty FROM jsonb_each_text(p_lines)
                        ORDER BY key COLLATE "C" LOOP
                UPDATE items SET stock = stock - line.qty
                WHERE item_id = line.key AND stock >= line.qty;
                IF NOT FOUND THEN
                    RAISE EXCEPTION USING ERRCODE = 'SKNSK';
                END IF;
            END LOOP;
            RETURN NULL;
        EXCEPTION WHEN SQLSTATE 'SKNSK' THEN
            NULL;  -- the lines taken are put back; the refusal is recorded below
        END;
    END IF;
    UPDATE reservations SET status = 'rejected', updated_at = p_at WHERE idempotency_key = p_key;
    RETURN 'Not enough stock';
END
$$;

CREATE FUNCTION sagakit_shop_release(p_key text, p_at float8)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    seen record;
    line record;
BEGIN
    INSERT INTO reservations (idempotency_key, order_id, lines, status, updated_at)
    VALUES (p_key, '', '{}', 'voided', p_at) ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN false;
    END IF;
    SELECT status, lines INTO seen FROM reservations WHERE idempotency_key = p_key FOR UPDATE;
    IF seen.status <> 'reserved' THEN
        RETURN false;
    END IF;
    FOR line IN SELECT key, value::bigint AS qty FROM jsonb_each_text(seen.lines)
                ORDER BY key COLLATE "C" LOOP
        UPDATE items SET stock = stock + line.qty WHERE item_id = line.key;
    END LOOP;
    UPDATE reservations SET status = 'released', updated_at = p_at WHERE idempotency_key = p_key;
    RETURN true;
END
$$;

CREATE FUNCTION sagakit_shop_ship(
    p_key text, p_order text, p_address text, p_valid boolean, p_at float8
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    seen text;
BEGIN
    INSERT INTO shipments (idempotency_key, order_id, address, status, updated_at)
    VALUES (p_key, p_order, p_address, CASE WHEN p_valid THEN 'shipped' ELSE 'rejected' END, p_at)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT status INTO seen FROM shipments WHERE idempotency_key = p_key FOR UPDATE;
        RETURN sagakit_shop_replayed(seen, 'shipped', 'Invalid shipping address');
    END IF;
    RETURN CASE WHEN p_valid THEN NULL ELSE 'Invalid shipping address' END;
END
$$;

CREATE FUNCTION sagakit_shop_cancel_shipment(p_key text, p_at float8)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    seen text;
BEGIN
    INSERT INTO shipments (idempotency_key, order_id, address, status, updated_at)
    VALUES (p_key, '', '', 'voided', p_at) ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN false;
    END IF;
    SELECT status INTO seen FROM shipments WHERE idempotency_key = p_key FOR UPDATE;
    IF seen <> 'shipped' THEN
        RETURN false;
    END IF;
    UPDATE shipments SET status = 'cancelled', updated_at = p_at WHERE idempotency_key = p_key;
    RETURN true;
END
$$;
