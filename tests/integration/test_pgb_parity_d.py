# SPDX-License-Identifier: PostgreSQL
"""PgBouncer 1.25 parity, part D (issue 12; docs/migrating-from-pgbouncer.md).

The rows of PgBouncer's test_admin, test_limits, test_operations and test_misc
that were "not probed": each test holds pgsluice to what PgBouncer's own test
asserts a user or operator sees (ids in SHOW, states, notices, log lines, how
a shutdown treats sockets). The behaviours are PgBouncer's; the tests are ours,
against the real PostgreSQL of the harness.
"""

import signal
import threading
import time

import psycopg
import pytest
from psycopg.rows import dict_row

import harness
from harness import wait_for


def console(pooler, **params):
    return psycopg.connect(pooler.dsn(dbname="pgbouncer", **params), autocommit=True,
                           cursor_factory=psycopg.ClientCursor, row_factory=dict_row)


def admin(pooler, command, **params):
    with console(pooler, **params) as conn:
        cur = conn.execute(command)
        return cur.fetchall() if cur.description else []


def log(pooler):
    return pooler.logfile.read_text() if pooler.logfile.exists() else ""


class Background:
    """Run fn in a thread; .done(timeout) tells whether it finished, .error what it raised."""

    def __init__(self, fn):
        self.error = None
        self.result = None

        def run():
            try:
                self.result = fn()
            except BaseException as exc:       # reported to the test through .error
                self.error = exc
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def done(self, timeout):
        self.thread.join(timeout)
        return not self.thread.is_alive()


# -- test_admin: socket_id, server_id, client_id, client_states, kill_db ---------------

def test_socket_and_server_ids_come_from_one_counter_client_first(sluice):
    """test_socket_id / test_server_id: a session client gets the next id, its server
    the one after; SHOW SOCKETS lists console, client and server."""
    pooler = sluice(auth_type="trust", server_lifetime=0)
    admin(pooler, "SHOW VERSION")     # after the harness's start-up probes got their ids
    with console(pooler) as adm:
        initial = max(r["id"] for r in adm.execute("SHOW SOCKETS").fetchall())
        for i in range(1, 4):
            conn = pooler.connect()
            conn.execute("select 1")
            sockets = adm.execute("SHOW SOCKETS").fetchall()
            assert {r["id"] for r in sockets} == {initial, initial + 2 * i - 1, initial + 2 * i}
            assert [r["id"] for r in adm.execute("SHOW SERVERS").fetchall()] == [initial + 2 * i]
            conn.close()
            # server_lifetime = 0: the server is closed once released
            wait_for(lambda: adm.execute("SHOW SERVERS").fetchall() == [], 5,
                     what="the used-once server closed")


def test_client_ids_grow_by_one_per_console_login(sluice):
    """test_client_id: each new console connection is the next id."""
    pooler = sluice(auth_type="trust", server_lifetime=0)
    admin(pooler, "SHOW CLIENTS")     # after the harness's start-up probes got theirs
    initial = admin(pooler, "SHOW CLIENTS")[0]["id"]
    for i in range(1, 4):
        assert [r["id"] for r in admin(pooler, "SHOW CLIENTS")] == [initial + i]


def test_client_states_idle_waiting_active(sluice, pg):
    """test_client_states: idle after login, waiting while PAUSEd, active in a transaction."""
    pooler = sluice(databases={"p3x": f"host={pg.host} port={pg.port} dbname=app pool_mode=transaction"})

    def state():
        rows = admin(pooler, "SHOW CLIENTS")
        return next(r["state"] for r in rows if r["database"] == "p3x")

    conn = pooler.connect(dbname="p3x")
    assert state() == "idle"
    admin(pooler, "PAUSE p3x")
    blocked = Background(lambda: conn.execute("select 1").fetchone())
    wait_for(lambda: state() == "waiting", 5, what="state waiting")
    admin(pooler, "RESUME p3x")
    assert blocked.done(10) and blocked.error is None
    conn.execute("BEGIN")
    conn.execute("select 1")
    assert state() == "active"
    conn.execute("ROLLBACK")
    conn.close()


def test_kill_db_closes_its_clients_and_leaves_the_console(sluice):
    """test_kill_db: two clients of p0, KILL p0, SHOW CLIENTS lists only the console."""
    pooler = sluice()
    conns = [pooler.connect(), pooler.connect()]
    for c in conns:
        c.execute("select 1")
    assert len(admin(pooler, "SHOW CLIENTS")) == 3
    admin(pooler, "KILL app")
    wait_for(lambda: len(admin(pooler, "SHOW CLIENTS")) == 1, 5, what="clients of app closed")
    for c in conns:
        c.close()
    admin(pooler, "RESUME app")


# -- test_limits: pool_size, max_db_connections, max_user_connections ------------------

def _hold(pooler, n, **kw):
    """n clients each inside a transaction in a pg_sleep-free way: BEGIN + select."""
    held = []
    for _ in range(n):
        c = pooler.connect(**kw)
        c.execute("BEGIN")
        c.execute("select 1")
        held.append(c)
    return held


@pytest.mark.parametrize("entry,overrides", [
    ("pool_size=2", {}),
    ("max_db_connections=2", {}),
    ("", {"max_user_connections": 2}),
])
def test_pool_limits_cap_servers_and_queue_the_rest(sluice, pg, entry, overrides):
    """test_pool_size / test_max_db_connections / test_max_user_connections: with the limit
    at 2, a third client in transaction pooling waits (SHOW POOLS cl_waiting = 1) and
    PostgreSQL never sees more than 2 server connections; it runs once one is released."""
    pooler = sluice(pool_mode="transaction", default_pool_size=5,
                    databases={"lim": f"host={pg.host} port={pg.port} dbname=app {entry}"},
                    **overrides)
    held = _hold(pooler, 2, dbname="lim")
    third = pooler.connect(dbname="lim")
    run = Background(lambda: third.execute("select 3").fetchone())

    def waiting():
        return [r for r in admin(pooler, "SHOW POOLS") if r["database"] == "lim"][0]["cl_waiting"]
    wait_for(lambda: waiting() == 1, 5, what="third client waiting")
    assert pg.pooler_backends() == 2
    held[0].execute("COMMIT")
    assert run.done(10) and run.error is None and run.result == (3,)
    assert pg.pooler_backends() == 2
    for c in held + [third]:
        c.close()


def _sleepers(pooler, n, seconds=0.3, **kw):
    """PgBouncer's asleep(times=n): n clients at once, each runs pg_sleep and leaves."""
    def one():
        with pooler.connect(**kw) as c:
            c.execute("select pg_sleep(%s)", (seconds,))
    return [Background(one) for _ in range(n)]


def _finish(workers):
    for w in workers:
        assert w.done(30) and w.error is None, w.error


def _backends(pg, users):
    return pg.query("SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND"
                    " usename = ANY(%s) AND client_addr IS NOT NULL", (list(users),),
                    dbname="postgres")[0][0]


USERS = {"app": {}, "pw_user": {"password": "pw_pw"}, "md5_user": {"password": "md5_pw"}}


def test_pool_size_per_user_per_database_global_and_after_set(sluice, pg):
    """test_pool_size: a [users] pool_size caps that user's pool, except on a database with a
    forced user (the database's pool_size applies); then a database's pool_size; then
    default_pool_size, and again after SET default_pool_size."""
    entry = f"host={pg.host} port={pg.port} dbname=app"
    pooler = sluice(default_pool_size=3, extra_ini="\n[users]\napp = pool_size=1\n",
                    databases={"p0a": entry, "p0": f"{entry} user=pw_user pool_size=2",
                               "p1": entry})
    _finish(_sleepers(pooler, 4, dbname="p0a"))
    assert _backends(pg, ["app"]) == 1
    _finish(_sleepers(pooler, 4, dbname="p0"))
    assert _backends(pg, ["pw_user"]) == 2
    _finish(_sleepers(pooler, 5, dbname="p1", user="md5_user", password="md5_pw"))
    assert _backends(pg, ["md5_user"]) == 3
    admin(pooler, "SET default_pool_size = 4")
    _finish(_sleepers(pooler, 5, dbname="p1", user="md5_user", password="md5_pw"))
    assert _backends(pg, ["md5_user"]) == 4


def test_max_db_connections_counts_every_user_of_the_database(sluice, pg):
    """test_max_db_connections: clients of several users on a database with
    max_db_connections = 2 leave PostgreSQL with 2 connections in all."""
    pooler = sluice(databases={"p2": f"host={pg.host} port={pg.port} dbname=app max_db_connections=2"})
    workers = []
    for user, kw in USERS.items():
        workers += _sleepers(pooler, 2, dbname="p2", user=user, **kw)
    _finish(workers)
    assert _backends(pg, USERS) == 2


def test_max_user_connections_counts_the_user_across_databases(sluice, pg):
    """test_max_user_connections: a user with max_user_connections = 2 on three databases
    leaves PostgreSQL with 2 connections of that user."""
    entry = f"host={pg.host} port={pg.port} dbname=app"
    pooler = sluice(extra_ini="\n[users]\napp = max_user_connections=2\n",
                    databases={"p7a": entry, "p7b": entry, "p7c": entry})
    workers = []
    for db in ("p7a", "p7b", "p7c"):
        workers += _sleepers(pooler, 3, dbname=db)
    _finish(workers)
    assert _backends(pg, ["app"]) == 2


# -- test_operations --------------------------------------------------------------------

def test_pause_resume_and_suspend_resume_cycles_lose_no_query(sluice):
    """test_pause_resume, test_suspend_resume: a client running short queries in a loop
    through five PAUSE/RESUME and five SUSPEND/RESUME cycles sees every one succeed."""
    pooler = sluice()
    stop = threading.Event()
    done = []

    def loop():        # PgBouncer's asleep(sequentially=True): a connection per query
        while not stop.is_set():
            with pooler.connect(connect_timeout=30) as conn:
                conn.execute("select pg_sleep(0.05)")
            done.append(1)
    worker = Background(loop)
    with console(pooler) as adm:
        for cmd in ("PAUSE", "SUSPEND"):
            for _ in range(5):
                adm.execute(cmd)
                time.sleep(0.2)
                adm.execute("RESUME")
                before = len(done)
                wait_for(lambda: len(done) > before, 10, what=f"a query after {cmd}/RESUME")
    stop.set()
    assert worker.done(10) and worker.error is None, worker.error


def test_reconnect_gives_the_next_query_a_new_backend(sluice):
    """test_reconnect: after RECONNECT a statement-at-a-time client gets a new backend pid."""
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        pid1 = conn.execute("select pg_backend_pid()").fetchone()[0]
        admin(pooler, "RECONNECT")
        pid2 = conn.execute("select pg_backend_pid()").fetchone()[0]
    assert pid1 != pid2


def test_database_change_on_reload_reaches_new_logins(sluice, pg):
    """test_database_change: an entry's dbname changed and RELOADed; new logins reach the
    new database once the old servers are gone (server_lifetime)."""
    pg.query("CREATE DATABASE parity_d_other") if not pg.query(
        "select 1 from pg_database where datname = 'parity_d_other'", dbname="postgres") else None
    pooler = sluice(server_lifetime=2, databases={"p1": f"host={pg.host} port={pg.port} dbname=app"})
    with pooler.connect(dbname="p1") as c:
        assert c.execute("select current_database()").fetchone()[0] == "app"
    pooler.databases["p1"] = f"host={pg.host} port={pg.port} dbname=parity_d_other"
    pooler.write_config()
    admin(pooler, "RELOAD")

    def current():
        with pooler.connect(dbname="p1") as c:
            return c.execute("select current_database()").fetchone()[0]
    wait_for(lambda: current() == "parity_d_other", 10, what="new logins on the new database")


def test_database_restart_is_survived_by_new_queries(sluice, pg):
    """test_database_restart: PostgreSQL restarted under a pool; queries after it succeed."""
    pooler = sluice(server_login_retry=1)
    with pooler.connect() as c:
        c.execute("select 1")
    pg.stop()
    pg.start()
    wait_for(lambda: _try_select(pooler), 15, what="a query after PostgreSQL restarted")


def _try_select(pooler):
    try:
        with pooler.connect() as c:
            return c.execute("select 1").fetchone() == (1,)
    except psycopg.Error:
        return False


def test_reload_without_changes_keeps_servers(sluice, pg):
    """test_servers_no_disconnect_on_reload_with_no_tls_change."""
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        pid1 = conn.execute("select pg_backend_pid()").fetchone()[0]
        admin(pooler, "RELOAD")
        time.sleep(0.5)         # longer than a janitor pass: nothing may have closed
        assert conn.execute("select pg_backend_pid()").fetchone()[0] == pid1
    assert "database configuration changed" not in log(pooler)


# -- test_misc ----------------------------------------------------------------------------

NOTIFY = "No server connection available in postgres backend, client being queued"


@pytest.mark.parametrize("wait_notify,expected", [(1, 1), (8, 0)])
def test_query_wait_notify_sends_a_notice_to_a_queued_client(sluice, pg, wait_notify, expected):
    """test_notify_queue / _negative: a client queued longer than query_wait_notify gets
    PgBouncer's NOTICE once per wait; a shorter wait gets none."""
    pooler = sluice(pool_mode="statement", query_wait_notify=wait_notify,
                    max_user_connections=1,
                    databases={"postgres": f"host={pg.host} port={pg.port} dbname=app"})
    notices = []
    for round_ in range(2):
        sleeper = pooler.connect(dbname="postgres")
        busy = Background(lambda: sleeper.execute("select pg_sleep(2.5)"))
        wait_for(lambda: pg.pooler_backends() == 1 and _active(pooler), 5, what="sleeper running")
        with pooler.connect(dbname="postgres") as c:
            c.add_notice_handler(lambda d: notices.append(d.message_primary))
            c.execute("select 1")
        assert busy.done(10)
        sleeper.close()
        assert notices == [NOTIFY] * (expected * (round_ + 1))


def _active(pooler):
    return any(r["state"] == "active" and r["database"] == "postgres"
               for r in admin(pooler, "SHOW CLIENTS"))


def _pg_log_statements(pg):
    with pg.connect(dbname="postgres") as c:
        c.execute("ALTER SYSTEM SET log_statement = 'all'")
        c.execute("ALTER SYSTEM SET log_min_messages = 'log'")
        c.execute("select pg_reload_conf()")


def _pg_log_statements_off(pg):
    with pg.connect(dbname="postgres") as c:
        c.execute("ALTER SYSTEM RESET log_statement")
        c.execute("ALTER SYSTEM RESET log_min_messages")
        c.execute("select pg_reload_conf()")


@pytest.mark.parametrize("check_query,logged", [(None, " LOG:  statement: \n"),
                                                ("SELECT 2", " LOG:  statement: SELECT 2\n")])
def test_server_check_query_runs_once_on_reuse(sluice, pg, check_query, logged):
    """test_server_check_query_default / test_server_check_query: with server_check_delay = 0
    the reused server is checked once with the check query (default: the empty query) and
    the client keeps the same backend."""
    overrides = {"server_check_delay": 0, "pool_mode": "transaction"}
    if check_query:
        overrides["server_check_query"] = check_query
    pooler = sluice(**overrides)
    _pg_log_statements(pg)
    try:
        with pooler.connect() as c:
            pid = c.execute("select pg_backend_pid()").fetchone()[0]
        start = len(pg.logfile.read_text(errors="replace"))
        with pooler.connect() as c:
            new_pid = c.execute("select pg_backend_pid()").fetchone()[0]
        wait_for(lambda: "pg_backend_pid" in pg.logfile.read_text(errors="replace")[start:], 5,
                 what="the statement in PostgreSQL's log")
        text = pg.logfile.read_text(errors="replace")[start:]
        assert text.count(logged) == 1, text
    finally:
        _pg_log_statements_off(pg)
    assert new_pid == pid


def test_connect_query_settings_reach_the_client(sluice, pg):
    """test_connect_query: a database's connect_query GUCs are in effect for its clients."""
    pooler = sluice(databases={
        "p8": f"host={pg.host} port={pg.port} dbname=app "
              "connect_query='set enable_seqscan=off; set enable_nestloop=off'"})
    with pooler.connect(dbname="p8") as c:
        assert c.execute("show enable_seqscan").fetchone()[0] == "off"
        assert c.execute("show enable_nestloop").fetchone()[0] == "off"


def test_tracked_parameters_stay_per_client_in_transaction_pooling(sluice, pg):
    """test_track_extra_parameters: the default tracked parameters are cached per client."""
    pooler = sluice(pool_mode="transaction")
    sets = {
        "intervalstyle": (["sql_standard", "postgres"], ["sql_standard", "postgres"]),
        "standard_conforming_strings": (["ON", "OFF"], ["on", "off"]),
        "timezone": (["'Europe/Amsterdam'", "'Europe/Rome'"], ["Europe/Amsterdam", "Europe/Rome"]),
        "datestyle": (["PostgreSQL,European", "ISO,US"], ["Postgres, DMY", "ISO, MDY"]),
        "application_name": (["client1", "client2"], ["client1", "client2"]),
        "client_encoding": (["LATIN1", "LATIN5"], ["LATIN1", "LATIN5"]),
        "default_transaction_read_only": (["true", "false"], ["on", "off"]),
    }
    with pg.connect() as direct:
        major = direct.info.server_version // 10000
    if major >= 16:
        sets["scram_iterations"] = (["1000", "2000"], ["1000", "2000"])
    with pooler.connect() as c1, pooler.connect() as c2:
        for key, (values, expected) in sets.items():
            c1.execute(f"SET {key} TO {values[0]}")
            c2.execute(f"SET {key} TO {values[1]}")
            assert c1.execute(f"SHOW {key}").fetchone()[0] == expected[0], key
            assert c2.execute(f"SHOW {key}").fetchone()[0] == expected[1], key


def test_wait_close_waits_for_the_reconnected_server(sluice):
    """test_wait_close: WAIT_CLOSE p3 after RECONNECT p3 returns only once the session's
    server is closed (the client disconnects)."""
    pooler = sluice(pool_mode="session")
    conn = pooler.connect()
    conn.execute("select 1")
    admin(pooler, "RECONNECT app")
    waiting = Background(lambda: admin(pooler, "WAIT_CLOSE app"))
    assert not waiting.done(1)
    conn.close()
    assert waiting.done(10) and waiting.error is None


def test_empty_application_name_stays_empty(sluice):
    """test_empty_application_name, twice (the second login reuses the server)."""
    pooler = sluice(pool_mode="session")
    for _ in range(2):
        with pooler.connect(application_name="") as c:
            assert c.execute("SHOW application_name").fetchone()[0] == ""
            c.execute("SET application_name = test")
            assert c.execute("SHOW application_name").fetchone()[0] == "test"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_repeated_signal_waits_then_exits(sluice, sig):
    """test_repeated_sigterm / test_repeated_sigint: after one signal a session client keeps
    working and (SIGINT) new TCP logins are refused; the second signal exits and the
    client's next query fails."""
    pooler = sluice(pool_mode="session")
    conn = pooler.connect()
    conn.execute("select 1")
    pooler.proc.send_signal(sig)
    time.sleep(1)
    conn.execute("select 1")
    assert pooler.proc.poll() is None
    if sig == signal.SIGINT:
        with pytest.raises(psycopg.OperationalError, match="Connection refused"):
            pooler.connect().close()
    pooler.proc.send_signal(sig)
    pooler.proc.wait(timeout=10)
    with pytest.raises(psycopg.OperationalError,
                       match="database removed|server closed the connection unexpectedly"):
        conn.execute("select 1")
    pooler._stopped = True
    pooler._stderr.close()


@pytest.mark.parametrize("mode", ["WAIT_FOR_SERVERS", "WAIT_FOR_CLIENTS"])
def test_shutdown_keeps_the_unix_socket_for_the_console_until_clients_leave(sluice, mode):
    """test_shutdown_wait_for_servers / _clients: during the shutdown a pooled login fails on
    both TCP and the unix socket, the console still answers on the unix socket, and once
    the last client left the process is gone."""
    pooler = sluice(pool_mode="session")
    conn = pooler.connect()
    conn.execute("select 1")
    stay = console(pooler, host=str(pooler.workdir))
    run = None
    if mode == "WAIT_FOR_SERVERS":
        run = Background(lambda: conn.execute("select pg_sleep(2)").fetchone())
        wait_for(lambda: any(r["state"] == "active" and r["database"] == "app"
                             for r in admin(pooler, "SHOW CLIENTS")), 5, what="query running")
    admin(pooler, f"SHUTDOWN {mode}")
    with pytest.raises(psycopg.OperationalError):
        pooler.connect(host=str(pooler.workdir)).close()
    assert admin(pooler, "SHOW VERSION", host=str(pooler.workdir))
    with pytest.raises(psycopg.OperationalError):
        pooler.connect().close()
    if run:
        assert run.done(10)
    conn.close()
    stay.close()
    assert pooler.proc.wait(timeout=10) == 0
    pooler._stopped = True
    pooler._stderr.close()


def test_newly_paused_client_during_wait_for_servers_is_closed_with_server_shutting_down(sluice):
    """test_newly_paused_client_during_wait_for_servers_shutdown."""
    pooler = sluice(pool_mode="transaction")
    with pooler.connect(autocommit=False) as c1, pooler.connect() as c2:
        c1.execute("select 1")
        admin(pooler, "SHUTDOWN WAIT_FOR_SERVERS")
        c1.execute("select 1")
        with pytest.raises(psycopg.OperationalError):
            c2.execute("select 1")
        wait_for(lambda: "closing because: server shutting down" in log(pooler), 5,
                 what="log line")
        c1.rollback()


def test_many_reloads_with_many_entries_issue_1104(sluice, pg):
    """test_issue_1104: configs with growing numbers of entries, each with its own user,
    RELOADed; the pooler stays up and the console answers."""
    pooler = sluice(auth_type="trust")
    for i in range(1, 15, 3):
        pooler.databases = {f"testdb_{i}_{j}": f"host={pg.host} port={pg.port} user=dummy_user_{i}_{j}"
                            for j in range(1, 10 * i)}
        pooler.write_config()
        admin(pooler, "RELOAD")
    assert pooler.proc.poll() is None
    assert len([r for r in admin(pooler, "SHOW DATABASES") if r["name"].startswith("testdb_")]) == 10 * 13 - 1


def test_already_waiting_client_is_closed_by_shutdown_wait_for_servers(sluice):
    """test_already_paused_client_during_wait_for_servers_shutdown: with one server busy in
    a transaction, a second client queued for it is closed by SHUTDOWN WAIT_FOR_SERVERS
    (log `closing because: server shutting down`); the transaction goes on."""
    pooler = sluice(pool_mode="transaction", default_pool_size=1)
    with pooler.connect(autocommit=False) as c1, pooler.connect() as c2:
        c1.execute("select 1")
        queued = Background(lambda: c2.execute("select 1"))
        wait_for(lambda: any(r["state"] == "waiting" for r in admin(pooler, "SHOW CLIENTS")), 5,
                 what="second client waiting")
        admin(pooler, "SHUTDOWN WAIT_FOR_SERVERS")
        assert c1.execute("select 2").fetchone() == (2,)
        assert queued.done(10) and isinstance(queued.error, psycopg.OperationalError)
        wait_for(lambda: "closing because: server shutting down" in log(pooler), 5,
                 what="log line")
        c1.rollback()


@pytest.mark.parametrize("check_query", [None, "SELECT 2"])
def test_server_check_query_on_a_dead_server_gives_a_new_one_without_error(sluice, pg, check_query):
    """test_server_check_query_default_negative / _negative: the idle server's backend is
    gone; the next client gets a new backend without an error."""
    overrides = {"server_check_delay": 0, "pool_mode": "transaction", "default_pool_size": 1}
    if check_query:
        overrides["server_check_query"] = check_query
    pooler = sluice(**overrides)
    with pooler.connect() as c:
        pid = c.execute("select pg_backend_pid()").fetchone()[0]
    pg.query("select pg_terminate_backend(%s)", (pid,))
    wait_for(lambda: not pg.query("select 1 from pg_stat_activity where pid = %s", (pid,),
                                  dbname="postgres"), 5, what="backend gone")
    with pooler.connect() as c:
        new_pid = c.execute("select pg_backend_pid()").fetchone()[0]
    assert new_pid != pid
