# SPDX-License-Identifier: PostgreSQL
"""`pgsluice --migrate CONFIG`: the sluice schema (docs/schema.md).

Every test migrates a database of its own, created empty for it, through the
[databases] entry named by ai_database. The migrations come from the
checkout's sql/ directory (PGSLUICE_SQLDIR), never from an installed copy.
"""

import os
import re
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

import harness

SQL_DIR = harness.REPO / "sql"
MIGRATE_TIMEOUT_S = 60

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="--migrate is pgsluice's own")


def migration_files():
    """{version: name} of the NNNN_name.sql files in the checkout."""
    files = {}
    for path in SQL_DIR.glob("*.sql"):
        m = re.fullmatch(r"(\d+)_[A-Za-z0-9_-]+", path.stem)
        assert m, f"{path.name} is not named NNNN_name.sql"
        files[int(m.group(1))] = path.stem
    assert files, f"no migrations in {SQL_DIR}"
    return files


def run_migrate(pooler):
    """Run `pgsluice --migrate CONFIG`; stdout and stderr together in .stdout."""
    env = dict(os.environ, PGSLUICE_SQLDIR=str(SQL_DIR))
    return subprocess.run([str(pooler.binary), "--migrate", str(pooler.ini_path)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=MIGRATE_TIMEOUT_S, cwd=pooler.workdir, env=env,
                          stdin=subprocess.DEVNULL)


def assert_succeeded(out):
    assert out.returncode == 0, out.stdout


def assert_failed(out):
    assert out.returncode != 0, out.stdout
    assert out.returncode > 0, f"pgsluice died of a signal: {out.returncode}\n{out.stdout}"


@pytest.fixture
def fresh_db(pg):
    """An empty database owned by app, dropped after the test."""
    if not pg.running:
        pg.start()
    name = f"mig_{uuid.uuid4().hex[:12]}"
    pg.query(f"CREATE DATABASE {name} OWNER app", dbname="postgres")
    yield name
    pg.query(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", dbname="postgres")


@pytest.fixture
def migrator(sluice, pg, fresh_db):
    """A config (not started) whose ai_database "usage" is fresh_db, as user app over TCP.

    app's password comes from auth_file, as for a server connection.
    """
    return sluice(start=False, ai_database="usage", databases={
        "usage": f"host={pg.host} port={pg.port} dbname={fresh_db} user=app"})


@pytest.fixture
def migrated(migrator, fresh_db):
    """fresh_db after one successful migration."""
    assert_succeeded(run_migrate(migrator))
    return fresh_db


def sluice_tables(pg, dbname):
    rows = pg.query("SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = 'sluice'", dbname=dbname)
    return {r[0] for r in rows}


def usage_partition(pg, dbname, created_at_sql):
    """The partition of sluice.llm_usage a row created at created_at_sql lands in."""
    row_id = uuid.uuid4()
    rows = pg.query(
        "INSERT INTO sluice.llm_usage (id, created_at, subject, db_user, database, model,"
        " input_tokens, output_tokens, instance)"
        f" VALUES (%s, {created_at_sql}, 'alice', 'app', 'app', 'gpt-4o', 10, 20, 'test')"
        " RETURNING tableoid::regclass::text", (row_id,), dbname=dbname)
    return row_id, rows[0][0]


def month_partition_name(pg, dbname, months_ahead):
    """llm_usage_yYYYYmMM for the UTC month months_ahead after the current one."""
    return pg.query("SELECT to_char(date_trunc('month', now() AT TIME ZONE 'UTC')"
                    " + make_interval(months => %s), '\"llm_usage_y\"YYYY\"m\"MM')",
                    (months_ahead,), dbname=dbname)[0][0]


# -- a fresh database ------------------------------------------------------------------
def test_migrate_creates_every_sluice_table_in_a_fresh_database(migrator, pg, fresh_db):
    out = run_migrate(migrator)
    assert_succeeded(out)
    assert {"schema_migrations", "limits", "model_prices", "llm_usage",
            "rate_counters"} <= sluice_tables(pg, fresh_db)
    for name in migration_files().values():
        assert re.search(rf"migration {name}: applied", out.stdout), out.stdout


def test_migrate_records_every_migration_version(migrator, pg, fresh_db):
    assert_succeeded(run_migrate(migrator))
    rows = pg.query("SELECT version, name FROM sluice.schema_migrations ORDER BY version",
                    dbname=fresh_db)
    assert dict(rows) == migration_files()


def test_usage_table_has_the_documented_columns(migrated, pg):
    rows = pg.query("SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                    " WHERE table_schema = 'sluice' AND table_name = 'llm_usage'"
                    " ORDER BY ordinal_position", dbname=migrated)
    assert rows == [
        ("id", "uuid", "NO"),
        ("created_at", "timestamp with time zone", "NO"),
        ("subject", "text", "NO"),
        ("db_user", "text", "NO"),
        ("database", "text", "NO"),
        ("model", "text", "YES"),
        ("input_tokens", "bigint", "NO"),
        ("output_tokens", "bigint", "NO"),
        ("cost_cents", "numeric", "YES"),
        ("llm_latency_ms", "bigint", "YES"),
        ("statement_ms", "double precision", "YES"),
        ("cached", "boolean", "NO"),
        ("conversation_id", "text", "YES"),
        ("trace_id", "text", "YES"),
        ("instance", "text", "NO"),
    ]


def test_migrate_twice_is_a_no_op(migrator, pg, fresh_db):
    assert_succeeded(run_migrate(migrator))
    before = pg.query("SELECT version, name, applied_at FROM sluice.schema_migrations"
                      " ORDER BY version", dbname=fresh_db)
    out = run_migrate(migrator)
    assert_succeeded(out)
    assert "applied (" not in out.stdout, out.stdout
    for name in migration_files().values():
        assert f"migration {name}: already applied, skipped" in out.stdout, out.stdout
    after = pg.query("SELECT version, name, applied_at FROM sluice.schema_migrations"
                     " ORDER BY version", dbname=fresh_db)
    assert after == before


def test_concurrent_migrations_apply_each_version_once(migrator, pg, fresh_db):
    with ThreadPoolExecutor(max_workers=4) as pool:
        outs = list(pool.map(lambda _: run_migrate(migrator), range(4)))
    for out in outs:
        assert_succeeded(out)
    text = "".join(out.stdout for out in outs)
    for name in migration_files().values():
        assert text.count(f"migration {name}: applied") == 1, text
    assert len(pg.query("SELECT 1 FROM sluice.schema_migrations", dbname=fresh_db)) == \
        len(migration_files())


# -- partitions --------------------------------------------------------------------------
def test_usage_partitions_exist_for_this_month_and_next(migrated, pg):
    partitions = {r[0] for r in pg.query(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'sluice.llm_usage'::regclass", dbname=migrated)}
    assert month_partition_name(pg, migrated, 0) in partitions, partitions
    assert month_partition_name(pg, migrated, 1) in partitions, partitions
    assert "llm_usage_default" in partitions, partitions


def test_usage_row_for_this_month_lands_in_this_months_partition(migrated, pg):
    _, partition = usage_partition(pg, migrated, "now()")
    assert partition == "sluice." + month_partition_name(pg, migrated, 0)


def test_usage_row_five_years_ahead_lands_in_the_default_partition(migrated, pg):
    _, partition = usage_partition(pg, migrated, "now() + interval '5 years'")
    assert partition == "sluice.llm_usage_default"


def test_ensure_usage_partitions_moves_early_rows_out_of_the_default_partition(migrated, pg):
    row_id, partition = usage_partition(pg, migrated, "now() + interval '5 months'")
    assert partition == "sluice.llm_usage_default"
    assert pg.query("SELECT sluice.ensure_usage_partitions(6)", dbname=migrated)[0][0] >= 1
    rows = pg.query("SELECT tableoid::regclass::text FROM sluice.llm_usage WHERE id = %s",
                    (row_id,), dbname=migrated)
    assert rows == [("sluice." + month_partition_name(pg, migrated, 5),)]


def test_ensure_usage_partitions_twice_creates_nothing_the_second_time(migrated, pg):
    pg.query("SELECT sluice.ensure_usage_partitions(4)", dbname=migrated)
    assert pg.query("SELECT sluice.ensure_usage_partitions(4)", dbname=migrated) == [(0,)]


def test_ensure_usage_partitions_refuses_a_negative_count(migrated, pg):
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        pg.query("SELECT sluice.ensure_usage_partitions(-1)", dbname=migrated)


# -- what the tables hold -----------------------------------------------------------------
def test_replayed_usage_record_is_stored_once(migrated, pg):
    row_id = uuid.uuid4()
    for _ in range(2):
        pg.query("INSERT INTO sluice.llm_usage (id, created_at, subject, db_user, database,"
                 " instance) VALUES (%s, '2030-01-02 03:04:05+00', 'alice', 'app', 'app', 'i1')"
                 " ON CONFLICT (id, created_at) DO NOTHING", (row_id,), dbname=migrated)
    assert pg.query("SELECT count(*) FROM sluice.llm_usage WHERE id = %s", (row_id,),
                    dbname=migrated) == [(1,)]


def test_limits_default_to_every_model_and_refuse_negative_values(migrated, pg):
    pg.query("INSERT INTO sluice.limits (subject, requests_per_minute) VALUES ('alice', 60)",
             dbname=migrated)
    assert pg.query("SELECT model, tokens_per_day FROM sluice.limits WHERE subject = 'alice'",
                    dbname=migrated) == [("*", None)]
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.query("INSERT INTO sluice.limits (subject, model, tokens_per_day)"
                 " VALUES ('bob', 'gpt-4o', -1)", dbname=migrated)


def test_updating_a_limit_sets_updated_at(migrated, pg):
    pg.query("INSERT INTO sluice.limits (subject, requests_per_minute, updated_at)"
             " VALUES ('alice', 60, '2000-01-01')", dbname=migrated)
    pg.query("UPDATE sluice.limits SET requests_per_minute = 30 WHERE subject = 'alice'",
             dbname=migrated)
    assert pg.query("SELECT updated_at > now() - interval '1 hour' FROM sluice.limits",
                    dbname=migrated) == [(True,)]


# -- connecting -------------------------------------------------------------------------------
def test_migrate_without_host_uses_the_unix_socket_in_unix_socket_dir(sluice, pg, fresh_db):
    pooler = sluice(start=False, ai_database="usage", unix_socket_dir=pg.socket_dir, databases={
        "usage": f"port={pg.port} dbname={fresh_db} user=app"})
    assert_succeeded(run_migrate(pooler))
    assert "llm_usage" in sluice_tables(pg, fresh_db)


def test_migrate_with_unset_ai_database_fails_saying_what_to_set(sluice):
    pooler = sluice(start=False)
    out = run_migrate(pooler)
    assert_failed(out)
    assert ("ai_database is not set: set it to the [databases] entry that holds the sluice "
            "schema") in out.stdout, out.stdout


def test_migrate_with_ai_database_not_in_databases_fails_naming_it(sluice):
    pooler = sluice(start=False, ai_database="nosuchentry")
    out = run_migrate(pooler)
    assert_failed(out)
    assert '"nosuchentry"' in out.stdout, out.stdout


def test_migrate_with_a_wrong_password_fails_naming_the_entry(sluice, pg, fresh_db):
    pooler = sluice(start=False, ai_database="usage", databases={
        "usage": f"host={pg.host} port={pg.port} dbname={fresh_db} user=app password=wrong"})
    out = run_migrate(pooler)
    assert_failed(out)
    assert 'could not connect to ai_database "usage"' in out.stdout, out.stdout
    assert "password authentication failed" in out.stdout, out.stdout
    assert "wrong" not in out.stdout, out.stdout   # the password is never echoed
    assert sluice_tables(pg, fresh_db) == set()
