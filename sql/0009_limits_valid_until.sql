-- 0009_limits_valid_until.sql - temporary overrides: a sluice.limits row with
-- valid_until set applies until then, and is ignored afterwards (the [limits]
-- line and the less specific levels apply again) (docs/limits.md "The
-- sluice.limits table").
--
-- Run by "pgsluice --migrate CONFIG" inside one transaction.

ALTER TABLE sluice.limits ADD COLUMN valid_until timestamptz;

COMMENT ON COLUMN sluice.limits.valid_until IS
    'The row applies until this time, then is ignored (within limits_refresh_interval); NULL = for good';
