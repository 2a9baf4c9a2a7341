# SPDX-License-Identifier: PostgreSQL
"""Real PostgreSQL clients work through the pooler unchanged (a drop-in for PgBouncer)."""

import os
import re
import subprocess

import psycopg


def test_psql_select_through_pooler_prints_1(pg, sluice):
    pooler = sluice()
    out = subprocess.run([str(pg.bindir / "psql"), "-X", pooler.dsn(), "-Atc", "select 1"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_query_returns_all_rows_in_order(sluice):
    with sluice().connect() as conn:
        rows = conn.execute("select g, 'row ' || g from generate_series(1, 1000) g").fetchall()
    assert len(rows) == 1000
    assert rows[0] == (1, "row 1") and rows[-1] == (1000, "row 1000")


def test_parameters_are_bound_by_the_server(sluice):
    with sluice().connect() as conn:
        row = conn.execute("select %s::int + %s::int, %s::text, %s::text is null",
                           (40, 2, "it's 'quoted'", None)).fetchone()
    assert row == (42, "it's 'quoted'", True)


def test_committed_transaction_is_visible_and_rolled_back_one_is_not(pg, sluice):
    pooler = sluice()
    pg.query("drop table if exists tx_probe")
    pg.query("create table tx_probe (v text)")
    pg.query("alter table tx_probe owner to app")
    try:
        with pooler.connect(autocommit=False) as conn:
            conn.execute("insert into tx_probe values ('committed')")
            conn.commit()
            conn.execute("insert into tx_probe values ('rolled back')")
            conn.rollback()
        with pooler.connect() as other:
            values = [r[0] for r in other.execute("select v from tx_probe").fetchall()]
        assert values == ["committed"]
    finally:
        pg.query("drop table if exists tx_probe")


def test_failed_statement_aborts_transaction_until_rollback(sluice):
    with sluice().connect(autocommit=False) as conn:
        try:
            conn.execute("select 1/0")
        except psycopg.errors.DivisionByZero as err:
            assert err.sqlstate == "22012"
        else:
            raise AssertionError("division by zero did not fail")
        try:
            conn.execute("select 1")
        except psycopg.errors.InFailedSqlTransaction as err:
            assert err.sqlstate == "25P02"
        else:
            raise AssertionError("statement in a failed transaction did not fail")
        conn.rollback()
        assert conn.execute("select 2").fetchone() == (2,)


def test_notice_from_server_reaches_client(sluice):
    notices = []
    with sluice().connect() as conn:
        conn.add_notice_handler(lambda diag: notices.append((diag.severity, diag.message_primary)))
        conn.execute("do $$ begin raise notice 'hello from plpgsql'; end $$")
    assert ("NOTICE", "hello from plpgsql") in notices


def test_server_parameters_reach_client(pg, sluice):
    with sluice().connect(client_encoding="LATIN1") as conn:
        version = conn.info.parameter_status("server_version")
        encoding = conn.info.parameter_status("client_encoding")
        shown = conn.execute("show client_encoding").fetchone()[0]
    direct = pg.query("show server_version")[0][0]
    assert version == direct
    assert encoding == "LATIN1"
    assert shown == "LATIN1"


def test_pgbench_select_only_runs_without_failures(pg, sluice):
    env = dict(os.environ, PGPASSWORD="app_pw", PGCONNECT_TIMEOUT="5")
    pgbench = str(pg.bindir / "pgbench")
    init = subprocess.run([pgbench, "-i", "-s", "1", "-q", "-h", pg.host, "-p", str(pg.port),
                           "-U", "app", "app"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert init.returncode == 0, init.stderr

    pooler = sluice(default_pool_size=4)
    run = subprocess.run([pgbench, "-n", "-S", "-T", "3", "-c", "4", "-j", "2",
                          "-h", pooler.host, "-p", str(pooler.port), "-U", "app", "app"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    processed = re.search(r"number of transactions actually processed: (\d+)", run.stdout)
    assert processed and int(processed.group(1)) > 0, run.stdout
    failed = re.search(r"number of failed transactions: (\d+)", run.stdout)
    if failed:
        assert int(failed.group(1)) == 0, run.stdout


def test_fallback_database_entry_serves_unlisted_database(pg, sluice):
    pooler = sluice(databases={"*": f"host={pg.host} port={pg.port}"})
    with pooler.connect(dbname="postgres") as conn:
        assert conn.execute("select current_database(), current_user").fetchone() == \
            ("postgres", "app")
