-- 0007_budget_alerts.sql - budgets as PostgreSQL sees them: sluice.budget_state
-- (what each pgsluice instance counts and holds per budget), the view
-- sluice.budget_status over it, and sluice.budget_alerts, the thresholds
-- already announced on channel sluice_budget (docs/ai-middleware.md
-- "Budget alerts and status").
--
-- Run by "pgsluice --migrate CONFIG" inside one transaction.

-- Each instance upserts the budgets whose use or reservations changed, every
-- limits_sync_interval. Unlogged: rewritten all the time, rebuilt after a crash.
CREATE UNLOGGED TABLE sluice.budget_state (
    instance    text        NOT NULL,
    subject     text        NOT NULL,
    model       text        NOT NULL DEFAULT '',
    dimension   text        NOT NULL,
    limit_value numeric     NOT NULL,
    used        numeric     NOT NULL,
    reserved    numeric     NOT NULL DEFAULT 0,
    resets_at   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance, subject, model, dimension),
    CONSTRAINT budget_state_dimension CHECK (dimension IN ('tokens_per_day', 'cost_cents_per_month'))
);

COMMENT ON TABLE sluice.budget_state IS
    'Each pgsluice instance''s view of every budget in force (tokens_per_day, cost_cents_per_month); read sluice.budget_status';

-- One row per subject, model ('' = the subject over all models) and budget in
-- its current period. used: the most any instance counted (instances share
-- their counts, so each sees nearly all); reserved: the sum of what the live
-- instances' statements in flight hold (rows updated in the last minute).
CREATE VIEW sluice.budget_status AS
SELECT subject,
       nullif(model, '') AS model,
       dimension,
       max(limit_value) AS "limit",
       max(used) AS used,
       coalesce(sum(reserved) FILTER (WHERE updated_at > now() - interval '1 minute'), 0) AS reserved,
       greatest(max(limit_value) - max(used)
                - coalesce(sum(reserved) FILTER (WHERE updated_at > now() - interval '1 minute'), 0), 0)
           AS remaining,
       max(resets_at) AS resets_at
FROM sluice.budget_state
WHERE resets_at > now()
GROUP BY subject, model, dimension;

COMMENT ON VIEW sluice.budget_status IS
    'Budgets in force: limit, used, reserved by statements in flight, remaining, when the period resets';

-- A threshold is announced once per subject, model, budget and period: the
-- instance whose INSERT wins sends the NOTIFY, in the same transaction.
CREATE TABLE sluice.budget_alerts (
    subject       text        NOT NULL,
    model         text        NOT NULL DEFAULT '',
    dimension     text        NOT NULL,
    period_start  timestamptz NOT NULL,
    threshold_pct numeric     NOT NULL,
    used          numeric     NOT NULL,
    limit_value   numeric     NOT NULL,
    resets_at     timestamptz NOT NULL,
    instance      text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, model, dimension, period_start, threshold_pct)
);

COMMENT ON TABLE sluice.budget_alerts IS
    'Budget thresholds (budget_alert_thresholds) reached and announced with NOTIFY sluice_budget, once per period';
