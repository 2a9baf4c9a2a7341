-- 0010_subject_groups.sql - groups of subjects (a team, a tenant's users):
-- limits and budgets written for "group:<name>" apply to all its members
-- together, and each member's statement is charged to the member and to its
-- groups (docs/limits.md "Groups").
--
-- Run by "pgsluice --migrate CONFIG" inside one transaction.

CREATE TABLE sluice.subject_groups (
    subject    text NOT NULL,
    group_name text NOT NULL,
    PRIMARY KEY (subject, group_name),
    CONSTRAINT subject_groups_names_not_empty CHECK (subject <> '' AND group_name <> '')
);

COMMENT ON TABLE sluice.subject_groups IS
    'Which group each subject belongs to (at most 4 each); limits for a group are sluice.limits rows or [limits] lines of subject ''group:<name>''';
