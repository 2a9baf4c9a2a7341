-- 0003_rate_counters_batches.sql - sluice.rate_counters as the log of what
-- each pgsluice instance counted, in numbered batches (docs/limits.md,
-- "Several instances"). 0001's per-window layout had no window length and
-- no way to read rows exactly once; nothing wrote to it before this version.
--
-- Run by "pgsluice --migrate CONFIG" inside one transaction.

DROP TABLE IF EXISTS sluice.rate_counters;

-- Each instance inserts its new counts as batch seq (its own increasing
-- number, so seq order is its commit order) and reads the other instances'
-- batches above the last seq it applied from each. A retried insert of the
-- same batch conflicts and is dropped. Unlogged: rewritten every second,
-- and budgets are rebuilt from sluice.llm_usage after a crash.
CREATE UNLOGGED TABLE sluice.rate_counters (
    instance   text          NOT NULL,
    seq        bigint        NOT NULL,
    subject    text          NOT NULL,
    model      text          NOT NULL DEFAULT '',
    day        date          NOT NULL,
    requests   bigint        NOT NULL DEFAULT 0,
    tokens     bigint        NOT NULL DEFAULT 0,
    cost_cents numeric(20,6) NOT NULL DEFAULT 0,
    created_at timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (instance, seq, subject, model, day),
    CONSTRAINT rate_counters_counts_not_negative CHECK (requests >= 0 AND tokens >= 0 AND cost_cents >= 0)
);

CREATE INDEX rate_counters_day_idx ON sluice.rate_counters (day);

COMMENT ON TABLE sluice.rate_counters IS
    'What each pgsluice instance counted per subject, model and UTC day, in numbered batches (unlogged)';
COMMENT ON COLUMN sluice.rate_counters.seq IS
    'The writing instance''s batch number; readers apply each instance''s batches in seq order, once';
