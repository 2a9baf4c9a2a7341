-- 0006_limits_max_concurrent.sql - sluice.limits.max_concurrent: at most
-- this many attributed statements of a subject in flight at once (admitted
-- by pgsluice and not yet finished), like LiteLLM's max_parallel_requests
-- (docs/limits.md "Reservations and max_concurrent").
--
-- Run by "pgsluice --migrate CONFIG" inside one transaction.

ALTER TABLE sluice.limits
    ADD COLUMN max_concurrent int,
    ADD CONSTRAINT limits_max_concurrent_not_negative CHECK (max_concurrent >= 0);

COMMENT ON COLUMN sluice.limits.max_concurrent IS
    'Attributed statements in flight at once; NULL = inherit, 0 = refuse all';
