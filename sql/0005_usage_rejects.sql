-- 0005_usage_rejects.sql - a wider sluice.llm_usage.cost_cents, and
-- sluice.usage_rejects, where pgsluice moves a usage record PostgreSQL
-- refuses to store, so that one bad record never holds up the others
-- (docs/schema.md, docs/ai-middleware.md "Records PostgreSQL refuses").
--
-- Run by "pgsluice --migrate CONFIG" inside one transaction.

-- numeric(12,4) held at most 99999999.9999 cents: one call of a billion
-- tokens at a high price overflowed it, and the INSERT of its whole batch
-- failed on every retry. numeric(20,4) holds any record pgsluice accepts
-- (at most 10^9 tokens each way, at most 999999.999999 USD per million
-- tokens: below 2 * 10^11 cents). The materialized view reads the column,
-- so it is dropped and made again (with its data); the type change itself
-- only raises the precision and does not rewrite the table.
DROP MATERIALIZED VIEW IF EXISTS sluice.usage_daily;

ALTER TABLE sluice.llm_usage ALTER COLUMN cost_cents TYPE numeric(20,4);

CREATE MATERIALIZED VIEW sluice.usage_daily AS
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

CREATE UNIQUE INDEX usage_daily_key ON sluice.usage_daily (day, subject, model);

COMMENT ON MATERIALIZED VIEW sluice.usage_daily IS
    'LLM usage per UTC day, subject and model; REFRESH MATERIALIZED VIEW CONCURRENTLY sluice.usage_daily';

-- A record whose INSERT into sluice.llm_usage failed with a data error
-- (SQLSTATE class 22 or 23) on its own, after pgsluice split its batch to
-- find it. The client was told the call was recorded, so the record is kept
-- here, whole, instead of being dropped: fix it and move it by hand (see
-- docs/schema.md). record holds every field of the journal record; text
-- that is not valid UTF-8 is written with each bad byte as \xNN and each
-- backslash doubled.
CREATE TABLE IF NOT EXISTS sluice.usage_rejects (
    id          uuid        NOT NULL,
    created_at  timestamptz NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    instance    text        NOT NULL,
    sqlstate    text        NOT NULL,
    error       text        NOT NULL,
    record      jsonb       NOT NULL,
    PRIMARY KEY (id, created_at)
);

COMMENT ON TABLE sluice.usage_rejects IS
    'Usage records sluice.llm_usage refused (a data error); kept whole for repair by hand';
COMMENT ON COLUMN sluice.usage_rejects.error IS
    'PostgreSQL''s error message for the INSERT of this record alone';
COMMENT ON COLUMN sluice.usage_rejects.record IS
    'The journal record: the columns of sluice.llm_usage but cost_cents; bad bytes as \xNN, backslashes doubled';
