# SPDX-License-Identifier: PostgreSQL
"""Replication connections through pgsluice (issue 12 item 5, docs/pooling.md "Replication").

A client whose StartupMessage carries `replication=database` (logical) or
`replication=true` (physical) gets a server connection of its own, opened
with that parameter (PgBouncer 1.23's behaviour): never taken from the pool,
never given back to it, closed with the client. pg_basebackup and logical
replication clients work through the pooler; the COPY-both stream is relayed
as it comes.
"""

import os
import subprocess
import threading

import psycopg
import pytest

import harness

REPL_USER, REPL_PW = "repl_user", "repl_pw"


@pytest.fixture(scope="module")
def repl_role(pg):
    """A role with REPLICATION (the test PostgreSQL's app role has none)."""
    if not pg.query("select 1 from pg_roles where rolname = %s", (REPL_USER,)):
        pg.query(f"CREATE ROLE {REPL_USER} LOGIN REPLICATION PASSWORD '{REPL_PW}'")
        pg.query(f"GRANT ALL ON DATABASE app TO {REPL_USER}")
    return REPL_USER


def make(sluice, pg, repl_role, **overrides):
    pooler = sluice(start=False, **overrides)
    entry = f"host={pg.host} port={pg.port} dbname=app user={repl_role} password={REPL_PW}"
    pooler.databases["repl"] = entry
    # libpq names database "replication" for physical replication (pg_basebackup)
    pooler.databases["replication"] = entry
    pooler.start()
    return pooler


def connect_repl(pooler, mode="database", **params):
    return psycopg.connect(pooler.dsn(dbname="repl", password="app_pw", replication=mode, **params),
                           autocommit=True, cursor_factory=psycopg.ClientCursor)


def walsenders(pg):
    return pg.query("select count(*) from pg_stat_activity where backend_type = 'walsender'")[0][0]


def admin_rows(pooler, what):
    with psycopg.connect(pooler.dsn(dbname="pgsluice", password="app_pw"), autocommit=True,
                         cursor_factory=psycopg.ClientCursor) as conn:
        cur = conn.execute(f"SHOW {what}")
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_logical_replication_connection_identifies_the_system(sluice, pg, repl_role, pool_mode):
    pooler = make(sluice, pg, repl_role, pool_mode=pool_mode)
    system_id = pg.query("select system_identifier from pg_control_system()")[0][0]
    with connect_repl(pooler, application_name="repl_test") as conn:
        row = conn.execute("IDENTIFY_SYSTEM").fetchone()
        assert int(row[0]) == system_id
        assert row[3] == "app"                      # dbname: a logical (database) connection
        # SQL runs too on a logical replication connection, and the client's
        # parameters reached the server in its StartupMessage
        assert conn.execute("SHOW application_name").fetchone() == ("repl_test",)
        assert walsenders(pg) == 1
        servers = [s for s in admin_rows(pooler, "SERVERS") if s["database"] == "repl"]
        clients = [c for c in admin_rows(pooler, "CLIENTS") if c["database"] == "repl"]
        assert [s["replication"] for s in servers] == ["logical"]
        assert [c["replication"] for c in clients] == ["logical"]
    # closed with the client: never pooled, never reused
    harness.wait_for(lambda: walsenders(pg) == 0, 10, what="the walsender gone")
    assert [s for s in admin_rows(pooler, "SERVERS") if s["database"] == "repl"] == []


def test_each_replication_client_gets_its_own_server_and_normal_clients_still_pool(sluice, pg, repl_role):
    pooler = make(sluice, pg, repl_role)
    with connect_repl(pooler) as a, connect_repl(pooler) as b:
        pid_a = a.execute("select pg_backend_pid()").fetchone()[0]
        pid_b = b.execute("select pg_backend_pid()").fetchone()[0]
        assert pid_a != pid_b
        assert walsenders(pg) == 2
        # an ordinary client of the same database and pool is unaffected
        with pooler.connect(dbname="repl", password="app_pw") as normal:
            assert normal.execute("select current_user").fetchone() == (REPL_USER,)
            backend = pg.query("select backend_type from pg_stat_activity where pid = %s",
                               (normal.execute("select pg_backend_pid()").fetchone()[0],))
            assert backend == [("client backend",)]
    harness.wait_for(lambda: walsenders(pg) == 0, 10, what="the walsenders gone")


def test_physical_replication_connection_refuses_sql_as_postgresql_does(sluice, pg, repl_role):
    pooler = make(sluice, pg, repl_role)
    with connect_repl(pooler, mode="true") as conn:
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("select 1")
    with connect_repl(pooler, mode="on") as conn:
        row = conn.execute("IDENTIFY_SYSTEM").fetchone()
        assert row[3] is None                       # no database: physical


def test_pg_basebackup_through_pgsluice(sluice, pg, repl_role, tmp_path):
    pooler = make(sluice, pg, repl_role)
    target = tmp_path / "backup"
    env = dict(os.environ, PGPASSWORD="app_pw", PGCONNECT_TIMEOUT="10")
    out = subprocess.run([str(pg.bindir / "pg_basebackup"), "-d",
                          f"host=127.0.0.1 port={pooler.port} user=app",
                          "-D", str(target), "-X", "none", "-c", "fast", "--no-sync"],
                         capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr + pooler.log_text()
    assert (target / "PG_VERSION").read_text().strip() == pg.query("show server_version_num")[0][0][:2]
    assert (target / "global" / "pg_control").stat().st_size > 0
    assert (target / "backup_label").exists()


@pytest.mark.parametrize("pool_mode", ["session", "transaction", "statement"])
def test_logical_decoding_stream_is_relayed(sluice, pg, repl_role, pool_mode):
    """pg_recvlogical through pgsluice: the COPY-both stream carries the changes.

    In every pool_mode: a replication connection keeps its server (PgBouncer's
    own test runs a subscriber under pool_mode=transaction)."""
    pooler = make(sluice, pg, repl_role, pool_mode=pool_mode)
    slot = "sluice_test_slot"
    pg.query("drop table if exists repl_t")
    pg.query("create table repl_t(a int)")
    pg.query(f"grant all on repl_t to {REPL_USER}")
    env = dict(os.environ, PGPASSWORD="app_pw", PGCONNECT_TIMEOUT="10")
    base = [str(pg.bindir / "pg_recvlogical"), "-d",
            f"host=127.0.0.1 port={pooler.port} user=app dbname=repl", "--slot", slot]
    made = subprocess.run(base + ["--create-slot", "--plugin", "test_decoding"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr + pooler.log_text()
    try:
        proc = subprocess.Popen(base + ["--start", "--no-loop", "-f", "-", "-F", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, b"")), daemon=True)
        reader.start()
        harness.wait_for(lambda: walsenders(pg) == 1, 20, what="pg_recvlogical streaming")
        pg.query("insert into repl_t values (42)")
        harness.wait_for(lambda: any(b"INSERT: a[integer]:42" in line for line in lines), 30,
                         what="the change streamed through pgsluice")
        proc.terminate()
        proc.wait(timeout=10)
    finally:
        harness.wait_for(lambda: walsenders(pg) == 0, 20, what="the walsender gone")
        pg.query(f"select pg_drop_replication_slot('{slot}')")
        pg.query("drop table repl_t")


def test_replication_login_refused_by_postgresql_reaches_only_that_client(sluice, pg):
    # app has no REPLICATION attribute: PostgreSQL's own error, and the pool is not marked failing
    pooler = sluice()
    with pytest.raises(psycopg.OperationalError, match="permission denied to start WAL sender|must be superuser or replication role"):
        psycopg.connect(pooler.dsn(password="app_pw", replication="database"))
    with pooler.connect(password="app_pw") as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_invalid_replication_value_is_22023(sluice):
    pooler = sluice()
    with pytest.raises(psycopg.OperationalError, match='invalid value for parameter "replication"'):
        psycopg.connect(pooler.dsn(password="app_pw", replication="sideways"))


def test_auth_hba_file_replication_keyword_matches_physical_replication_only(sluice, pg, repl_role, tmp_path):
    hba = tmp_path / "pg_hba.conf"
    hba.write_text("host replication app 127.0.0.1/32 scram-sha-256\n"
                   "host repl,pgsluice app 127.0.0.1/32 scram-sha-256\n")
    pooler = make(sluice, pg, repl_role, auth_type="hba", auth_hba_file=str(hba))
    # physical: matched by the replication keyword, not by the database name
    with connect_repl(pooler, mode="true") as conn:
        assert conn.execute("IDENTIFY_SYSTEM").fetchone()[3] is None
    # logical and ordinary clients: matched by their database, as PostgreSQL
    with connect_repl(pooler, mode="database") as conn:
        assert conn.execute("IDENTIFY_SYSTEM").fetchone()[3] == "app"
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry"):
        psycopg.connect(pooler.dsn(dbname="replication", password="app_pw"))
    hba.write_text("host all app 127.0.0.1/32 scram-sha-256\n")
    with psycopg.connect(pooler.dsn(dbname="pgsluice", password="app_pw"), autocommit=True,
                         cursor_factory=psycopg.ClientCursor) as admin:
        admin.execute("RELOAD")
    # "all" does not match a physical replication connection
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry"):
        connect_repl(pooler, mode="true")
