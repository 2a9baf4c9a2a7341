# SPDX-License-Identifier: PostgreSQL
"""Limits shared through PostgreSQL (docs/limits.md): sluice.limits overrides,
budgets that survive a restart, several instances sharing one subject's
limit through sluice.rate_counters, and untagged traffic that keeps flowing
while the side channel is down (attributed statements fail closed until the
limits, budgets and prices were read once).

Each test migrates a database of its own (test_migrate's fixtures).
"""

import threading
import time

import psycopg
import pytest
from harness import wait_until

import harness
from test_migrate import assert_succeeded, fresh_db, run_migrate  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own")

LIMITED = "53400"


def ai_pooler(sluice, pg, dbname, **overrides):
    """A pooler (not started) whose ai_database "usage" is dbname, migrated."""
    pooler = sluice(start=False, ai_database="usage", pool_mode="transaction",
                    limits_refresh_interval="0.2", limits_sync_interval="0.2",
                    databases={"usage": f"host={pg.host} port={pg.port} dbname={dbname} user=app"},
                    **overrides)
    return pooler


def tagged(conn, subject, n=1, extra=""):
    """Run n statements tagged ai_user=subject; return how many were admitted."""
    admitted = 0
    for _ in range(n):
        try:
            conn.execute(f"select 1 /*ai_user='{subject}'{extra}*/")
            admitted += 1
        except psycopg.Error as e:
            assert e.sqlstate == LIMITED, e
    return admitted




def test_sluice_limits_row_takes_effect_within_the_refresh_interval(sluice, pg, fresh_db):
    pooler = ai_pooler(sluice, pg, fresh_db)
    assert_succeeded(run_migrate(pooler))
    pooler.start()
    with pooler.connect() as conn:
        assert tagged(conn, "erin", 5) == 5          # no limit yet
        pg.query("INSERT INTO sluice.limits (subject, requests_per_minute) VALUES ('erin', 1)",
                 dbname=fresh_db)

        def refused():
            return tagged(conn, "erin") == 0
        wait_until(refused, 5, "the sluice.limits row to apply")
        # NULL means inherit: clearing the value lifts the limit again.
        pg.query("UPDATE sluice.limits SET requests_per_minute = NULL WHERE subject = 'erin'",
                 dbname=fresh_db)
        wait_until(lambda: tagged(conn, "erin") == 1, 5, "the NULL (inherit) row to apply")


def test_daily_token_budget_survives_a_restart(sluice, pg, fresh_db):
    pooler = ai_pooler(sluice, pg, fresh_db)
    pooler.limits = {"frank": "tokens_per_day=1000"}
    assert_succeeded(run_migrate(pooler))
    # Usage recorded today (by an earlier run) already exhausts the budget.
    pg.query("INSERT INTO sluice.llm_usage (id, created_at, subject, db_user, database, model,"
             " input_tokens, output_tokens, instance) VALUES"
             " (gen_random_uuid(), now(), 'frank', 'app', 'app', 'gpt-4o', 900, 150, 'earlier')",
             dbname=fresh_db)
    pooler.start()
    with pooler.connect() as conn:
        def refused():
            try:
                conn.execute("select 1 /*ai_user='frank'*/")
                return False
            except psycopg.Error as e:
                assert e.sqlstate == LIMITED, e
                assert "tokens_per_day" in e.diag.message_primary
                assert "resets at" in (e.diag.message_hint or "")
                return True
        wait_until(refused, 5, "the seeded budget to refuse")
        # Other subjects are not affected.
        assert tagged(conn, "grace", 3) == 3


def test_attributed_statements_fail_closed_while_ai_database_is_unreachable_at_start(
        sluice, pg, fresh_db):
    # ai_database points at a port where nothing listens: pgsluice cannot read
    # sluice.limits, the budgets or the prices, so it cannot tell whether a
    # subject may spend more. Attributed statements (an ai_ tag or sluice.user)
    # are refused with 53400 saying why; untagged traffic flows, and no client waits.
    pooler = sluice(ai_database="usage", pool_mode="transaction",
                    databases={"usage": f"host={pg.host} port=1 dbname={fresh_db} user=app"},
                    start=False)
    pooler.limits = {"heidi": "requests_per_minute=2"}
    pooler.start()
    t0 = time.monotonic()
    with pooler.connect() as conn:
        assert conn.execute("select 42").fetchone() == (42,)
        assert tagged(conn, "heidi", 4) == 0
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("select 1 /*ai_user='heidi'*/")
        e = refused.value
        assert e.sqlstate == LIMITED
        assert e.diag.message_primary == 'limits and budgets for "heidi" are not loaded yet'
        assert e.diag.message_detail == ('pgsluice has not yet read sluice.limits, sluice.model_prices '
                                         'and sluice.llm_usage from ai_database "usage".')
        conn.execute("SET sluice.user = 'heidi'")
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("select 1")
        assert refused.value.sqlstate == LIMITED
        conn.execute("RESET sluice.user")
        assert conn.execute("select 43").fetchone() == (43,)
    assert time.monotonic() - t0 < 5
    log = pooler.log_text(lines=400)
    assert 'could not load limits and budgets from ai_database "usage" at start' in log
    assert "limits: connection to PostgreSQL failed" in log


def test_three_instances_stay_within_the_documented_overshoot(sluice, pg, fresh_db):
    """docs/limits.md: total admitted <= B + what the other instances admit
    within one sync lag. Three instances, each hammered by its own client
    for a subject allowed 30 requests per minute; with a 0.2 s sync interval
    and clients that pause 50 ms between statements, each instance can
    admit at most about 0.4 s / 0.05 s = 8 statements another instance has
    not yet seen, so the total stays at or below 30 + 2 * 8 = 46."""
    limit, per_client = 30, 60
    poolers = []
    for i in range(3):
        p = ai_pooler(sluice, pg, fresh_db)
        p.limits = {"ivan": f"requests_per_minute={limit}"}
        if i == 0:
            assert_succeeded(run_migrate(p))
        p.start()
        poolers.append(p)
    time.sleep(0.5)    # every side channel connected and caught up
    counts = [0, 0, 0]

    def hammer(i):
        with poolers[i].connect() as conn:
            for _ in range(per_client):
                counts[i] += tagged(conn, "ivan")
                time.sleep(0.05)
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    total = sum(counts)
    without_sync = 3 * limit
    print(f"admitted per instance {counts}, total {total}, limit {limit}")
    assert total >= limit, counts                 # the limit itself is reachable
    assert total <= limit + 2 * 8, counts         # the documented bound
    assert total < without_sync, counts           # sharing made a difference
    rows = pg.query("SELECT count(DISTINCT instance) FROM sluice.rate_counters", dbname=fresh_db)
    assert rows[0][0] == 3
