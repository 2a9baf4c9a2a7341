# SPDX-License-Identifier: PostgreSQL
"""PgBouncer 1.25 parity, part A (issue 12; docs/migrating-from-pgbouncer.md).

Each test holds pgsluice to one detail PgBouncer's own test suite checks: an
error text or SQLSTATE a script matches, a ParameterStatus a driver reads, a
log line a log watch counts, a timeout's effect. The behaviours are
PgBouncer's; the tests are ours, against the real PostgreSQL of the harness.
"""

import os
import signal
import socket
import threading
import time

import psycopg
import pytest

import harness
import pgwire


def console(pooler):
    return psycopg.connect(pooler.dsn(dbname="pgbouncer"), autocommit=True,
                           cursor_factory=psycopg.ClientCursor)


def log(pooler):
    return pooler.logfile.read_text() if pooler.logfile.exists() else ""


def wait_log(pooler, text, timeout=10):
    harness.wait_for(lambda: text in log(pooler), timeout, what=f"log line {text!r}")


def console_error(pooler, command):
    with console(pooler) as admin:
        with pytest.raises(psycopg.Error) as err:
            admin.execute(command)
    return err.value.sqlstate, err.value.diag.message_primary


# -- admin console ----------------------------------------------------------------

def test_console_reports_pgbouncer_version_pool_mode_and_prepared_statements(sluice):
    pooler = sluice()
    with console(pooler) as admin:
        ps = admin.pgconn.parameter_status
        assert ps(b"pgbouncer.version") not in (None, b"")
        assert ps(b"pgbouncer.max_prepared_statements") == b"0"
        assert ps(b"pgbouncer.pool_mode") == b"statement"


def test_client_learns_pgbouncer_version_and_its_pool_mode(sluice, pg):
    pooler = sluice(databases={"txdb": f"host={pg.host} port={pg.port} dbname=app pool_mode=transaction"})
    with pooler.connect() as conn:
        ps = conn.pgconn.parameter_status
        assert ps(b"pgbouncer.max_prepared_statements") == b"200"
        assert ps(b"pgbouncer.pool_mode") == b"session"
        with console(pooler) as admin:
            assert ps(b"pgbouncer.version") == admin.pgconn.parameter_status(b"pgbouncer.version")
    with pooler.connect(dbname="txdb") as conn:
        assert conn.pgconn.parameter_status(b"pgbouncer.pool_mode") == b"transaction"


def test_kill_of_an_unknown_database_is_08P01_no_such_database(sluice):
    pooler = sluice()
    assert console_error(pooler, "KILL dne") == ("08P01", "no such database: dne")
    assert console_error(pooler, "PAUSE dne") == ("08P01", "no such database: dne")


def test_kill_client_of_an_unknown_id_is_client_not_found(sluice):
    pooler = sluice()
    assert console_error(pooler, "KILL_CLIENT 1000") == ("08P01", "client not found")


def test_kill_client_of_a_non_number_is_invalid_client_pointer(sluice):
    pooler = sluice()
    assert console_error(pooler, "KILL_CLIENT non_existant_client_id") == \
        ("08P01", "invalid client pointer supplied")


def test_reload_of_a_bad_file_says_reload_failed_see_logs(sluice):
    pooler = sluice()
    good = pooler.ini_path.read_text()
    pooler.ini_path.write_text(good.replace("[pgsluice]", "[pgsluice]\nserver_lifetime = invalid_server_lifetime", 1))
    sqlstate, message = console_error(pooler, "RELOAD")
    assert (sqlstate, message) == ("F0000", "RELOAD failed, see logs for additional details")
    pooler.ini_path.write_text(good)
    with console(pooler) as admin:
        admin.execute("RELOAD")


def test_resume_while_shutting_down_is_pooler_is_shutting_down(sluice):
    pooler = sluice()
    with pooler.connect() as conn:
        conn.execute("select 1")
        with console(pooler) as admin:
            admin.execute("SHUTDOWN WAIT_FOR_CLIENTS")
            with pytest.raises(psycopg.Error) as err:
                admin.execute("RESUME")
            assert (err.value.sqlstate, err.value.diag.message_primary) == \
                ("08P01", "pooler is shutting down")


def test_sigusr2_while_shutting_down_is_ignored_and_logged(sluice):
    pooler = sluice()
    with pooler.connect() as conn:
        conn.execute("select 1")
        with console(pooler) as admin:
            admin.execute("SHUTDOWN WAIT_FOR_CLIENTS")
        os.kill(pooler.pid, signal.SIGUSR2)
        wait_log(pooler, "got SIGUSR2 while shutting down, ignoring")
        assert conn.execute("select 2").fetchone() == (2,)


# -- errors clients see ----------------------------------------------------------------

def test_unknown_database_says_no_such_database(sluice):
    pooler = sluice()
    err = pgwire.login_error(pooler.host, pooler.port, "app", "nosuchdb", password="app_pw")
    assert (err.sqlstate, err.message) == ("3D000", "no such database: nosuchdb")
    wait_log(pooler, "closing because: no such database: nosuchdb")


def test_trust_refuses_an_unknown_user_with_trust_authentication_failed(sluice):
    pooler = sluice(auth_type="trust")
    err = pgwire.login_error(pooler.host, pooler.port, "nosuchuser", "app")
    assert err.message == '"trust" authentication failed'
    wait_log(pooler, 'closing because: "trust" authentication failed')


def test_scram_refusal_says_sasl_authentication_failed(sluice):
    pooler = sluice(auth_type="scram-sha-256")
    for user in ("app", "nosuchuser"):
        err = pgwire.login_error(pooler.host, pooler.port, user, "app", password="whatever")
        assert (err.sqlstate, err.message) == ("28P01", "SASL authentication failed")
    wait_log(pooler, "closing because: SASL authentication failed")


def test_md5_refusal_of_an_unknown_user_says_password_authentication_failed(sluice):
    pooler = sluice(auth_type="md5")
    err = pgwire.login_error(pooler.host, pooler.port, "nosuchuser", "app", password="whatever")
    assert err.message.startswith("password authentication failed")
    wait_log(pooler, "closing because: password authentication failed")


def test_max_client_conn_refusal_names_max_client_conn(sluice):
    pooler = sluice(max_client_conn=1)
    with pooler.connect():
        with pytest.raises(psycopg.OperationalError, match=r"max_client_conn"):
            pooler.connect()


def test_disabled_database_says_database_is_disabled(sluice):
    pooler = sluice()
    with console(pooler) as admin:
        admin.execute("DISABLE app")
        with pytest.raises(psycopg.OperationalError, match=r'database "app" is disabled'):
            pooler.connect()
        admin.execute("ENABLE app")
    with pooler.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_unsupported_startup_parameter_text(sluice):
    pooler = sluice()
    err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="app_pw",
                             params={"unsupported": "value"})
    assert (err.sqlstate, err.message) == ("08P01", "unsupported startup parameter: unsupported")


@pytest.mark.parametrize("options, message", [
    ("-d", "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed"),
    ("-c timezone", "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed"),
])
def test_unusable_options_startup_parameter_texts(sluice, options, message):
    pooler = sluice()
    with pytest.raises(psycopg.OperationalError) as err:
        pooler.connect(options=options)
    assert message in str(err.value)


def test_options_setting_is_a_session_setting_where_pgbouncer_refuses_it(sluice):
    """PgBouncer refuses `-c enable_seqscan=false` (unsupported startup parameter
    in options); pgsluice records it as a session setting (docs/pooling.md)."""
    pooler = sluice()
    with pooler.connect(options="-c enable_seqscan=false") as conn:
        assert conn.execute("show enable_seqscan").fetchone() == ("off",)


def test_login_notify_message_is_a_notice_at_login(sluice, pg):
    pooler = sluice(login_notify_message="You are now connected to pgsluice")
    out = subprocess_psql(pg, pooler)
    assert "NOTICE:  You are now connected to pgsluice" in out.stderr
    quiet = sluice()
    assert "NOTICE" not in subprocess_psql(pg, quiet).stderr


def subprocess_psql(pg, pooler):
    import subprocess
    env = dict(os.environ, PGPASSWORD="app_pw")
    return subprocess.run([str(pg.bindir / "psql"), "-X", "-c", "select 1",
                           f"host={pooler.host} port={pooler.port} user=app dbname=app"],
                          capture_output=True, text=True, env=env, timeout=20)


def test_host_and_port_count_mismatch_says_invalid_number_of_ports(sluice, pg):
    pooler = sluice()
    good = pooler.ini_path.read_text()
    pooler.ini_path.write_text(good + f"bad_db = host=127.0.0.1,127.0.0.1,127.0.0.1 port={pg.port},{pg.port}\n")
    with console(pooler) as admin:
        with pytest.raises(psycopg.errors.ConfigFileError):
            admin.execute("RELOAD")
    assert "invalid number of ports" in log(pooler)
    pooler.ini_path.write_text(good)


# -- timeouts and server connections ------------------------------------------------

def test_query_timeout_closes_with_query_timeout_in_the_log(sluice):
    pooler = sluice(query_timeout=1)
    with pooler.connect() as conn:
        with pytest.raises(psycopg.OperationalError, match="query_timeout"):
            conn.execute("select pg_sleep(5)")
    wait_log(pooler, "closing because: query timeout")


def test_user_query_timeout_closes_with_query_timeout_in_the_log(sluice):
    pooler = sluice(extra_ini="[users]\ntrust_user = pool_mode=statement query_timeout=1\n")
    with psycopg.connect(pooler.dsn(user="trust_user", dbname="trustdb"), autocommit=True) as conn:
        with pytest.raises(psycopg.OperationalError, match="query_timeout"):
            conn.execute("select pg_sleep(5)")
    wait_log(pooler, "closing because: query timeout")


def test_idle_transaction_timeout_closes_with_idle_transaction_timeout_in_the_log(sluice):
    pooler = sluice(pool_mode="transaction", idle_transaction_timeout=1)
    with pooler.connect(autocommit=False) as conn:
        conn.execute("select 1")
        wait_log(pooler, "closing because: idle transaction timeout")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")


def test_query_timeout_ends_a_wait_for_a_server(sluice):
    # a database that accepts TCP connections and never answers: no server logs in
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        port = silent.getsockname()[1]
        pooler = sluice(databases={"silent": f"host=127.0.0.1 port={port} dbname=app"},
                        query_timeout=2, server_connect_timeout=1, query_wait_timeout=60)
        with pytest.raises(psycopg.OperationalError, match="query_timeout"):
            with pooler.connect(dbname="silent") as conn:
                conn.execute("select 1")
        assert "closing because: connect timeout" in log(pooler)
    finally:
        silent.close()


def test_clients_wait_while_postgresql_is_down_and_connect_failed_is_logged(sluice, pg):
    pooler = sluice(server_login_retry=1, query_wait_timeout=30)
    pg.stop()
    try:
        starter = threading.Timer(1.5, pg.start)
        starter.start()
        with pooler.connect(connect_timeout=20) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        starter.join()
    finally:
        if not pg.running:
            pg.start()
    assert "closing because: connect failed" in log(pooler)


def test_server_login_failure_is_logged_with_its_severity(sluice, pg):
    pooler = sluice(databases={"gone": f"host={pg.host} port={pg.port} dbname=non_existing_pg_db"})
    with pytest.raises(psycopg.OperationalError, match='database "non_existing_pg_db" does not exist'):
        pooler.connect(dbname="gone")
    wait_log(pooler, 'server login failed: FATAL database "non_existing_pg_db" does not exist')
    wait_log(pooler, 'closing because: database "non_existing_pg_db" does not exist')


def test_new_server_connection_is_logged_with_its_local_address(sluice):
    pooler = sluice()
    with pooler.connect() as conn:
        conn.execute("select 1")
    wait_log(pooler, "new connection to server (from 127.0.0.1:")


def test_reserve_pool_use_is_logged(sluice):
    pooler = sluice(default_pool_size=1, reserve_pool_size=1, reserve_pool_timeout=0.5)
    first = pooler.connect()
    first.execute("select 1")                      # session pooling: holds the one server
    with pooler.connect() as second:
        assert second.execute("select 1").fetchone() == (1,)
    first.close()
    wait_log(pooler, "taking connection from reserve_pool")


def test_fast_close_on_reconnect_logs_database_configuration_changed(sluice):
    pooler = sluice(server_fast_close=1)
    with pooler.connect() as conn:
        conn.execute("select 1")
        with console(pooler) as admin:
            admin.execute("RECONNECT app")
        conn.execute("select 1")
        wait_log(pooler, "closing because: database configuration changed")


def test_first_use_of_a_wildcard_database_logs_registered_new_auto_database(sluice, pg):
    pooler = sluice(databases={"*": f"host={pg.host} port={pg.port}"})
    with pooler.connect(dbname="app") as conn:
        conn.execute("select 1")
    with pooler.connect(dbname="postgres") as conn:
        conn.execute("select 1")
    wait_log(pooler, "registered new auto-database: postgres")
    assert "registered new auto-database: app" not in log(pooler)   # "app" has its own entry


def test_login_that_fails_at_once_is_retried_at_a_bounded_rate(sluice, tmp_path):
    """server_login_retry = 0 and a server login that fails before it leaves the
    process (no socket at the unix path): the waiting client gets query_wait_timeout,
    pgsluice keeps serving, and retries are paced (at most one per 10 ms), not run
    in a loop that never returns to the event loop (it crashed on its own stack)."""
    pooler = sluice(server_login_retry=0, query_wait_timeout=2,
                    databases={"nowhere": f"host={tmp_path} port=1 dbname=app"})
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as caught:
        pooler.connect(dbname="nowhere").close()
    waited = time.monotonic() - started
    assert "query_wait_timeout" in str(caught.value), caught.value
    with pooler.connect() as conn:                       # still alive and serving
        assert conn.execute("select 1").fetchone() == (1,)
    attempts = pooler.logfile.read_text(errors="replace").count("nowhere/app@unix:1 closing because")
    assert 1 <= attempts <= waited / 0.010 + 10, attempts
