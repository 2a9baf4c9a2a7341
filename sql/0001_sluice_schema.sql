-- 0001_sluice_schema.sql - the sluice schema: migration bookkeeping, rate
-- limits and budgets, model prices, and the rate counters that several
-- pgsluice instances in front of one database share (docs/limits.md, docs/schema.md).
-- The usage table comes in 0002_llm_usage.sql.
--
-- "pgsluice --migrate CONFIG" runs this file inside one transaction and then
-- records version 1 in sluice.schema_migrations, so the file has no
-- BEGIN/COMMIT of its own. Every object is created only when missing, so
-- running it again (say by hand with psql -1 -f) changes nothing.
-- Reference: docs/schema.md.

CREATE SCHEMA IF NOT EXISTS sluice;

COMMENT ON SCHEMA sluice IS
    'pgsluice AI middleware: limits, model prices, usage records, shared rate counters (docs/schema.md)';

-- ---- migrations -------------------------------------------------------------

CREATE TABLE IF NOT EXISTS sluice.schema_migrations (
    version    int         PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE sluice.schema_migrations IS
    'One row per sql/NNNN_name.sql file applied by pgsluice --migrate';

-- ---- operator-edited tables keep updated_at current ---------------------------

CREATE OR REPLACE FUNCTION sluice.set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION sluice.set_updated_at() IS
    'BEFORE UPDATE trigger: sets updated_at to the time of the change';

-- ---- limits -------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS sluice.limits (
    subject              text          NOT NULL,
    model                text          NOT NULL DEFAULT '*',
    requests_per_minute  int,
    tokens_per_minute    bigint,
    tokens_per_day       bigint,
    cost_cents_per_month numeric(12,4),
    updated_at           timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, model),
    CONSTRAINT limits_subject_not_empty CHECK (subject <> ''),
    CONSTRAINT limits_model_not_empty CHECK (model <> ''),
    CONSTRAINT limits_requests_per_minute_not_negative CHECK (requests_per_minute >= 0),
    CONSTRAINT limits_tokens_per_minute_not_negative CHECK (tokens_per_minute >= 0),
    CONSTRAINT limits_tokens_per_day_not_negative CHECK (tokens_per_day >= 0),
    CONSTRAINT limits_cost_cents_per_month_not_negative CHECK (cost_cents_per_month >= 0)
);

COMMENT ON TABLE sluice.limits IS
    'Rate limits and budgets per subject (and model); overrides the ini [limits] section; NULL = inherit';
COMMENT ON COLUMN sluice.limits.subject IS
    'The subject charged (ai_user tag, sluice.user, else the login role); "default" = every subject';
COMMENT ON COLUMN sluice.limits.model IS
    'Model id (ai_model tag) this row limits; "*" = the subject''s limit over all models';
COMMENT ON COLUMN sluice.limits.requests_per_minute IS
    'Attributed statements per minute; NULL = inherit, 0 = refuse all';
COMMENT ON COLUMN sluice.limits.tokens_per_minute IS
    'Input plus output tokens per minute; NULL = inherit';
COMMENT ON COLUMN sluice.limits.tokens_per_day IS
    'Input plus output tokens per UTC day; NULL = inherit';
COMMENT ON COLUMN sluice.limits.cost_cents_per_month IS
    'US cents per UTC calendar month, priced from sluice.model_prices; NULL = inherit';

DROP TRIGGER IF EXISTS limits_set_updated_at ON sluice.limits;
CREATE TRIGGER limits_set_updated_at
    BEFORE UPDATE ON sluice.limits
    FOR EACH ROW EXECUTE FUNCTION sluice.set_updated_at();

-- ---- model prices -------------------------------------------------------------

CREATE TABLE IF NOT EXISTS sluice.model_prices (
    model               text          PRIMARY KEY,
    input_usd_per_mtok  numeric(12,6) NOT NULL,
    output_usd_per_mtok numeric(12,6) NOT NULL,
    updated_at          timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT model_prices_model_not_empty CHECK (model <> ''),
    CONSTRAINT model_prices_input_not_negative CHECK (input_usd_per_mtok >= 0),
    CONSTRAINT model_prices_output_not_negative CHECK (output_usd_per_mtok >= 0)
);

COMMENT ON TABLE sluice.model_prices IS
    'Price per model in US dollars per million tokens; prices llm_usage.cost_cents';
COMMENT ON COLUMN sluice.model_prices.model IS
    'Model id exactly as sent in the ai_model tag';

DROP TRIGGER IF EXISTS model_prices_set_updated_at ON sluice.model_prices;
CREATE TRIGGER model_prices_set_updated_at
    BEFORE UPDATE ON sluice.model_prices
    FOR EACH ROW EXECUTE FUNCTION sluice.set_updated_at();

-- ---- rate counters shared between pgsluice instances --------------------------

-- UNLOGGED: every instance rewrites its rows every limits_sync_interval, and
-- the counts are worth a minute or a day at most; budgets are seeded from
-- sluice.llm_usage, not from here. After a PostgreSQL crash the table is
-- empty and the instances fill it again.
CREATE UNLOGGED TABLE IF NOT EXISTS sluice.rate_counters (
    instance     text        NOT NULL,
    subject      text        NOT NULL,
    model        text        NOT NULL DEFAULT '*',
    window_start timestamptz NOT NULL,
    requests     bigint      NOT NULL DEFAULT 0,
    tokens       bigint      NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance, subject, model, window_start),
    CONSTRAINT rate_counters_requests_not_negative CHECK (requests >= 0),
    CONSTRAINT rate_counters_tokens_not_negative CHECK (tokens >= 0)
);

-- the instances read every instance's current windows, and old windows are deleted by age
CREATE INDEX IF NOT EXISTS rate_counters_window_start_idx
    ON sluice.rate_counters (window_start);

COMMENT ON TABLE sluice.rate_counters IS
    'Requests and tokens each pgsluice instance admitted per subject, model and window (unlogged)';
COMMENT ON COLUMN sluice.rate_counters.instance IS
    'The pgsluice instance that counted (one writer per row)';
COMMENT ON COLUMN sluice.rate_counters.window_start IS
    'Start of the counting window (UTC)';
