# SPDX-License-Identifier: PostgreSQL
"""Usage recording and budgets that one bad record, a SIGKILL or a fresh start cannot
undo (issue 17; docs/ai-middleware.md, docs/limits.md, docs/schema.md).

- A value that could never be stored (a token count whose cost overflows, a subject that
  is not UTF-8) is refused at the edge with 22023.
- A record PostgreSQL refuses anyway is moved to sluice.usage_rejects; the others are
  stored, and the move is counted in /metrics and SHOW USAGE.
- A budget used up before a SIGKILL is still used up after the restart, counted once.
- No attributed statement is served before limits, budgets and prices are loaded.
"""

import contextlib
import signal
import socket
import struct
import threading
import time
import zlib
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from harness import wait_until

import harness
import pgwire
from test_admin import console, scrape, show, value
from test_ai_usage import (LIMITED, connect, journal_files, tags, usage_count, usage_pooler,
                           wait_for_rows)
from test_migrate import assert_succeeded, fresh_db, run_migrate  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own")

INVALID = "22023"
BAD_UTF8 = b"\xff\xfe"


def rejects(pg, db):
    return pg.query("SELECT sqlstate, error, record FROM sluice.usage_rejects ORDER BY created_at",
                    dbname=db)


def shared_subjects(pg, db):
    return {r[0] for r in pg.query("SELECT DISTINCT subject FROM sluice.rate_counters", dbname=db)}


def startup_error(pooler, options):
    """The ErrorResponse fields pgsluice answers a StartupMessage carrying options (bytes) with."""
    body = struct.pack("!I", pgwire.PROTOCOL_V3)
    body += b"user\0app\0database\0usage\0options\0" + options + b"\0\0"
    with socket.create_connection((pooler.host, pooler.port), timeout=5) as sock:
        sess = pgwire.Session(sock, 5)
        sess.send(b"", body)
        msg_type, reply = sess.read()
    assert msg_type == "E", f"startup accepted (message {msg_type!r}), expected an ErrorResponse"
    return pgwire._parse_fields(reply)


# -- refused at the edge --------------------------------------------------------------------
def test_a_token_count_whose_cost_would_overflow_is_refused_and_later_records_are_stored(
        sluice, pg, fresh_db):
    """ai_tokens_in='999999999999999999' used to make a row whose cost_cents overflowed
    numeric(12,4): its batch failed on every flush, and no later record was stored. It is
    now 22023 naming the tag, the largest counts accepted (10^9 each way) at the highest
    price sluice.model_prices can hold are stored, and so are the 201 records after them."""
    pooler = usage_pooler(sluice, pg, fresh_db)
    pg.query("INSERT INTO sluice.model_prices (model, input_usd_per_mtok, output_usd_per_mtok)"
             " VALUES ('priciest', 999999.999999, 999999.999999)",
             dbname=fresh_db)
    pooler.start()
    with connect(pooler) as conn:
        with pytest.raises(psycopg.Error) as refused:
            conn.execute(f"SELECT 1 {tags(0, subject='olga', model='gpt-4o', tokens_in='999999999999999999')}")
        assert refused.value.sqlstate == INVALID
        assert refused.value.diag.message_primary == (
            '999999999999999999 is outside the valid range for tag "ai_tokens_in" (0 .. 1000000000)')
        conn.execute(f"SELECT 1 {tags(1, subject='olga', model='priciest', tokens_in=10**9, tokens_out=10**9)}")
        for k in range(2, 203):
            conn.execute(f"SELECT 1 {tags(k, subject='olga')}")
    wait_for_rows(pg, fresh_db, 202, timeout=20)
    assert usage_count(pg, fresh_db) == (202, 202)
    assert pg.query("SELECT cost_cents FROM sluice.llm_usage WHERE model = 'priciest'",
                    dbname=fresh_db) == [(Decimal("199999999999.8000"),)]


def test_a_subject_that_is_not_utf8_is_refused_by_set_and_by_startup_options(sluice, pg, fresh_db):
    """SET sluice.user to the bytes 0xff 0xfe, or -c sluice.user= with them, used to be
    accepted; every record of that subject then failed to store (invalid byte sequence for
    encoding "UTF8"), holding up every record behind it, and limit sharing failed too. Now
    both are 22023; the session keeps its own attribution, and records and shared counts
    of every subject go on being stored."""
    pooler = usage_pooler(sluice, pg, fresh_db)
    pooler.start()
    err = startup_error(pooler, b"-c sluice.user=" + BAD_UTF8)
    assert err["sqlstate"] == INVALID, err
    assert err["message"] == 'invalid value for parameter "sluice.user": not valid UTF-8'

    with pgwire.login(pooler.host, pooler.port, "app", "usage", password=harness.APP_PASSWORD) as sess:
        with pytest.raises(pgwire.ServerError) as refused:
            sess.query(b"SET sluice.user = '" + BAD_UTF8 + b"'")
        assert refused.value.sqlstate == INVALID
        assert refused.value.message == 'invalid value for parameter "sluice.user": not valid UTF-8'
        assert sess.query("SHOW sluice.user") == [[""]]
        sess.query("SELECT 1 /*ai_tokens_in='5',ai_conversation='raw'*/")    # charged to the role
    with connect(pooler) as conn:
        for k in range(201):
            conn.execute(f"SELECT 1 {tags(k, subject='olga')}")
    wait_for_rows(pg, fresh_db, 202, timeout=20)
    assert usage_count(pg, fresh_db) == (202, 202)
    assert pg.query("SELECT subject FROM sluice.llm_usage WHERE conversation_id = 'raw'",
                    dbname=fresh_db) == [("app",)]
    wait_until(lambda: {"olga", "app"} <= shared_subjects(pg, fresh_db), 10, "counts shared")


# -- refused by PostgreSQL anyway: quarantined ----------------------------------------------
def test_a_record_postgres_refuses_is_quarantined_and_every_other_record_is_stored(
        sluice, pg, fresh_db):
    """A CHECK constraint added to sluice.llm_usage refuses one record of a batch of 201.
    The writer splits the batch until that record stands alone, stores the 200 others,
    moves it whole to sluice.usage_rejects with PostgreSQL's error, logs it once, counts it
    in /metrics and SHOW USAGE, and goes on storing what comes after."""
    port = harness.free_port()
    pooler = usage_pooler(sluice, pg, fresh_db, usage_flush_interval="1", admin_users="app",
                          metrics_listen_addr="127.0.0.1", metrics_listen_port=port)
    pg.query("ALTER TABLE sluice.llm_usage ADD CONSTRAINT no_poison CHECK (subject <> 'poison')",
             dbname=fresh_db)
    pooler.start()
    with connect(pooler) as conn:
        for k in range(201):
            conn.execute(f"SELECT 1 {tags(k, subject='poison' if k == 77 else 'alice')}")
    wait_for_rows(pg, fresh_db, 200, timeout=20)
    wait_until(lambda: len(rejects(pg, fresh_db)) == 1, 10, "the refused record quarantined")
    [(sqlstate, error, record)] = rejects(pg, fresh_db)
    assert sqlstate == "23514"
    assert "no_poison" in error
    assert (record["subject"], record["conversation_id"], record["input_tokens"],
            record["model"]) == ("poison", "c-77", 177, "local-llm")
    assert usage_count(pg, fresh_db) == (200, 200)
    assert usage_count(pg, fresh_db, "subject = 'poison'") == (0, 0)

    assert value(scrape(port), "pgsluice_ai_usage_rejected_total") == 1
    with console(pooler) as admin:
        by_subject = {row["subject"]: row["rejected"] for row in show(admin, "USAGE")}
    assert by_subject == {"poison": 1, "alice": 0}
    log = pooler.log_text(lines=1000).split("--- stderr.log ---")[0]
    assert log.count("moved to sluice.usage_rejects") == 1, log

    with connect(pooler) as conn:
        conn.execute(f"SELECT 1 {tags(500, subject='alice')}")
    wait_for_rows(pg, fresh_db, 201, timeout=10)


def test_a_journal_record_that_is_not_utf8_is_quarantined_after_a_restart(sluice, pg, fresh_db):
    """A record whose subject bytes are not UTF-8 made it into the journal (here: written
    there by hand, with a valid checksum, while pgsluice was down). The next pgsluice
    stores the other records, moves that one to sluice.usage_rejects with its bytes shown
    as \\xNN, and is not held up by it."""
    first = usage_pooler(sluice, pg, fresh_db, usage_flush_interval="60")
    first.start()
    with connect(first) as conn:
        for k in range(30):
            conn.execute(f"SELECT 1 {tags(k, subject='zzbadzz' if k == 12 else 'alice')}")
    assert first.stop(signal.SIGKILL) == []
    journal = Path(first.settings()["usage_journal_dir"])
    edited = 0
    for path in journal.glob("usage-*.journal"):
        data = bytearray(path.read_bytes())
        at = data.find(b"zzbadzz")
        if at < 0:
            continue
        data[at:at + 2] = BAD_UTF8
        frame = data.rfind(b"SLUJ", 0, at)
        length = int.from_bytes(data[frame + 8:frame + 12], "little")
        crc = zlib.crc32(bytes(data[frame + 4:frame + 12]) + bytes(data[frame + 16:frame + 16 + length]))
        data[frame + 12:frame + 16] = crc.to_bytes(4, "little")
        path.write_bytes(bytes(data))
        edited += 1
    assert edited == 1

    second = usage_pooler(sluice, pg, fresh_db, migrate=False, usage_journal_dir=str(journal))
    second.start()
    wait_for_rows(pg, fresh_db, 29, timeout=20)
    wait_until(lambda: len(rejects(pg, fresh_db)) == 1, 10, "the record quarantined")
    [(sqlstate, error, record)] = rejects(pg, fresh_db)
    assert sqlstate == "22021"
    assert 'invalid byte sequence for encoding "UTF8"' in error
    assert record["subject"] == "\\xff\\xfebadzz" and record["conversation_id"] == "c-12"
    assert usage_count(pg, fresh_db) == (29, 29)
    wait_until(lambda: sum(journal_files(second).values()) == 0, 10, "the journal emptied")


# -- budgets across a SIGKILL -------------------------------------------------------------
def cost_refusal(conn, k, subject):
    with pytest.raises(psycopg.Error) as refused:
        conn.execute(f"SELECT 1 {tags(k, subject=subject, model='gpt-4o', tokens_in=8000, tokens_out=0)}")
    assert refused.value.sqlstate == LIMITED, refused.value
    assert "cost_cents_per_month" in refused.value.diag.message_primary
    return refused.value.diag.message_detail


def test_a_cost_budget_used_up_before_a_sigkill_is_still_used_up_after_the_restart(
        sluice, pg, fresh_db):
    """cost_cents_per_month=1; one gpt-4o call of 8000 tokens costs 2 cents and is still in
    the journal when pgsluice is SIGKILLed. The next pgsluice charges it at its real cost
    before serving anyone (it used to charge 0 and admit the subject again), and once the
    record is stored and the budgets seeded from sluice.llm_usage it is counted once: 2
    cents, not 4."""
    first = usage_pooler(sluice, pg, fresh_db, usage_flush_interval="60")
    first.limits = {"cora": "cost_cents_per_month=1"}
    first.start()
    with connect(first) as conn:
        conn.execute(f"SELECT 1 {tags(1, subject='cora', model='gpt-4o', tokens_in=8000, tokens_out=0)}")
        assert cost_refusal(conn, 2, "cora") == "2 cents spent this month (UTC); the limit is 1."
    assert first.stop(signal.SIGKILL) == []
    assert usage_count(pg, fresh_db) == (0, 0)

    second = usage_pooler(sluice, pg, fresh_db, migrate=False,
                          usage_journal_dir=first.settings()["usage_journal_dir"])
    second.limits = {"cora": "cost_cents_per_month=1"}
    second.start()
    with connect(second) as conn:
        for k in range(3, 13):
            assert cost_refusal(conn, k, "cora") == "2 cents spent this month (UTC); the limit is 1."
        wait_for_rows(pg, fresh_db, 1)
        time.sleep(0.5)                         # a limits refresh and sync later
        assert cost_refusal(conn, 13, "cora") == "2 cents spent this month (UTC); the limit is 1."
    assert usage_count(pg, fresh_db) == (1, 1)
    assert second.stop() == []

    third = usage_pooler(sluice, pg, fresh_db, migrate=False,
                         usage_journal_dir=first.settings()["usage_journal_dir"])
    third.limits = {"cora": "cost_cents_per_month=1"}
    third.start()                               # seeded from the stored row alone
    with connect(third) as conn:
        assert cost_refusal(conn, 14, "cora") == "2 cents spent this month (UTC); the limit is 1."


# -- nothing attributed before limits, budgets and prices are loaded -------------------------
@pytest.mark.parametrize("run", range(10))
def test_cost_budget_holds_from_start(sluice, pg, fresh_db, run):
    """The first call after start is charged its real cost (prices are read before anyone
    is served), so the second is refused; ten fresh starts, each with its statements sent
    as soon as the port accepts. (A short name: each run gets a workdir of its own.)"""
    pooler = usage_pooler(sluice, pg, fresh_db, usage_flush_interval="5")
    pooler.limits = {"cora": "cost_cents_per_month=1"}
    pooler.start()
    with connect(pooler) as conn:
        conn.execute(f"SELECT 1 {tags(1, subject='cora', model='gpt-4o', tokens_in=8000, tokens_out=0)}")
        assert cost_refusal(conn, 2, "cora") == "2 cents spent this month (UTC); the limit is 1."
    assert pooler.stop() == []                  # stores the record while fresh_db is still there
    assert usage_count(pg, fresh_db) == (1, 1)


@contextlib.contextmanager
def slow_to_read(pg, db, table, seconds=1.5):
    """table locked (ACCESS EXCLUSIVE) for the first seconds of what follows: pgsluice's
    reads of it at start wait that long."""
    locker = psycopg.connect(pg.dsn(dbname=db))
    locker.execute(f"LOCK TABLE {table}")
    release = threading.Timer(seconds, locker.rollback)
    release.start()
    try:
        yield
    finally:
        release.join()
        locker.close()


def test_prices_slow_to_read_at_start_do_not_let_a_call_through_at_cost_0(sluice, pg, fresh_db):
    """sluice.model_prices answers only 1.5 s after pgsluice starts. A call made in that
    time used to be charged 0 cents, so a subject over its cost budget went on; pgsluice
    now reads the prices before it serves anyone."""
    pooler = usage_pooler(sluice, pg, fresh_db, usage_flush_interval="5")
    pooler.limits = {"cora": "cost_cents_per_month=1"}
    with slow_to_read(pg, fresh_db, "sluice.model_prices"):
        pooler.start()
        with connect(pooler) as conn:
            conn.execute(f"SELECT 1 {tags(1, subject='cora', model='gpt-4o', tokens_in=8000, tokens_out=0)}")
            assert cost_refusal(conn, 2, "cora") == "2 cents spent this month (UTC); the limit is 1."


def test_a_budget_stored_before_start_refuses_the_first_statement(sluice, pg, fresh_db):
    """Usage already in sluice.llm_usage is seeded before anyone is served, even when the
    table answers only 1.5 s after the start: the very first statement of a subject over
    its daily token budget is refused (it used to be admitted until the seed came)."""
    pooler = usage_pooler(sluice, pg, fresh_db)
    pg.query("INSERT INTO sluice.llm_usage (id, created_at, subject, db_user, database, model,"
             " input_tokens, output_tokens, instance) VALUES (gen_random_uuid(), now(), 'dora',"
             " 'app', 'usage', 'gpt-4o', 1100, 0, 'earlier')", dbname=fresh_db)
    pooler.limits = {"dora": "tokens_per_day=1000"}
    with slow_to_read(pg, fresh_db, "sluice.llm_usage"), connect(pooler.start()) as conn:
        with pytest.raises(psycopg.Error) as refused:
            conn.execute(f"SELECT 1 {tags(1, subject='dora', tokens_in=1, tokens_out=0)}")
    assert refused.value.sqlstate == LIMITED
    assert refused.value.diag.message_detail == "1100 tokens used today (UTC); the limit is 1000."


def test_attributed_statements_wait_for_a_schema_migrated_after_start(sluice, pg, fresh_db):
    """pgsluice started against an ai_database whose sluice schema is not there yet: it
    cannot read limits, budgets or prices, so attributed statements are refused (53400,
    saying why) while untagged ones run; once the schema is migrated, attributed statements
    are admitted and their limits apply, without a restart."""
    pooler = usage_pooler(sluice, pg, fresh_db, migrate=False)
    pooler.limits = {"erin": "requests_per_minute=3"}
    pooler.start()
    with connect(pooler) as conn:
        assert conn.execute("SELECT 42").fetchone() == (42,)
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("SELECT 1 /*ai_user='erin'*/")
        assert refused.value.sqlstate == LIMITED
        assert refused.value.diag.message_primary == 'limits and budgets for "erin" are not loaded yet'
        assert_succeeded(run_migrate(pooler))

        def admitted():
            try:
                conn.execute("SELECT 1 /*ai_user='erin'*/")
                return True
            except psycopg.Error as e:
                assert e.sqlstate == LIMITED
                return False
        wait_until(admitted, 10, "attributed statements admitted")
        conn.execute("SELECT 1 /*ai_user='erin'*/")
        conn.execute("SELECT 1 /*ai_user='erin'*/")
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("SELECT 1 /*ai_user='erin'*/")
        assert "requests_per_minute" in refused.value.diag.message_primary
