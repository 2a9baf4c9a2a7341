# SPDX-License-Identifier: PostgreSQL
"""LLM usage recording (src/ai/README.md, docs/ai-middleware.md).

A statement tagged with ai_tokens_in/ai_tokens_out that completes becomes one
row of sluice.llm_usage, exactly once: across a PostgreSQL outage, a SIGKILL
of pgsluice, a damaged journal tail and a clean shutdown. Each test migrates a
database of its own (test_migrate's fixtures) and points the clients at it
through the [databases] entry "usage", which is also the ai_database.

"Acknowledged" below means what the client saw: the statement returned
without an error (the client got its ReadyForQuery).
"""

import re
import resource
import signal
import socket
import threading
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import psycopg
import pytest
from harness import wait_until

import harness
from test_migrate import assert_succeeded, fresh_db, run_migrate  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own")

LIMITED = "53400"
DOCS = harness.REPO / "docs" / "ai-middleware.md"

# US dollars per million tokens (input, output); "local-llm" has no price on purpose.
PRICES = {"gpt-4o": (Decimal("2.50"), Decimal("10.00")),
          "gpt-4o-mini": (Decimal("0.15"), Decimal("0.60"))}
MODELS = ["gpt-4o", "gpt-4o-mini", "local-llm"]


# -- helpers ----------------------------------------------------------------------------
def usage_pooler(sluice, pg, dbname, migrate=True, **overrides):
    """A pooler (not started) whose ai_database "usage" is dbname, migrated, with prices."""
    settings = dict(pool_mode="transaction", limits_refresh_interval="0.2",
                    limits_sync_interval="0.2")
    settings.update(overrides)
    pooler = sluice(start=False, ai_database="usage",
                    databases={"usage": f"host={pg.host} port={pg.port} dbname={dbname} user=app"},
                    **settings)
    if migrate:
        assert_succeeded(run_migrate(pooler))
        for model, (pin, pout) in PRICES.items():
            pg.query("INSERT INTO sluice.model_prices (model, input_usd_per_mtok, output_usd_per_mtok)"
                     " VALUES (%s, %s, %s)", (model, pin, pout), dbname=dbname)
        pg.query("CREATE TABLE answers (k int PRIMARY KEY)", dbname=dbname)
        pg.query("GRANT ALL ON answers TO app", dbname=dbname)
    return pooler


def connect(pooler, **params):
    return pooler.connect(dbname="usage", **params)


def tags(k, subject="alice", model=None, tokens_in=None, tokens_out=None, **extra):
    """The sqlcommenter comment of statement k: tokens, latency, conversation and trace all
    derived from k, so every column of its row can be checked."""
    t = {"ai_user": subject,
         "ai_model": model or MODELS[k % len(MODELS)],
         "ai_tokens_in": 100 + k if tokens_in is None else tokens_in,
         "ai_tokens_out": 1 + k % 37 if tokens_out is None else tokens_out,
         "ai_latency_ms": 500 + k,
         "ai_conversation": f"c-{k}",
         "traceparent": f"00-{k + 1:032x}-{k + 1:016x}-01"}   # all-zero ids are invalid
    t.update(extra)
    return "/*" + ",".join(f"{key}='{v}'" for key, v in t.items()) + "*/"


def expected_cost(model, tokens_in, tokens_out):
    """cost_cents as docs/schema.md defines it, rounded like numeric(12,4); None without a price."""
    if model not in PRICES:
        return None
    pin, pout = PRICES[model]
    return ((tokens_in * pin + tokens_out * pout) / 10000).quantize(Decimal("0.0001"), ROUND_HALF_UP)


def insert(conn, k, extended, **tag_args):
    """Tagged INSERT of k into answers: extended protocol with a parameter, else simple."""
    if extended:
        conn.execute(f"INSERT INTO answers (k) VALUES (%s) {tags(k, **tag_args)}", (k,))
    else:
        conn.execute(f"INSERT INTO answers (k) VALUES ({k}) {tags(k, **tag_args)}")


def usage_count(pg, db, where="true"):
    """(rows, distinct ids) in sluice.llm_usage."""
    return tuple(pg.query(f"SELECT count(*), count(DISTINCT id) FROM sluice.llm_usage WHERE {where}",
                          dbname=db)[0])




def assert_daily_rollup_matches(pg, db):
    """sluice.usage_daily, kept by the writer in the transaction that stores the rows, has
    exactly the raw rows' sums per day, subject and model: a replayed record counts once."""
    daily = pg.query("SELECT day, subject, model, requests, input_tokens, output_tokens, tokens, cost_cents,"
                     " cache_hits FROM sluice.usage_daily ORDER BY 1, 2, 3", dbname=db)
    raw = pg.query("SELECT (created_at AT TIME ZONE 'UTC')::date, subject, coalesce(model, ''), count(*),"
                   " sum(input_tokens), sum(output_tokens), sum(input_tokens + output_tokens),"
                   " coalesce(sum(cost_cents), 0), count(*) FILTER (WHERE cached)"
                   " FROM sluice.llm_usage GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", dbname=db)
    assert daily == raw


def wait_for_rows(pg, db, n, timeout=15, where="true"):
    wait_until(lambda: usage_count(pg, db, where)[0] >= n, timeout, f"{n} usage rows")


def journal_files(pooler):
    """{name: size} of the usage journal's segment files (usage.lock left out)."""
    d = Path(pooler.settings()["usage_journal_dir"])
    return {p.name: p.stat().st_size for p in d.iterdir() if p.name.startswith("usage-")}


def frame_offsets(data):
    """Offsets of the journal frames in a segment's bytes (src/ai/journal.h: 16-byte header,
    u32 little-endian payload length at offset 8)."""
    offsets, pos = [], 0
    while pos + 16 <= len(data):
        assert data[pos:pos + 4] == b"SLUJ", f"no frame at {pos}"
        offsets.append(pos)
        pos += 16 + int.from_bytes(data[pos + 8:pos + 12], "little")
    assert pos == len(data)
    return offsets


def unshipped_segments(sluice, pg, db, n):
    """(journal directory, its non-empty segment files in order) that a pgsluice killed with
    SIGKILL leaves after n tagged statements, 5 records a segment, none shipped yet."""
    first = usage_pooler(sluice, pg, db, usage_batch_size=5, usage_flush_interval="60")
    first.start()
    with connect(first) as conn:
        for k in range(n):
            insert(conn, k, extended=k % 2 == 1)
    assert first.stop(signal.SIGKILL) == []
    jdir = Path(first.settings()["usage_journal_dir"])
    segs = sorted(p for p in jdir.glob("usage-*.journal") if p.stat().st_size > 0)
    assert len(segs) == -(-n // 5), journal_files(first)
    return jdir, segs


class Traffic:
    """Tagged INSERTs from several connections at once, counting what was sent and what
    was acknowledged. k identifies a statement (answers.k, conversation "c-k")."""

    def __init__(self, pooler, clients=4, per_client=10_000, pause=0.0):
        self.pooler, self.clients, self.per_client, self.pause = pooler, clients, per_client, pause
        self.sent, self.acked = set(), set()
        self.errors = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(clients)]

    def _run(self, i):
        try:
            conn = connect(self.pooler)
        except psycopg.Error as e:
            self.errors.append(e)
            return
        with conn:
            for n in range(self.per_client):
                if self.stop.is_set():
                    return
                k = i * self.per_client + n
                self.sent.add(k)
                try:
                    insert(conn, k, extended=n % 2 == 1, subject=f"user{i}")
                except psycopg.Error as e:     # the server or pgsluice went away
                    self.errors.append(e)
                    return
                self.acked.add(k)
                if self.pause:
                    time.sleep(self.pause)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def wait_acked(self, n, timeout=10):
        wait_until(lambda: len(self.acked) >= n, timeout, f"{n} acknowledged statements")

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def done(self):
        return not any(t.is_alive() for t in self.threads)


def stored_conversations(pg, db):
    return {r[0] for r in pg.query("SELECT conversation_id FROM sluice.llm_usage", dbname=db)}


# -- N statements, N rows ---------------------------------------------------------------
@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_every_tagged_statement_makes_exactly_one_row_with_every_column(sluice, pg, fresh_db,
                                                                      pool_mode):
    """200 tagged INSERTs from 4 connections, simple and extended protocol alternating:
    200 rows, the exact token and cost sums, and every column of every row as expected."""
    pooler = usage_pooler(sluice, pg, fresh_db, pool_mode=pool_mode).start()
    clients, per_client = 4, 50
    elapsed_ms = {}
    t0 = time.time()

    def client(i):
        with connect(pooler) as conn:
            for n in range(per_client):
                k = i * per_client + n
                start = time.monotonic()
                insert(conn, k, extended=n % 2 == 1, subject=f"user{i}")
                elapsed_ms[k] = (time.monotonic() - start) * 1000
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    t1 = time.time()
    n = clients * per_client
    assert len(elapsed_ms) == n
    assert pg.query("SELECT count(*) FROM answers", dbname=fresh_db)[0][0] == n

    wait_for_rows(pg, fresh_db, n)
    time.sleep(0.5)     # a few more flushes: nothing is stored twice
    assert usage_count(pg, fresh_db) == (n, n)

    ks = range(n)
    exp_in = sum(100 + k for k in ks)
    exp_out = sum(1 + k % 37 for k in ks)
    exp_cost = sum(c for k in ks
                   if (c := expected_cost(MODELS[k % 3], 100 + k, 1 + k % 37)) is not None)
    got = pg.query("SELECT sum(input_tokens), sum(output_tokens), sum(cost_cents),"
                   " count(*) FILTER (WHERE cost_cents IS NULL) FROM sluice.llm_usage",
                   dbname=fresh_db)[0]
    assert got == (exp_in, exp_out, exp_cost, sum(1 for k in ks if MODELS[k % 3] == "local-llm"))

    instance = f"{socket.gethostname()[:63]}:{pooler.port}"
    rows = pg.query("SELECT conversation_id, subject, db_user, database, model, input_tokens,"
                    " output_tokens, cost_cents, llm_latency_ms, statement_ms, cached, trace_id,"
                    " instance, extract(epoch FROM created_at)::float8 FROM sluice.llm_usage",
                    dbname=fresh_db)
    for (conv, subject, db_user, database, model, tin, tout, cost, lat, stmt_ms, cached, trace,
         inst, created) in rows:
        k = int(conv[2:])
        assert (subject, db_user, database, model) == (f"user{k // per_client}", "app", "usage",
                                                       MODELS[k % 3]), conv
        assert (tin, tout, cost) == (100 + k, 1 + k % 37,
                                     expected_cost(MODELS[k % 3], 100 + k, 1 + k % 37)), conv
        assert (lat, cached, trace, inst) == (500 + k, False, f"{k + 1:032x}", instance), conv
        # measured by pgsluice: more than nothing, less than the client saw
        assert 0 < stmt_ms <= elapsed_ms[k] + 1, (conv, stmt_ms, elapsed_ms[k])
        # whole microseconds, as the text form "%.3f" stored them (binary float8 since session 8)
        assert stmt_ms == round(stmt_ms, 3), (conv, stmt_ms)
        assert t0 - 1 <= created <= t1 + 1, conv
    assert sorted(int(r[0][2:]) for r in rows) == list(ks)


def test_record_ids_are_uuid_version_7_of_their_created_at(sluice, pg, fresh_db):
    """Each row's id is a UUID version 7 (RFC 9562) whose first 48 bits are its created_at in
    Unix milliseconds, so ids grow with time (inserts go to the right edge of the primary
    key): 60 statements spread over more than 20 ms, 60 distinct ids in created_at order."""
    pooler = usage_pooler(sluice, pg, fresh_db).start()
    with connect(pooler) as conn:
        for k in range(60):
            insert(conn, k, extended=k % 2 == 1)
            if k % 20 == 19:
                time.sleep(0.01)     # rows in different milliseconds for the ordering check
    wait_for_rows(pg, fresh_db, 60)
    assert usage_count(pg, fresh_db) == (60, 60)
    rows = pg.query("SELECT id::text, floor(extract(epoch FROM created_at) * 1000)::bigint"
                    " FROM sluice.llm_usage ORDER BY id", dbname=fresh_db)
    for uid, ms in rows:
        assert uid[14] == "7" and uid[19] in "89ab", uid       # version 7, RFC 9562 variant
        assert int(uid[:8] + uid[9:13], 16) == ms, (uid, ms)
    by_id = [ms for _, ms in rows]
    assert by_id == sorted(by_id) and by_id[0] < by_id[-1]


def test_tags_without_optional_fields_store_nulls(sluice, pg, fresh_db):
    """Only ai_tokens_in: the subject is the login role; model, latency, conversation,
    trace and cost are NULL, output_tokens 0. A malformed traceparent (all-zero trace id,
    invalid in W3C trace context) is ignored, not an error."""
    pooler = usage_pooler(sluice, pg, fresh_db).start()
    with connect(pooler) as conn:
        conn.execute("SELECT 1 /*ai_tokens_in='7',traceparent='00-" + "0" * 32 + "-" + "1" * 16
                     + "-01'*/")
    wait_for_rows(pg, fresh_db, 1)
    row = pg.query("SELECT subject, model, input_tokens, output_tokens, cost_cents, llm_latency_ms,"
                   " conversation_id, trace_id FROM sluice.llm_usage", dbname=fresh_db)
    assert row == [("app", None, 7, 0, None, None, None, None)]


# -- what makes no row ------------------------------------------------------------------
def test_failed_statements_make_no_row(sluice, pg, fresh_db):
    """An ERROR makes no record; a record is made when its statement completes, so a later
    ROLLBACK keeps it (the LLM call it reports did happen)."""
    pooler = usage_pooler(sluice, pg, fresh_db).start()
    with connect(pooler) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):              # simple protocol
            conn.execute(f"SELECT 1/0 {tags(1, ai_conversation='fail-simple')}")
        with pytest.raises(psycopg.errors.DivisionByZero):              # extended protocol
            conn.execute(f"SELECT 1/%s {tags(2, ai_conversation='fail-extended')}", (0,))
        with pytest.raises(psycopg.errors.UniqueViolation):             # INSERT that fails
            conn.execute("INSERT INTO answers VALUES (3), (3) "
                         + tags(3, ai_conversation="fail-insert"))
        with pytest.raises(psycopg.errors.InvalidParameterValue):       # refused tag (22023)
            conn.execute(f"SELECT 1 {tags(4, ai_conversation='bad-tag', ai_tokens_in='ten')}")

        conn.execute("BEGIN")                                           # failing inside a transaction
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute(f"SELECT 1/0 {tags(5, ai_conversation='fail-in-tx')}")
        conn.execute("ROLLBACK")

        conn.execute("BEGIN")                                           # completed, then rolled back
        insert(conn, 6, extended=False, ai_conversation="rolled-back")
        conn.execute("ROLLBACK")

        # A pipeline (one Sync, one implicit transaction): the first statement completes,
        # the second fails and takes the first one's INSERT with it; the first one's record,
        # made at its CommandComplete, stays.
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline():
                conn.execute(f"INSERT INTO answers VALUES (%s) {tags(7, ai_conversation='pipe-ok')}",
                             (7,))
                conn.execute(f"SELECT 1/%s {tags(8, ai_conversation='pipe-fail')}", (0,))

        conn.execute(f"SELECT 1 {tags(9, ai_conversation='marker')}")

    wait_for_rows(pg, fresh_db, 1, where="conversation_id = 'marker'")
    time.sleep(0.4)
    assert stored_conversations(pg, fresh_db) == {"rolled-back", "pipe-ok", "marker"}
    assert pg.query("SELECT count(*) FROM answers", dbname=fresh_db)[0][0] == 0


@pytest.mark.parametrize("pool_mode", ["transaction", "session"])
def test_pipelined_batches_record_each_tagged_execute_with_its_own_tags(sluice, pg, fresh_db,
                                                                         pool_mode):
    """Pipelined batches (a Sync after each statement): the Bind/Describe/Execute/Sync
    runs behind each tagged Parse ride the batch relay (client.c relay_batch), and each
    Execute still records once with the tags of its own statement; untagged ones record
    nothing, a named statement's tags apply to each execution, a refused statement
    (tokens_per_minute) records nothing, and the client goes on after it."""
    pooler = usage_pooler(sluice, pg, fresh_db, pool_mode=pool_mode)
    pooler.limits = {"tina": "tokens_per_minute=1000"}
    pooler.start()
    with connect(pooler) as conn:
        with conn.pipeline() as p:
            conn.execute(f"SELECT %s::int {tags(0, ai_conversation='p0')}", (0,))
            p.sync()
            conn.execute("SELECT %s::int", (1,))                     # untagged between
            p.sync()
            conn.execute(f"SELECT %s::int {tags(2, ai_conversation='p2')}", (2,))
            p.sync()
            tina = dict(subject="tina", tokens_in=900, tokens_out=0)
            cur = conn.execute(f"SELECT %s::int {tags(3, ai_conversation='p3', **tina)}", (3,))
            p.sync()
        assert cur.fetchone() == (3,)
        with pytest.raises(psycopg.Error) as e:
            with conn.pipeline() as p:
                conn.execute(f"SELECT %s::int {tags(4, ai_conversation='p4', **tina)}", (4,))
                p.sync()
        assert e.value.sqlstate == LIMITED
        with conn.pipeline() as p:
            last = conn.execute(f"SELECT %s::int {tags(5, ai_conversation='p5')}", (5,))
            p.sync()
            conn.execute("SELECT 1")
        assert last.fetchone() == (5,)
        named = f"SELECT %s::int {tags(6, ai_conversation='named')}"
        for n in range(3):                                              # a named statement
            assert conn.execute(named, (n,), prepare=True).fetchone() == (n,)
    wait_for_rows(pg, fresh_db, 7)
    time.sleep(0.4)
    rows = pg.query("SELECT conversation_id, count(*), min(input_tokens) FROM sluice.llm_usage"
                    " GROUP BY 1 ORDER BY 1", dbname=fresh_db)
    assert rows == [("named", 3, 106), ("p0", 1, 100), ("p2", 1, 102), ("p3", 1, 900),
                    ("p5", 1, 105)]


def test_a_statement_refused_for_its_token_budget(sluice, pg, fresh_db):
    """tokens_per_minute=1000: a call of 800 tokens is admitted; the next one of 800 is
    refused before it runs, as its own tags say it would pass the limit (docs/limits.md,
    "Reservations"); the refusal names tokens_per_minute and makes no row."""
    pooler = usage_pooler(sluice, pg, fresh_db)
    pooler.limits = {"tina": "tokens_per_minute=1000"}
    pooler.start()
    with connect(pooler) as conn:
        conn.execute(f"SELECT 1 {tags(0, subject='tina', tokens_in=800, tokens_out=0)}")
        conn.execute(f"SELECT 1 {tags(1, subject='tina', tokens_in=150, tokens_out=0)}")   # fits
        with pytest.raises(psycopg.Error) as refused:
            conn.execute(f"SELECT 1 {tags(2, subject='tina', tokens_in=800, tokens_out=0)}")
        e = refused.value
        assert e.sqlstate == LIMITED
        assert e.diag.message_primary == 'rate limit exceeded for "tina": tokens_per_minute 1000'
        assert e.diag.message_detail == "950 tokens in the last minute; the limit is 1000."
        assert re.fullmatch(r"Retry after \d+\.\d s\.", e.diag.message_hint or "")
        # another subject is not affected
        conn.execute(f"SELECT 1 {tags(3, subject='ursula', tokens_in=800, tokens_out=0)}")
    wait_for_rows(pg, fresh_db, 3)
    time.sleep(0.4)
    assert pg.query("SELECT subject, sum(input_tokens) FROM sluice.llm_usage GROUP BY 1 ORDER BY 1",
                    dbname=fresh_db) == [("tina", 950), ("ursula", 800)]


def test_a_cost_budget_refuses_the_next_statement_right_after_start(sluice, pg, fresh_db):
    """cost_cents_per_month=1: one gpt-4o call of 8000 input tokens costs 2 cents, so the
    subject's next statement is refused, also when the call came right after pgsluice started
    (usage_flush_interval=5 makes "right after" deterministic)."""
    pooler = usage_pooler(sluice, pg, fresh_db, usage_flush_interval="5")
    pooler.limits = {"cora": "cost_cents_per_month=1"}
    pooler.start()
    with connect(pooler) as conn:
        conn.execute(f"SELECT 1 {tags(1, subject='cora', model='gpt-4o', tokens_in=8000, tokens_out=0)}")
        with pytest.raises(psycopg.Error) as refused:
            conn.execute(f"SELECT 1 {tags(2, subject='cora', model='gpt-4o', tokens_in=8000, tokens_out=0)}")
    assert refused.value.sqlstate == LIMITED
    assert "cost_cents_per_month" in refused.value.diag.message_primary


@pytest.mark.parametrize("stop", [
    signal.SIGTERM,
    signal.SIGKILL,
], ids=["sigterm", "sigkill"])
def test_a_daily_token_budget_used_up_stays_used_up_after_a_restart(sluice, pg, fresh_db, stop):
    """tokens_per_day=1000 and one call of 1100 tokens: the subject is refused, and still
    refused by the pgsluice started after this one stopped (cleanly, or killed before it
    shipped the record: usage_flush_interval=60)."""
    first = usage_pooler(sluice, pg, fresh_db, usage_flush_interval="60")
    first.limits = {"dora": "tokens_per_day=1000"}
    first.start()
    with connect(first) as conn:
        conn.execute(f"SELECT 1 {tags(1, subject='dora', tokens_in=1100, tokens_out=0)}")
        with pytest.raises(psycopg.Error) as refused:
            conn.execute(f"SELECT 1 {tags(2, subject='dora', tokens_in=1, tokens_out=0)}")
    assert refused.value.sqlstate == LIMITED
    assert refused.value.diag.message_detail == "1100 tokens used today (UTC); the limit is 1000."
    assert first.stop(stop) == []

    second = usage_pooler(sluice, pg, fresh_db, migrate=False,
                          usage_journal_dir=first.settings()["usage_journal_dir"])
    second.limits = {"dora": "tokens_per_day=1000"}
    second.start()
    wait_for_rows(pg, fresh_db, 1)              # the record is stored either way
    time.sleep(0.5)                             # a limits refresh and sync later
    with connect(second) as conn:
        with pytest.raises(psycopg.Error) as refused:
            conn.execute(f"SELECT 1 {tags(3, subject='dora', tokens_in=1, tokens_out=0)}")
    assert refused.value.sqlstate == LIMITED


def test_a_second_pgsluice_cannot_take_a_journal_in_use(sluice, pg, fresh_db):
    first = usage_pooler(sluice, pg, fresh_db).start()
    jdir = first.settings()["usage_journal_dir"]
    # start() returns once the port accepts; the journal is locked a moment later,
    # just before "started" is logged (a loaded machine lets the second win the lock)
    wait_until(lambda: "started, process" in first.log_text(lines=None), 10,
               "the first pgsluice to lock its journal")
    second = usage_pooler(sluice, pg, fresh_db, migrate=False, usage_journal_dir=jdir)
    # run to completion (it may listen for a moment before it opens the journal)
    out = harness.run_binary([second.ini_path])
    assert out.returncode == 1, out.stdout
    assert f'usage journal directory "{jdir}" is locked by another process' in out.stdout


# -- failures: PostgreSQL down, pgsluice killed, damaged journal, shutdown -------------
def test_postgres_outage_during_traffic_loses_and_duplicates_nothing(sluice, pg, fresh_db):
    """PostgreSQL stopped while tagged statements run and records are being shipped in
    small batches; restarted 2 s later. Every acknowledged record is stored once."""
    # clients wait through the failed server logins until query_wait_timeout (PgBouncer's rule)
    pooler = usage_pooler(sluice, pg, fresh_db, usage_batch_size=7, usage_flush_interval="0.05",
                          query_wait_timeout=2)
    pooler.start()
    try:
        with Traffic(pooler, clients=3) as traffic:
            traffic.wait_acked(150)
            pg.stop()                                   # fast: backends are terminated
            wait_until(traffic.done, 10, "the clients to notice the outage")
            # the records not yet stored wait in the journal
            assert sum(journal_files(pooler).values()) > 0
            time.sleep(2)
        pg.start()
    finally:
        if not pg.running:
            pg.start()
    acked, sent = traffic.acked, traffic.sent
    assert all(isinstance(e, psycopg.OperationalError) for e in traffic.errors), traffic.errors
    wait_for_rows(pg, fresh_db, len(acked), timeout=20)
    time.sleep(0.5)
    rows, distinct = usage_count(pg, fresh_db)
    assert rows == distinct, "a record was stored twice"
    stored = {int(c[2:]) for c in stored_conversations(pg, fresh_db)}
    print(f"acknowledged {len(acked)}, stored {len(stored)}, sent {len(sent)}")
    assert acked <= stored <= sent, (len(acked), len(stored), len(sent))
    # nothing left behind once PostgreSQL is back
    wait_until(lambda: sum(journal_files(pooler).values()) == 0, 5, "the journal to drain")
    assert_daily_rollup_matches(pg, fresh_db)


def test_sigkill_during_traffic_then_restart_stores_every_acknowledged_record_once(
        sluice, pg, fresh_db):
    """pgsluice killed with SIGKILL while clients send tagged statements and the writer
    ships; a new pgsluice on the same journal stores what the old one had not."""
    first = usage_pooler(sluice, pg, fresh_db, usage_batch_size=5, usage_flush_interval="0.05")
    first.start()
    with Traffic(first, clients=3) as traffic:
        traffic.wait_acked(150)
        assert first.stop(signal.SIGKILL) == []
        wait_until(traffic.done, 10, "the clients to notice")
    acked, sent = set(traffic.acked), set(traffic.sent)
    assert 150 <= len(acked) <= len(sent)
    left = journal_files(first)
    assert sum(left.values()) > 0, "the kill left nothing unshipped: the test proved nothing"

    second = usage_pooler(sluice, pg, fresh_db, migrate=False,
                          usage_journal_dir=first.settings()["usage_journal_dir"])
    second.start()
    wait_for_rows(pg, fresh_db, len(acked))
    wait_until(lambda: sum(journal_files(second).values()) == 0, 5, "the journal to drain")
    rows, distinct = usage_count(pg, fresh_db)
    assert rows == distinct, "a record was stored twice"
    stored = {int(c[2:]) for c in stored_conversations(pg, fresh_db)}
    print(f"acknowledged {len(acked)}, stored {len(stored)}, sent {len(sent)}, "
          f"journal left by the kill {left}")
    assert acked <= stored <= sent, (len(acked), len(stored), len(sent))
    assert "from a previous run, to be replayed" in second.log_text(lines=None)
    assert_daily_rollup_matches(pg, fresh_db)


def test_a_damaged_journal_tail_is_skipped_with_a_log_line(sluice, pg, fresh_db):
    """Two unshipped segments of 5 records. The second is torn in its last frame (as a write
    cut short would leave it): its first 4 records are stored and the file removed. The first
    gets 64 bytes of garbage after its records (damage): its 5 records are stored and the file
    is kept as .corrupt. Both are logged with the file name and the offset."""
    jdir, segs = unshipped_segments(sluice, pg, fresh_db, 10)
    damaged, torn = segs
    damaged_at = damaged.stat().st_size
    with open(damaged, "ab") as f:
        f.write(b"\xde\xad\xbe\xef" * 16)
    last = frame_offsets(torn.read_bytes())[-1]
    assert len(frame_offsets(torn.read_bytes())) == 5
    with open(torn, "r+b") as f:
        f.truncate(last + 40)                    # header whole, payload cut short

    second = usage_pooler(sluice, pg, fresh_db, migrate=False,
                          usage_journal_dir=str(jdir))
    second.start()
    wait_for_rows(pg, fresh_db, 9)
    wait_until(lambda: not torn.exists(), 5, "the torn segment to be released")
    time.sleep(0.3)
    assert usage_count(pg, fresh_db) == (9, 9)
    assert {int(c[2:]) for c in stored_conversations(pg, fresh_db)} == set(range(9))
    log = second.log_text(lines=None)
    assert re.search(rf'usage journal file "{re.escape(str(torn))}": truncated frame '
                     rf'\(40 of \d+ bytes\) at offset {last}; the 4 records before it are kept', log), log
    assert re.search(rf'usage journal file "{re.escape(str(damaged))}": bad frame magic at offset '
                     rf'{damaged_at}; the 5 records before it are kept, the 64 bytes from there on '
                     r'are skipped', log), log
    assert not damaged.exists() and Path(str(damaged) + ".corrupt").exists()
    assert "is kept as" in log


def test_sigterm_stores_everything_and_leaves_the_journal_empty(sluice, pg, fresh_db):
    """With a flush interval far longer than the test, nothing is shipped while the
    statements run; SIGTERM ships it all before exiting and leaves no record behind."""
    pooler = usage_pooler(sluice, pg, fresh_db, usage_flush_interval="60", usage_batch_size=20)
    pooler.start()
    n = 50
    with connect(pooler) as conn:
        for k in range(n):
            insert(conn, k, extended=k % 2 == 1)
    time.sleep(0.3)     # the side channel is up (it connected at start)
    assert usage_count(pg, fresh_db) == (0, 0)
    assert sum(journal_files(pooler).values()) > 0
    t0 = time.monotonic()
    assert pooler.stop() == []
    assert time.monotonic() - t0 < 5
    assert usage_count(pg, fresh_db) == (n, n)
    assert sum(journal_files(pooler).values()) == 0, journal_files(pooler)

    # A pgsluice started on that journal has nothing to replay.
    again = usage_pooler(sluice, pg, fresh_db, migrate=False,
                         usage_journal_dir=pooler.settings()["usage_journal_dir"])
    again.start()
    time.sleep(0.5)
    assert usage_count(pg, fresh_db) == (n, n)
    assert "from a previous run" not in again.log_text(lines=None)


JOURNAL_FILE_LIMIT = 16384


def journal_write_fails(sluice, pg, db, extended=False):
    """Tagged statements on a pgsluice whose files may not grow past 16 kB (RLIMIT_FSIZE, with
    SIGXFSZ ignored, so write(2) fails with EFBIG, as on a full disk) and whose journal
    keeps one segment: after about a hundred records the journal cannot be written.
    Simple protocol, or extended (a parameter): the error then replaces the Execute's
    CommandComplete. Returns (acknowledged ks, {k: SQLSTATE} of the refused, set of stored
    ks, log)."""
    pooler = usage_pooler(sluice, pg, db, usage_flush_interval="60", usage_batch_size=1000000)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (JOURNAL_FILE_LIMIT, JOURNAL_FILE_LIMIT))
    pooler.child_setup = limit_file_size
    pooler.start()
    acked, refused = set(), {}
    with connect(pooler) as conn:
        for k in range(150):
            try:
                if extended:
                    conn.execute(f"SELECT %s::int {tags(k)}", (k,))
                else:
                    conn.execute(f"SELECT 1 {tags(k)}")
                acked.add(k)
            except psycopg.Error as e:
                refused[k] = (e.sqlstate, e.diag.message_primary, e.diag.message_hint)
    assert pooler.stop() == []          # SIGTERM ships what the journal holds
    stored = {int(c[2:]) for c in stored_conversations(pg, db)}
    assert usage_count(pg, db)[0] == len(stored)
    return acked, refused, stored, pooler.log_text(lines=None)


@pytest.mark.parametrize("extended", [False, True], ids=["simple", "extended"])
def test_statements_are_refused_while_the_journal_cannot_be_written(sluice, pg, fresh_db, extended):
    acked, refused, stored, log = journal_write_fails(sluice, pg, fresh_db, extended)
    assert 50 < len(acked) < 150 and refused, (len(acked), len(refused))
    assert set(refused.values()) == {(
        "53100", "could not record LLM usage: the usage journal cannot be written",
        "Check the free space and permissions of usage_journal_dir.")}
    assert "File too large" in log
    assert stored <= acked                   # nothing refused was recorded


@pytest.mark.parametrize("extended", [False, True], ids=["simple", "extended"])
def test_no_statement_is_acknowledged_without_its_record_when_the_journal_fails(
        sluice, pg, fresh_db, extended):
    acked, refused, stored, log = journal_write_fails(sluice, pg, fresh_db, extended)
    assert acked <= stored, f"acknowledged, not stored: {sorted(acked - stored)}"


def test_a_segment_whose_records_postgres_already_holds_is_stored_once(sluice, pg, fresh_db):
    """A journal segment of 5 records, 2 of which PostgreSQL already holds (a commit whose
    outcome pgsluice did not see, then a restart). The plain INSERT hits a unique violation;
    the segment goes again with ON CONFLICT DO NOTHING: the other 3 are stored, nothing twice,
    nothing moved to usage_rejects, and the daily roll-up counts each record once."""
    jdir, segs = unshipped_segments(sluice, pg, fresh_db, 5)
    data = segs[0].read_bytes()
    offsets = frame_offsets(data)
    assert len(offsets) == 5
    for off in offsets[:2]:      # payload: id (16 bytes), created_at_us (i64 LE): journal.c
        uid = data[off + 16:off + 32].hex()
        us = int.from_bytes(data[off + 32:off + 40], "little", signed=True)
        pg.query("INSERT INTO sluice.llm_usage (id, created_at, subject, db_user, database, model,"
                 " input_tokens, output_tokens, instance) VALUES (%s::uuid, 'epoch'::timestamptz"
                 " + %s * interval '1 microsecond', 'alice', 'app', 'usage', 'gpt-4o', 1, 1, 'x')",
                 (uid, us), dbname=fresh_db)
    pg.query("SELECT sluice.rebuild_usage_daily('-infinity', 'infinity')", dbname=fresh_db)

    second = usage_pooler(sluice, pg, fresh_db, migrate=False, usage_journal_dir=str(jdir))
    second.start()
    wait_for_rows(pg, fresh_db, 5)
    wait_until(lambda: sum(journal_files(second).values()) == 0, 5, "the journal to drain")
    time.sleep(0.3)
    assert usage_count(pg, fresh_db) == (5, 5)
    assert stored_conversations(pg, fresh_db) == {None, "c-2", "c-3", "c-4"}
    assert pg.query("SELECT count(*) FROM sluice.usage_rejects", dbname=fresh_db)[0][0] == 0
    assert re.search(r"usage: some records of journal segment \d+ are already stored; storing "
                     r"the others", second.log_text(lines=None))
    assert_daily_rollup_matches(pg, fresh_db)


def test_sigterm_while_postgres_is_down_keeps_the_records_for_the_next_start(sluice, pg, fresh_db):
    pooler = usage_pooler(sluice, pg, fresh_db, usage_flush_interval="60")
    pooler.start()
    with connect(pooler) as conn:
        for k in range(5):
            insert(conn, k, extended=False)
    try:
        pg.stop()
        assert pooler.stop() == []
    finally:
        pg.start()
    assert sum(journal_files(pooler).values()) > 0
    again = usage_pooler(sluice, pg, fresh_db, migrate=False,
                         usage_journal_dir=pooler.settings()["usage_journal_dir"])
    again.start()
    wait_for_rows(pg, fresh_db, 5)
    time.sleep(0.3)
    assert usage_count(pg, fresh_db) == (5, 5)


# -- analytics, partitions ------------------------------------------------------------------
def analytics_data(sluice, pg, db):
    """Usage through pgsluice plus rows of earlier days (and cache hits) inserted directly."""
    pooler = usage_pooler(sluice, pg, db).start()
    with connect(pooler) as conn:
        for k in range(30):
            insert(conn, k, extended=k % 2 == 1, subject=["alice", "bob", "carol"][k % 3])
    wait_for_rows(pg, db, 30)
    pg.query("INSERT INTO sluice.llm_usage (id, created_at, subject, db_user, database, model,"
             " input_tokens, output_tokens, cost_cents, llm_latency_ms, cached, instance)"
             " SELECT gen_random_uuid(), now() - (g % 3) * interval '1 day', 'alice', 'app', 'usage',"
             " 'gpt-4o', 10 * g, g, 0.01 * g, 100 + g, g % 2 = 0, 'earlier'"
             " FROM generate_series(1, 20) g", dbname=db)
    pg.query("INSERT INTO sluice.limits (subject, cost_cents_per_month) VALUES ('alice', 500)",
             dbname=db)
    return pooler


def test_usage_daily_matches_the_raw_rows(sluice, pg, fresh_db):
    """The writer keeps sluice.usage_daily current by itself (no REFRESH, no pg_cron); rows
    inserted into sluice.llm_usage by hand are rolled up by sluice.rebuild_usage_daily()."""
    pooler = usage_pooler(sluice, pg, fresh_db).start()
    with connect(pooler) as conn:
        for k in range(30):
            insert(conn, k, extended=k % 2 == 1, subject=["alice", "bob", "carol"][k % 3])
    wait_for_rows(pg, fresh_db, 30)
    wait_until(lambda: pg.query("SELECT coalesce(sum(requests), 0) FROM sluice.usage_daily",
                                dbname=fresh_db)[0][0] == 30, 5, "the roll-up of 30 rows")
    assert_daily_rollup_matches(pg, fresh_db)
    pg.query("INSERT INTO sluice.llm_usage (id, created_at, subject, db_user, database, model,"
             " input_tokens, output_tokens, cost_cents, llm_latency_ms, cached, instance)"
             " SELECT gen_random_uuid(), now() - (g % 3) * interval '1 day', 'alice', 'app', 'usage',"
             " 'gpt-4o', 10 * g, g, 0.01 * g, 100 + g, g % 2 = 0, 'earlier'"
             " FROM generate_series(1, 20) g", dbname=fresh_db)
    pg.query("SELECT sluice.rebuild_usage_daily((now() AT TIME ZONE 'UTC')::date - 3,"
             " (now() AT TIME ZONE 'UTC')::date)", dbname=fresh_db)
    cols = ("requests, input_tokens, output_tokens, tokens, cost_cents, cache_hits,"
            " round(avg_llm_latency_ms, 6)")
    view = pg.query(f"SELECT day, subject, model, {cols} FROM sluice.usage_daily ORDER BY 1, 2, 3",
                    dbname=fresh_db)
    raw = pg.query("SELECT (created_at AT TIME ZONE 'UTC')::date, subject, coalesce(model, ''),"
                   " count(*), sum(input_tokens), sum(output_tokens),"
                   " sum(input_tokens + output_tokens), coalesce(sum(cost_cents), 0),"
                   " count(*) FILTER (WHERE cached), round(avg(llm_latency_ms), 6)"
                   " FROM sluice.llm_usage GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", dbname=fresh_db)
    assert view == raw
    assert len({r[0] for r in view}) >= 2           # several days
    totals = pg.query("SELECT sum(requests), sum(tokens), sum(cost_cents), sum(cache_hits)"
                      " FROM sluice.usage_daily", dbname=fresh_db)[0]
    assert totals == pg.query("SELECT count(*), sum(input_tokens + output_tokens),"
                              " coalesce(sum(cost_cents), 0), count(*) FILTER (WHERE cached)"
                              " FROM sluice.llm_usage", dbname=fresh_db)[0]


def doc_queries():
    """The ```sql blocks of "### Questions to ask" in docs/ai-middleware.md and of
    "## First questions to ask" in docs/schema.md."""
    blocks = []
    for doc, heading in ((DOCS, "### Questions to ask"),
                         (harness.REPO / "docs" / "schema.md", "## First questions to ask")):
        text = doc.read_text()
        m = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^#{{1,3}} |\Z)", text, re.S | re.M)
        assert m, f'{doc.name} has no "{heading}" section'
        found = re.findall(r"```sql\n(.*?)```", m.group(1), re.S)
        assert len(found) >= 3, doc.name
        blocks += found
    return blocks


def test_the_documented_analytics_queries_run_as_written(sluice, pg, fresh_db):
    """Every query of the documentation's "Questions to ask" runs as the application's role
    and answers something; the monthly cost per subject agrees with the raw rows."""
    analytics_data(sluice, pg, fresh_db)
    pg.query("SELECT sluice.rebuild_usage_daily('-infinity', 'infinity')", dbname=fresh_db)
    results = []
    for sql in doc_queries():
        with pg.connect(dbname=fresh_db, user="app") as conn:
            cur = conn.execute(sql)
            results.append(([d.name for d in cur.description], cur.fetchall()))
        assert results[-1][1], f"no rows from:\n{sql}"
    expect = {(m, s): c for m, s, c in pg.query(
        "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-01')::date, subject,"
        " round(coalesce(sum(cost_cents), 0) / 100, 2) FROM sluice.llm_usage GROUP BY 1, 2", dbname=fresh_db)}
    monthly = [(names, rows) for names, rows in results
               if {"month", "subject", "cost_usd"} <= set(names)]
    assert len(monthly) == 2        # one in each document
    for names, rows in monthly:
        got = {(r[names.index("month")], r[names.index("subject")]): r[names.index("cost_usd")]
               for r in rows}
        assert got == expect


def test_partitions_are_made_ahead_and_old_months_dropped(sluice, pg, fresh_db):
    """ensure_usage_partitions() runs when the side channel connects; with
    usage_retention_months old monthly partitions are dropped whole."""
    pooler = usage_pooler(sluice, pg, fresh_db, usage_retention_months=2)
    ahead = pg.query("SELECT 'llm_usage_y' || to_char(m, 'YYYY') || 'm' || to_char(m, 'MM')"
                     " FROM (SELECT date_trunc('month', now() AT TIME ZONE 'UTC')"
                     " + interval '3 months' AS m) s", dbname=fresh_db)[0][0]
    pg.query(f"DROP TABLE sluice.{ahead}", dbname=fresh_db)
    pg.query("CREATE TABLE sluice.llm_usage_y2020m01 PARTITION OF sluice.llm_usage"
             " FOR VALUES FROM ('2020-01-01 00:00:00+00') TO ('2020-02-01 00:00:00+00')",
             dbname=fresh_db)
    pg.query("INSERT INTO sluice.llm_usage (id, created_at, subject, db_user, database, instance)"
             " VALUES (gen_random_uuid(), '2020-01-15', 'old', 'app', 'usage', 'earlier')",
             dbname=fresh_db)
    pooler.start()

    def parts():
        return {r[0] for r in pg.query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'sluice.llm_usage'::regclass", dbname=fresh_db)}
    wait_until(lambda: ahead in parts() and "llm_usage_y2020m01" not in parts(), 5,
               "partitions to be made and dropped")
    assert pg.query("SELECT count(*) FROM sluice.llm_usage WHERE subject = 'old'",
                    dbname=fresh_db) == [(0,)]
