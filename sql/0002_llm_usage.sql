-- 0002_llm_usage.sql - sluice.llm_usage, one row per LLM call pgsluice
-- recorded (src/ai/README.md), partitioned by UTC calendar month, and
-- sluice.ensure_usage_partitions(), which creates the months ahead.
--
-- Run by "pgsluice --migrate CONFIG" inside one transaction, which then
-- records version 2 in sluice.schema_migrations; no BEGIN/COMMIT here.
-- Every object is created only when missing. Reference: docs/schema.md.

-- Idempotency key: pgsluice makes id once per record and always writes the
-- same created_at with it (both come from its journal), so a record replayed
-- after a crash conflicts on (id, created_at) and is dropped:
--     INSERT ... ON CONFLICT (id, created_at) DO NOTHING
-- The primary key cannot be id alone: a partitioned table's unique keys must
-- include the partition key.
--
-- No CHECK constraints on purpose: a record reaches this table only after the
-- client was told it was stored, so a constraint here could only turn it into
-- one that can never be written. pgsluice validates the tags instead (an
-- invalid ai_tokens_in is refused with SQLSTATE 22023 before anything is
-- recorded).
CREATE TABLE IF NOT EXISTS sluice.llm_usage (
    id              uuid             NOT NULL,
    created_at      timestamptz      NOT NULL,
    subject         text             NOT NULL,
    db_user         text             NOT NULL,
    database        text             NOT NULL,
    model           text,
    input_tokens    bigint           NOT NULL DEFAULT 0,
    output_tokens   bigint           NOT NULL DEFAULT 0,
    cost_cents      numeric(12,4),
    llm_latency_ms  bigint,
    statement_ms    double precision,
    cached          boolean          NOT NULL DEFAULT false,
    conversation_id text,
    trace_id        text,
    instance        text             NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

-- The queries users ask first: one subject's or one model's usage over time.
-- Indexes on the parent are created on every partition, present and future.
CREATE INDEX IF NOT EXISTS llm_usage_subject_created_at_idx
    ON sluice.llm_usage (subject, created_at);
CREATE INDEX IF NOT EXISTS llm_usage_model_created_at_idx
    ON sluice.llm_usage (model, created_at);

-- Rows outside every monthly partition land here, so an insert never fails
-- for want of a partition; ensure_usage_partitions() moves them out.
CREATE TABLE IF NOT EXISTS sluice.llm_usage_default
    PARTITION OF sluice.llm_usage DEFAULT;

COMMENT ON TABLE sluice.llm_usage IS
    'One row per recorded LLM call (statement tagged with ai_tokens_in/ai_tokens_out, or a cache hit); partitioned by UTC month';
COMMENT ON COLUMN sluice.llm_usage.id IS
    'Made by pgsluice; with created_at the idempotency key';
COMMENT ON COLUMN sluice.llm_usage.created_at IS
    'When the statement completed, as recorded by pgsluice; the partition key';
COMMENT ON COLUMN sluice.llm_usage.subject IS
    'The subject charged: ai_user tag, else the client''s sluice.user, else the login role';
COMMENT ON COLUMN sluice.llm_usage.db_user IS
    'The role the client logged in to pgsluice as';
COMMENT ON COLUMN sluice.llm_usage.database IS
    'The [databases] entry the client connected to';
COMMENT ON COLUMN sluice.llm_usage.model IS
    'ai_model tag (or the client''s sluice.model); NULL when none';
COMMENT ON COLUMN sluice.llm_usage.input_tokens IS 'ai_tokens_in tag';
COMMENT ON COLUMN sluice.llm_usage.output_tokens IS 'ai_tokens_out tag';
COMMENT ON COLUMN sluice.llm_usage.cost_cents IS
    'US cents, from sluice.model_prices when recorded; NULL when the model has no price';
COMMENT ON COLUMN sluice.llm_usage.llm_latency_ms IS 'ai_latency_ms tag: the LLM call''s latency';
COMMENT ON COLUMN sluice.llm_usage.statement_ms IS
    'The statement''s time through pgsluice, measured by pgsluice';
COMMENT ON COLUMN sluice.llm_usage.cached IS 'Answered from pgsluice''s completion cache';
COMMENT ON COLUMN sluice.llm_usage.conversation_id IS 'ai_conversation tag';
COMMENT ON COLUMN sluice.llm_usage.trace_id IS 'Trace id of the traceparent tag (W3C trace context)';
COMMENT ON COLUMN sluice.llm_usage.instance IS 'The pgsluice instance that recorded the row';

-- Create the monthly partitions sluice.llm_usage_yYYYYmMM from the current
-- UTC month through months_ahead months later, where missing. Rows already
-- in the default partition for such a month are moved into the new
-- partition. Returns the number of partitions created. Safe to call at any
-- time and from several sessions at once (they take turns on an advisory
-- lock); creating a partition briefly locks sluice.llm_usage, which is why
-- partitions are made months ahead.
CREATE OR REPLACE FUNCTION sluice.ensure_usage_partitions(months_ahead int DEFAULT 3)
    RETURNS int
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    first_month timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
    month_start timestamp;
    part_name   text;
    lo          timestamptz;
    hi          timestamptz;
    lo_text     text;
    hi_text     text;
    created     int := 0;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 1200 THEN
        RAISE EXCEPTION 'months_ahead must be between 0 and 1200, not %', months_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- one session at a time checks for and creates partitions (key "sluice\0\2")
    PERFORM pg_advisory_xact_lock(8317151707346042882);
    FOR i IN 0 .. months_ahead LOOP
        month_start := first_month + make_interval(months => i);
        part_name := 'llm_usage_y' || to_char(month_start, 'YYYY') || 'm' || to_char(month_start, 'MM');
        CONTINUE WHEN to_regclass('sluice.' || quote_ident(part_name)) IS NOT NULL;
        lo := month_start AT TIME ZONE 'UTC';
        hi := (month_start + interval '1 month') AT TIME ZONE 'UTC';
        -- bounds written in ISO form, whatever the session's DateStyle
        lo_text := to_char(month_start, 'YYYY-MM-DD') || ' 00:00:00+00';
        hi_text := to_char(month_start + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00';
        IF EXISTS (SELECT 1 FROM sluice.llm_usage_default
                   WHERE created_at >= lo AND created_at < hi) THEN
            -- Rows for this month arrived before its partition: a partition
            -- cannot be created over rows the default partition holds, so
            -- build it beside the table, move them in, then attach it.
            EXECUTE format('CREATE TABLE sluice.%I (LIKE sluice.llm_usage INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                           part_name);
            EXECUTE format('WITH moved AS (DELETE FROM sluice.llm_usage_default'
                           ' WHERE created_at >= $1 AND created_at < $2 RETURNING *)'
                           ' INSERT INTO sluice.%I SELECT * FROM moved', part_name)
                USING lo, hi;
            EXECUTE format('ALTER TABLE sluice.llm_usage ATTACH PARTITION sluice.%I FOR VALUES FROM (%L) TO (%L)',
                           part_name, lo_text, hi_text);
        ELSE
            EXECUTE format('CREATE TABLE sluice.%I PARTITION OF sluice.llm_usage FOR VALUES FROM (%L) TO (%L)',
                           part_name, lo_text, hi_text);
        END IF;
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

COMMENT ON FUNCTION sluice.ensure_usage_partitions(int) IS
    'Create the monthly partitions of sluice.llm_usage from this UTC month through months_ahead months later; returns how many were created';

SELECT sluice.ensure_usage_partitions(3);
