# SPDX-License-Identifier: PostgreSQL
"""Limits that hold under concurrency (docs/limits.md, "Reservations", "Sliding windows").

Many clients of one subject fire at once; each statement carries its token counts
(ai_tokens_in/ai_tokens_out), so pgsluice reserves them when it admits the statement and
settles the reservation with the usage record. The tests count what was admitted (rows in
sluice.llm_usage, statements that returned) with bounded loops and assert the bound, never
a timing.
"""

import threading

import psycopg
import pytest

import harness
from test_ai_usage import LIMITED, connect, usage_pooler, wait_for_rows
from test_migrate import fresh_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own")


def fire(pooler, clients, attempts, statement):
    """clients threads, each on its own connection, run statement(i, k) attempts times,
    all starting together. Returns (admitted [(i, k)], refusals [psycopg.Error])."""
    admitted, refusals, errors = [], [], []
    lock = threading.Lock()
    conns = [connect(pooler, autocommit=True) for _ in range(clients)]
    barrier = threading.Barrier(clients)

    def run(i):
        try:
            barrier.wait(timeout=60)
            for k in range(attempts):
                try:
                    conns[i].execute(statement(i, k))
                    with lock:
                        admitted.append((i, k))
                except psycopg.errors.ConfigurationLimitExceeded as e:
                    with lock:
                        refusals.append(e)
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for c in conns:
        c.close()
    assert not errors, errors
    return admitted, refusals


def call(subject, tokens_in, tokens_out=0, model="gpt-4o", sleep=0.05, **extra):
    """A statement that stands for one LLM call's record, slow enough that many are in flight."""
    t = {"ai_user": subject, "ai_model": model, "ai_tokens_in": tokens_in, "ai_tokens_out": tokens_out}
    t.update(extra)
    return f"SELECT pg_sleep({sleep}) /*" + ",".join(f"{k}='{v}'" for k, v in t.items()) + "*/"


def test_tokens_per_minute_holds_with_50_concurrent_clients(sluice, pg, fresh_db):
    """tokens_per_minute=2000, 50 clients x 4 calls of 100 tokens at once (20000 offered):
    at most 2000 tokens are admitted (the whole run is well inside one minute), and the
    refused statements say tokens_per_minute."""
    pooler = usage_pooler(sluice, pg, fresh_db, default_pool_size="50", max_client_conn="200")
    pooler.limits = {"tess": "tokens_per_minute=2000"}
    pooler.start()
    admitted, refusals = fire(pooler, 50, 4, lambda i, k: call("tess", 100))
    tokens = 100 * len(admitted)
    assert tokens <= 2000, f"{tokens} tokens admitted at tokens_per_minute=2000"
    assert tokens >= 1000    # it is a limit, not an outage
    assert refusals and all("tokens_per_minute 2000" in e.diag.message_primary for e in refusals)
    wait_for_rows(pg, fresh_db, len(admitted))
    assert pg.query("SELECT sum(input_tokens) FROM sluice.llm_usage WHERE subject = 'tess'",
                    dbname=fresh_db)[0][0] == tokens


def test_cost_budget_holds_with_50_concurrent_clients(sluice, pg, fresh_db):
    """cost_cents_per_month=10, 50 clients x 3 gpt-4o calls of 4000 input tokens (1 cent each):
    the subject spends at most its budget plus one call, 11 cents."""
    pooler = usage_pooler(sluice, pg, fresh_db, default_pool_size="50", max_client_conn="200")
    pooler.limits = {"cleo": "cost_cents_per_month=10"}
    pooler.start()
    admitted, refusals = fire(pooler, 50, 3, lambda i, k: call("cleo", 4000))
    assert 1 <= len(admitted) <= 11, f"{len(admitted)} calls of 1 cent admitted at a 10 cent budget"
    assert refusals and all("cost_cents_per_month 10" in e.diag.message_primary for e in refusals)
    wait_for_rows(pg, fresh_db, len(admitted))
    spent = pg.query("SELECT sum(cost_cents) FROM sluice.llm_usage WHERE subject = 'cleo'", dbname=fresh_db)[0][0]
    assert spent <= 11


def test_estimate_tag_is_reserved_while_the_statement_runs(sluice, pg, fresh_db):
    """A statement without token counts reserves its ai_tokens_estimate while it runs: with
    tokens_per_day=1000, 20 clients each holding an estimate of 300 at once, at most 3 are
    in flight together past the first; when they end without a record the room comes back."""
    pooler = usage_pooler(sluice, pg, fresh_db, default_pool_size="30")
    pooler.limits = {"erin": "tokens_per_day=1000"}
    pooler.start()
    lookup = "SELECT pg_sleep(0.3) /*ai_user='erin',ai_tokens_estimate='300'*/"
    admitted, refusals = fire(pooler, 20, 1, lambda i, k: lookup)
    assert 1 <= len(admitted) <= 3 and len(refusals) == 20 - len(admitted)
    assert "reserved by statements in flight" in refusals[0].diag.message_detail
    # nothing was charged: the reservations were given back, so all fit again one by one
    with connect(pooler, autocommit=True) as conn:
        for _ in range(5):
            conn.execute(lookup.replace("0.3", "0"))


def test_max_concurrent_bounds_statements_in_flight(sluice, pg, fresh_db):
    """max_concurrent=3 (from sluice.limits): of 12 clients starting a 0.5 s statement
    together, the statements that ran overlapped at most 3 at a time, the others got 53400
    naming max_concurrent; afterwards the subject runs again."""
    pooler = usage_pooler(sluice, pg, fresh_db, default_pool_size="20")
    pg.query("INSERT INTO sluice.limits (subject, max_concurrent) VALUES ('mona', 3)", dbname=fresh_db)
    pooler.start()
    spans = []
    lock = threading.Lock()
    stmt = "SELECT clock_timestamp(), pg_sleep(0.5), clock_timestamp() /*ai_user='mona'*/"
    conns = [connect(pooler, autocommit=True) for _ in range(12)]
    barrier = threading.Barrier(12)
    refusals = []

    def run(i):
        barrier.wait(timeout=60)
        try:
            start, _, end = conns[i].execute(stmt).fetchone()
            with lock:
                spans.append((start, end))
        except psycopg.errors.ConfigurationLimitExceeded as e:
            with lock:
                refusals.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert 1 <= most <= 3, spans
    assert refusals, "12 at once with max_concurrent=3 refused none"
    e = refusals[0]
    assert e.sqlstate == LIMITED
    assert e.diag.message_primary == 'rate limit exceeded for "mona": max_concurrent 3'
    assert e.diag.message_detail == "3 statements in flight; the limit is 3."
    assert e.diag.message_hint == "Retry when one of the statements in flight has finished."
    for c in conns:
        assert c.execute("SELECT 1 /*ai_user='mona'*/").fetchone() == (1,)   # one at a time: fine
        c.close()


def test_requests_per_minute_is_at_most_n_in_any_60_seconds(sluice):
    """requests_per_minute=30: a client that fires 3 times as many at once gets 30, not the
    GCRA's 30 plus the ones that drained meanwhile; the HINT points at the first second."""
    pooler = sluice(start=False)
    pooler.limits = {"rita": "requests_per_minute=30"}
    pooler.start()
    ok = 0
    with pooler.connect(autocommit=True) as conn:
        for _ in range(90):
            try:
                conn.execute("SELECT 1 /*ai_user='rita'*/")
                ok += 1
            except psycopg.errors.ConfigurationLimitExceeded as e:
                last = e
    assert ok == 30
    assert last.diag.message_detail == "30 requests in the last minute; the limit is 30."
    assert last.diag.message_hint.startswith("Retry after ")
    assert 55.0 <= float(last.diag.message_hint.split()[2]) <= 61.0


def test_a_limits_row_with_valid_until_is_a_temporary_override(sluice, pg, fresh_db):
    """A sluice.limits row refusing everything (requests_per_minute=0) until 2 s from now:
    refused at first, then the [limits] line applies again, without a reload."""
    pooler = usage_pooler(sluice, pg, fresh_db)
    pooler.limits = {"vera": "requests_per_minute=1000"}
    pg.query("INSERT INTO sluice.limits (subject, requests_per_minute, valid_until)"
             " VALUES ('vera', 0, now() + interval '2 seconds')", dbname=fresh_db)
    pooler.start()
    with connect(pooler, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded) as refused:
            conn.execute("SELECT 1 /*ai_user='vera'*/")
        assert refused.value.diag.message_primary == 'rate limit exceeded for "vera": requests_per_minute 0'

        def admitted():
            try:
                conn.execute("SELECT 1 /*ai_user='vera'*/")
                return True
            except psycopg.errors.ConfigurationLimitExceeded:
                return False
        harness.wait_for(admitted, 15, interval=0.2, what="the override to expire")


def test_a_group_budget_is_shared_by_its_members(sluice, pg, fresh_db):
    """sluice.subject_groups puts ann and ben in group eng, whose sluice.limits row (subject
    'group:eng') allows 1000 tokens a day: ann's call of 600 passes, ben's of 600 is refused
    naming the group, though ben's own limit has room; cid, in no group, is not affected."""
    pooler = usage_pooler(sluice, pg, fresh_db)
    pooler.limits = {"default": "tokens_per_day=100000"}
    pg.query("INSERT INTO sluice.subject_groups VALUES ('ann', 'eng'), ('ben', 'eng')", dbname=fresh_db)
    pg.query("INSERT INTO sluice.limits (subject, tokens_per_day) VALUES ('group:eng', 1000)", dbname=fresh_db)
    pooler.start()
    with connect(pooler, autocommit=True) as conn:
        conn.execute(call("ann", 600, sleep=0))
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded) as refused:
            conn.execute(call("ben", 600, sleep=0))
        e = refused.value
        assert e.diag.message_primary == 'rate limit exceeded for "ben" in group "eng": tokens_per_day 1000'
        assert e.diag.message_detail == "600 tokens used today (UTC); the limit is 1000."
        conn.execute(call("ben", 400, sleep=0))        # what is left of the group's budget
        conn.execute(call("cid", 600, sleep=0))
    wait_for_rows(pg, fresh_db, 3)
    assert pg.query("SELECT subject, sum(input_tokens) FROM sluice.llm_usage GROUP BY 1 ORDER BY 1",
                    dbname=fresh_db) == [("ann", 600), ("ben", 400), ("cid", 600)]


def test_a_group_limit_written_in_the_ini_file_holds(sluice, pg, fresh_db):
    """The [limits] line "group:eng = tokens_per_day=1000" (docs/limits.md) loads and holds
    like the sluice.limits row: inih splits a line at its first ':' as at '=', and
    config.c puts the subject "group:eng" back together."""
    pooler = usage_pooler(sluice, pg, fresh_db)
    pooler.limits = {"default": "tokens_per_day=100000", "group:eng": "tokens_per_day=1000",
                     "group:eng/gpt-4o": "requests_per_minute=100"}
    pg.query("INSERT INTO sluice.subject_groups VALUES ('ann', 'eng'), ('ben', 'eng')", dbname=fresh_db)
    pooler.start()
    with connect(pooler, autocommit=True) as conn:
        conn.execute(call("ann", 600, sleep=0))
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded) as refused:
            conn.execute(call("ben", 600, sleep=0))
        assert refused.value.diag.message_primary == \
            'rate limit exceeded for "ben" in group "eng": tokens_per_day 1000'
        conn.execute(call("cid", 600, sleep=0))
