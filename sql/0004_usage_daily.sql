-- 0004_usage_daily.sql - the daily roll-up users query first, and dropping
-- old usage months as whole partitions (src/ai/README.md; docs/schema.md).
--
-- Run by "pgsluice --migrate CONFIG" inside one transaction.

-- One row per UTC day, subject and model. A materialized view, refreshed on
-- a schedule: with pg_cron installed this migration schedules it every 10
-- minutes; without it, run "REFRESH MATERIALIZED VIEW CONCURRENTLY
-- sluice.usage_daily" from cron or the application.
CREATE MATERIALIZED VIEW IF NOT EXISTS sluice.usage_daily AS
SELECT (created_at AT TIME ZONE 'UTC')::date AS day,
       subject,
       coalesce(model, '') AS model,
       count(*) AS requests,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(input_tokens + output_tokens) AS tokens,
       coalesce(sum(cost_cents), 0) AS cost_cents,
       count(*) FILTER (WHERE cached) AS cache_hits,
       avg(llm_latency_ms) AS avg_llm_latency_ms
FROM sluice.llm_usage
GROUP BY 1, 2, 3;

-- CONCURRENTLY needs a unique index.
CREATE UNIQUE INDEX IF NOT EXISTS usage_daily_key ON sluice.usage_daily (day, subject, model);

COMMENT ON MATERIALIZED VIEW sluice.usage_daily IS
    'LLM usage per UTC day, subject and model; REFRESH MATERIALIZED VIEW CONCURRENTLY sluice.usage_daily';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        PERFORM cron.schedule('sluice-usage-daily', '*/10 * * * *',
                              'REFRESH MATERIALIZED VIEW CONCURRENTLY sluice.usage_daily');
    END IF;
END
$$;

-- Retention: drop whole monthly partitions older than keep_months (counting
-- the current month as the first kept). Dropping a partition is instant and
-- leaves no dead rows, unlike DELETE. Returns the number dropped.
CREATE OR REPLACE FUNCTION sluice.drop_usage_partitions_before(keep_months int)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    cutoff date := (date_trunc('month', now() AT TIME ZONE 'UTC')
                    - make_interval(months => keep_months - 1))::date;
    part record;
    dropped int := 0;
BEGIN
    IF keep_months < 1 THEN
        RAISE EXCEPTION 'keep_months must be at least 1, not %', keep_months;
    END IF;
    FOR part IN
        SELECT c.oid::regclass AS name
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'sluice.llm_usage'::regclass
          AND c.relname ~ '^llm_usage_y[0-9]{4}m[0-9]{2}$'
          AND make_date(substr(c.relname, 12, 4)::int, substr(c.relname, 17, 2)::int, 1) < cutoff
    LOOP
        EXECUTE format('DROP TABLE %s', part.name);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;
