-- 0008_usage_daily_table.sql - sluice.usage_daily becomes a table that the
-- usage writer keeps current in the same transaction as the rows it stores
-- (INSERT ... ON CONFLICT DO UPDATE per batch), instead of a materialized
-- view that needed pg_cron or a scheduled REFRESH recomputing all history
-- (docs/ai-middleware.md "The daily roll-up"). Backfilled here from
-- sluice.llm_usage.
--
-- Run by "pgsluice --migrate CONFIG" inside one transaction.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        PERFORM cron.unschedule(jobid) FROM cron.job WHERE jobname = 'sluice-usage-daily';
    END IF;
END
$$;

DROP MATERIALIZED VIEW IF EXISTS sluice.usage_daily;

CREATE TABLE sluice.usage_daily (
    day                date    NOT NULL,
    subject            text    NOT NULL,
    model              text    NOT NULL DEFAULT '',
    requests           bigint  NOT NULL DEFAULT 0,
    input_tokens       bigint  NOT NULL DEFAULT 0,
    output_tokens      bigint  NOT NULL DEFAULT 0,
    tokens             bigint  NOT NULL DEFAULT 0,
    cost_cents         numeric NOT NULL DEFAULT 0,
    cache_hits         bigint  NOT NULL DEFAULT 0,
    llm_latency_ms_sum bigint  NOT NULL DEFAULT 0,
    llm_latency_calls  bigint  NOT NULL DEFAULT 0,
    statement_ms_sum   double precision NOT NULL DEFAULT 0,
    avg_llm_latency_ms numeric GENERATED ALWAYS AS
                           (llm_latency_ms_sum::numeric / nullif(llm_latency_calls, 0)) STORED,
    PRIMARY KEY (day, subject, model)
);

COMMENT ON TABLE sluice.usage_daily IS
    'LLM usage per UTC day, subject and model (model '''' = none); kept current by pgsluice''s usage writer';
COMMENT ON COLUMN sluice.usage_daily.llm_latency_calls IS
    'Rows with an ai_latency_ms: the divisor of avg_llm_latency_ms';

-- Recompute the roll-up of UTC days from_day .. to_day from sluice.llm_usage:
-- after rows were inserted or deleted by hand (pgsluice's writer keeps it
-- current by itself). Returns the number of roll-up rows written.
CREATE FUNCTION sluice.rebuild_usage_daily(from_day date, to_day date)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    written bigint;
BEGIN
    DELETE FROM sluice.usage_daily WHERE day BETWEEN from_day AND to_day;
    INSERT INTO sluice.usage_daily (day, subject, model, requests, input_tokens, output_tokens, tokens,
                                    cost_cents, cache_hits, llm_latency_ms_sum, llm_latency_calls,
                                    statement_ms_sum)
    SELECT (created_at AT TIME ZONE 'UTC')::date, subject, coalesce(model, ''),
           count(*), sum(input_tokens), sum(output_tokens), sum(input_tokens + output_tokens),
           coalesce(sum(cost_cents), 0), count(*) FILTER (WHERE cached),
           coalesce(sum(llm_latency_ms), 0), count(llm_latency_ms), coalesce(sum(statement_ms), 0)
    FROM sluice.llm_usage
    WHERE created_at >= from_day::timestamp AT TIME ZONE 'UTC'
      AND created_at < (to_day + 1)::timestamp AT TIME ZONE 'UTC'
    GROUP BY 1, 2, 3;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$$;

SELECT sluice.rebuild_usage_daily('-infinity', 'infinity');
