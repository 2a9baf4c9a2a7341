-- 0011_rate_leases.sql - leased per-minute allowances (docs/limits.md
-- "Leases across instances"): one row per (subject, model, dimension) holds
-- what was granted in each second of the last lease_span seconds; an
-- instance takes a slice with one INSERT ... ON CONFLICT DO UPDATE ...
-- RETURNING (the row lock orders concurrent instances) and gives back what it
-- did not spend to the second it was granted in.
--
-- Run by "pgsluice --migrate CONFIG" inside one transaction.

CREATE TABLE sluice.rate_leases (
    subject     text   NOT NULL,
    model       text   NOT NULL DEFAULT '',
    dimension   text   NOT NULL,
    base_sec    bigint NOT NULL,            -- the epoch second of slots[1]
    slots       bigint[] NOT NULL,          -- granted (net of give-backs) per second, oldest first
    limit_value bigint NOT NULL,            -- the limit the last taker had in force
    wanted      bigint NOT NULL DEFAULT 0,  -- what the last taker asked for
    granted     bigint NOT NULL DEFAULT 0,  -- what the last take got (for RETURNING)
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, model, dimension),
    CONSTRAINT rate_leases_dimension CHECK (dimension IN ('requests_per_minute', 'tokens_per_minute'))
);

COMMENT ON TABLE sluice.rate_leases IS
    'Slices of per-minute limits leased by pgsluice instances: granted per second over the last lease span (docs/limits.md)';

-- The ring of per-second grants moved to now_sec (seconds older than
-- now_sec - span + 1 dropped), and want taken from what the ring leaves
-- under lim: at most lim is granted in any span consecutive seconds.
CREATE FUNCTION sluice.lease_take(base bigint, slots bigint[], now_sec bigint, span int, lim bigint, want bigint,
                                  OUT new_base bigint, OUT new_slots bigint[], OUT granted bigint)
LANGUAGE plpgsql AS $$
DECLARE
    shift bigint;
    used bigint;
BEGIN
    new_base := now_sec - span + 1;
    IF base IS NULL OR slots IS NULL OR cardinality(slots) <> span THEN
        new_slots := array_fill(0::bigint, ARRAY[span]);
    ELSE
        shift := new_base - base;
        IF shift < 0 THEN                       -- the clock stepped back: count into the newest second
            new_base := base;
            new_slots := slots;
            now_sec := base + span - 1;
        ELSIF shift >= span THEN
            new_slots := array_fill(0::bigint, ARRAY[span]);
        ELSE
            new_slots := slots[shift + 1:span] || array_fill(0::bigint, ARRAY[shift::int]);
        END IF;
    END IF;
    SELECT coalesce(sum(x), 0) INTO used FROM unnest(new_slots) AS x;
    granted := greatest(0, least(want, lim - used));
    new_slots[now_sec - new_base + 1] := new_slots[now_sec - new_base + 1] + granted;
END $$;

-- Give amounts back to the seconds they were granted in (grant_secs[i] gets
-- amounts[i] back), for the seconds still in the ring.
CREATE FUNCTION sluice.lease_give(base bigint, slots bigint[], grant_secs bigint[], amounts bigint[])
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    i bigint;
BEGIN
    FOR k IN 1 .. coalesce(cardinality(grant_secs), 0) LOOP
        i := grant_secs[k] - base + 1;
        IF i >= 1 AND i <= cardinality(slots) AND amounts[k] > 0 THEN
            slots[i] := greatest(0, slots[i] - amounts[k]);
        END IF;
    END LOOP;
    RETURN slots;
END $$;
