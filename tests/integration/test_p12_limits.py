# SPDX-License-Identifier: PostgreSQL
"""Issue 12, items 1 and 2: client connection limits per database and per user
(max_db_client_connections, max_user_client_connections), transaction_timeout,
and the [users] / [databases] settings PgBouncer takes per user and per
database, with PgBouncer's precedence: [users] over [databases] over the
global key.

Refusals are checked with pgwire.login_error (libpq loses the SQLSTATE of a
FATAL error at login).
"""

import time

import pytest

import pgwire
from harness import wait_for

APP_PASSWORD = "app_pw"

# A timeout of N seconds fires within N + 1/3 s (the janitor runs every 1/3 s);
# the bounds below leave room for a slow machine.
TIMEOUT_SLACK_S = 2.0


def login(pooler, dbname="app", user="app", password=APP_PASSWORD, timeout=5.0):
    return pgwire.login(pooler.host, pooler.port, user, dbname, password=password, timeout=timeout)


def refusal(pooler, dbname="app", user="app", password=APP_PASSWORD):
    return pgwire.login_error(pooler.host, pooler.port, user, dbname, password=password)


def users_section(**entries):
    """extra_ini text with a [users] section: name -> "key=value ..."."""
    return "\n[users]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items())


def pg_entry(pg, settings=""):
    return f"host={pg.host} port={pg.port} dbname=app {settings}".strip()


def console(pooler):
    return pooler.connect(dbname="pgsluice")


def show(pooler, what, name):
    """The SHOW DATABASES / SHOW USERS row of name, as a dict of column -> value."""
    with console(pooler) as conn:
        cur = conn.execute(f"SHOW {what}")
        cols = [d.name for d in cur.description]
        for row in cur.fetchall():
            if row[0] == name:
                return dict(zip(cols, row))
    raise AssertionError(f"SHOW {what} has no row {name!r}")


def backend_pid(sess):
    return int(sess.query("select pg_backend_pid()")[0][0])


# -- item 1: client connection limits ------------------------------------------------

def test_max_db_client_connections_refuses_the_client_over_the_limit(sluice):
    pooler = sluice(max_db_client_connections=2)
    with login(pooler) as first, login(pooler) as second:
        err = refusal(pooler)
        assert err.sqlstate == "53300", err
        assert err.severity == "FATAL"
        assert err.message == "client connections exceeded (max_db_client_connections)"
        # another database is not limited by app's clients
        with login(pooler, dbname="scramdb") as other:
            assert other.query("select 1") == [["1"]]
        assert first.query("select 1") == [["1"]]
        assert second.query("select 2") == [["2"]]
    # the refused client took no place: two fit again
    with login(pooler) as first, login(pooler) as second:
        assert first.query("select 3") == second.query("select 3") == [["3"]]


def test_max_db_client_connections_of_a_database_entry_wins_over_the_global_key(sluice, pg):
    pooler = sluice(max_db_client_connections=5,
                    databases={"limited": pg_entry(pg, "max_db_client_connections=1")})
    with login(pooler, dbname="limited") as first:
        assert first.query("select 1") == [["1"]]
        err = refusal(pooler, dbname="limited")
        assert (err.sqlstate, err.message) == \
            ("53300", "client connections exceeded (max_db_client_connections)"), err
        # app keeps the global limit of 5
        with login(pooler) as a, login(pooler) as b:
            assert a.query("select 1") == b.query("select 1") == [["1"]]
    with login(pooler, dbname="limited") as again:
        assert again.query("select 1") == [["1"]]


def test_max_user_client_connections_counts_a_user_across_databases(sluice):
    pooler = sluice(max_user_client_connections=2)
    with login(pooler) as first, login(pooler, dbname="scramdb") as second:
        err = refusal(pooler, dbname="md5db")
        assert err.sqlstate == "53300", err
        assert err.message == "client connections exceeded (max_user_client_connections)"
        # another login user is counted apart
        with login(pooler, user="pw_user", password="pw_pw", dbname="pwdb") as other:
            assert other.query("select 1") == [["1"]]
        assert first.query("select 1") == second.query("select 1") == [["1"]]
    with login(pooler) as again:
        assert again.query("select 1") == [["1"]]


def test_max_user_client_connections_of_a_users_entry_wins_over_the_global_key(sluice):
    pooler = sluice(max_user_client_connections=5,
                    extra_ini=users_section(pw_user="max_user_client_connections=1"))
    with login(pooler, user="pw_user", password="pw_pw", dbname="pwdb") as first:
        err = refusal(pooler, user="pw_user", password="pw_pw", dbname="pwdb")
        assert (err.sqlstate, err.message) == \
            ("53300", "client connections exceeded (max_user_client_connections)"), err
        with login(pooler) as a, login(pooler) as b:
            assert a.query("select 1") == b.query("select 1") == [["1"]]
        assert first.query("select 1") == [["1"]]


def test_admin_set_changes_the_client_limits(sluice):
    pooler = sluice()
    with login(pooler) as first:
        with console(pooler) as admin:
            admin.execute("SET max_db_client_connections = 1")
        err = refusal(pooler)
        assert err.message == "client connections exceeded (max_db_client_connections)", err
        with console(pooler) as admin:
            admin.execute("SET max_db_client_connections = 0")
            admin.execute("SET max_user_client_connections = 1")
            config = dict((r[0], r[1]) for r in admin.execute("SHOW CONFIG").fetchall())
        assert config["max_db_client_connections"] == "0"
        assert config["max_user_client_connections"] == "1"
        err = refusal(pooler, dbname="scramdb")
        assert err.message == "client connections exceeded (max_user_client_connections)", err
        assert first.query("select 1") == [["1"]]


def test_show_databases_and_show_users_show_client_limits_and_counts(sluice, pg):
    pooler = sluice(max_user_client_connections=7,
                    databases={"limited": pg_entry(pg, "max_db_client_connections=3")},
                    extra_ini=users_section(pw_user="max_user_client_connections=4 reserve_pool_size=2"))
    with login(pooler, dbname="limited") as a, login(pooler, dbname="limited") as b:
        assert a.query("select 1") == b.query("select 1") == [["1"]]
        db = show(pooler, "DATABASES", "limited")
        assert (db["max_client_connections"], db["current_client_connections"]) == (3, 2), db
        app_db = show(pooler, "DATABASES", "app")
        assert (app_db["max_client_connections"], app_db["current_client_connections"]) == (0, 0)
        user = show(pooler, "USERS", "app")
        assert (user["max_user_client_connections"], user["current_client_connections"]) == (7, 2), user
        pw_user = show(pooler, "USERS", "pw_user")
        assert pw_user["max_user_client_connections"] == 4, pw_user
        # text, right-aligned in 9 columns, as PgBouncer's SHOW USERS
        assert pw_user["reserve_pool_size"].strip() == "2", pw_user


# -- item 2: transaction_timeout ------------------------------------------------------

def test_transaction_timeout_ends_a_busy_transaction_with_25P04(sluice, pg):
    pg.query("drop table if exists p12_xact")
    pg.query("create table p12_xact (v int)")
    pg.query("alter table p12_xact owner to app")
    pooler = sluice(transaction_timeout=1, idle_transaction_timeout=0)
    try:
        with login(pooler) as sess:
            sess.query("begin")
            sess.query("insert into p12_xact values (1)")
            started = time.monotonic()
            # never idle: short statements one after another, as an ORM's loop
            with pytest.raises(pgwire.ServerError) as caught:
                for _ in range(40):
                    sess.query("select pg_sleep(0.1)")
            elapsed = time.monotonic() - started
            err = caught.value
            assert (err.sqlstate, err.severity, err.message) == ("25P04", "FATAL", "transaction timeout"), err
            assert 0.6 <= elapsed <= 1 + TIMEOUT_SLACK_S, f"fired after {elapsed:.2f} s"
            assert sess.is_closed_by_peer(), "client left connected after the timeout"
        assert pg.query("select count(*) from p12_xact")[0][0] == 0, "the timed-out transaction was committed"
        # autocommit statements shorter than the timeout, over a longer time, are not ended
        with login(pooler) as sess:
            for _ in range(6):
                sess.query("select pg_sleep(0.3)")
            assert sess.query("select 1") == [["1"]]
    finally:
        pg.query("drop table if exists p12_xact")


# -- item 2: [users] settings -------------------------------------------------------

USER_TIMEOUTS = {
    # key: (statements before waiting, SQLSTATE, message)
    "query_timeout": (["select pg_sleep(6)"], "57014", "query_timeout"),
    "transaction_timeout": (["begin", "select pg_sleep(6)"], "25P04", "transaction timeout"),
    "idle_transaction_timeout": (["begin", None], "25P03", "idle_transaction_timeout"),
    "client_idle_timeout": (["select 1", None], "57P05", "client_idle_timeout"),
}


@pytest.mark.parametrize("key", list(USER_TIMEOUTS))
def test_a_users_entry_sets_its_own_timeout(sluice, key):
    statements, sqlstate, message = USER_TIMEOUTS[key]
    pooler = sluice(pool_mode="transaction", extra_ini=users_section(app=f"{key}=1"))
    with login(pooler, timeout=10) as sess:
        started = time.monotonic()
        with pytest.raises(pgwire.ServerError) as caught:
            for sql in statements:
                if sql is None:
                    sess.read_until_ready()   # wait; the pooler ends the client by itself
                else:
                    sess.query(sql)
        elapsed = time.monotonic() - started
        err = caught.value
        assert (err.sqlstate, err.severity, err.message) == (sqlstate, "FATAL", message), err
        assert 0.6 <= elapsed <= 1 + TIMEOUT_SLACK_S, f"fired after {elapsed:.2f} s"
    # another user keeps the global setting (none)
    with login(pooler, user="pw_user", password="pw_pw", dbname="pwdb") as other:
        other.query("begin")
        other.query("select pg_sleep(1.5)")
        assert other.query("select 1") == [["1"]]
        other.query("commit")


def test_user_pool_mode_and_pool_size_take_precedence_over_the_database_entry(sluice, pg):
    """[databases] says session with one server; [users] says transaction with two."""
    pooler = sluice(databases={"sized": pg_entry(pg, "pool_size=1 pool_mode=session")},
                    extra_ini=users_section(app="pool_mode=transaction pool_size=2"))
    with login(pooler, dbname="sized", timeout=5) as a, login(pooler, dbname="sized", timeout=5) as b:
        # transaction pooling: one server serves both clients in turn
        assert backend_pid(a) == backend_pid(b)
        # pool_size 2: two transactions at once each have a server
        a.query("begin")
        b.query("begin")
        assert backend_pid(a) != backend_pid(b)
        a.query("commit")
        b.query("commit")
    # a user without an entry gets the database's session pooling
    with login(pooler, user="pw_user", password="pw_pw", dbname="sized") as c:
        pid = backend_pid(c)
        assert backend_pid(c) == pid
        assert show(pooler, "USERS", "app")["pool_mode"] == "transaction"


@pytest.mark.parametrize("where", ["users", "databases"])
def test_reserve_pool_size_per_user_or_database_serves_a_waiting_client(sluice, pg, where):
    """Global reserve_pool_size is 0: the entry's own reserve pool opens a server
    for a client that waited reserve_pool_timeout."""
    if where == "users":
        pooler = sluice(reserve_pool_size=0, reserve_pool_timeout=0.5, default_pool_size=1,
                        extra_ini=users_section(app="reserve_pool_size=1"))
    else:
        pooler = sluice(reserve_pool_size=0, reserve_pool_timeout=0.5, default_pool_size=1,
                        databases={"app": pg_entry(pg, "reserve_pool_size=1")})
    with login(pooler) as holder:
        holder.query("begin")   # session pooling: holder keeps the one server
        with login(pooler, timeout=5) as waiter:
            started = time.monotonic()
            assert waiter.query("select 1") == [["1"]]
            elapsed = time.monotonic() - started
            assert 0.3 <= elapsed <= 0.5 + TIMEOUT_SLACK_S, f"served after {elapsed:.2f} s"
            assert backend_pid(waiter) != backend_pid(holder)
        holder.query("commit")


# -- item 2: [databases] settings ---------------------------------------------------

def test_server_lifetime_of_a_database_entry_closes_its_servers(sluice, pg):
    pooler = sluice(pool_mode="transaction",
                    databases={"short": pg_entry(pg, "server_lifetime=1")})
    with login(pooler, dbname="short") as short, login(pooler) as long_lived:
        first_short, first_long = backend_pid(short), backend_pid(long_lived)
        time.sleep(1 + TIMEOUT_SLACK_S)
        assert backend_pid(short) != first_short, "server outlived the entry's server_lifetime"
        assert backend_pid(long_lived) == first_long, "the global server_lifetime (3600 s) changed"
    assert show(pooler, "DATABASES", "short")["server_lifetime"] == 1


def test_min_pool_size_of_a_forced_user_database_opens_servers_without_clients(sluice, pg):
    sluice(databases={"warm": pg_entry(pg, "user=pw_user min_pool_size=2")})
    wait_for(lambda: pg.pooler_backends(user="pw_user") == 2, 5,
             what="two servers of the forced user open at start")
    time.sleep(1)
    assert pg.pooler_backends(user="pw_user") == 2, "more than min_pool_size servers opened"


def drop_roles(pg):
    if pg.query("SELECT count(*) FROM pg_roles WHERE rolname = 'p12_role'")[0][0]:
        pg.query("REVOKE ALL ON DATABASE app FROM p12_role")
    pg.query("DROP ROLE IF EXISTS p12_role")
    pg.query("DROP ROLE IF EXISTS p12_lookup")


def test_auth_user_auth_query_and_auth_dbname_of_a_database_entry(sluice, pg, monkeypatch):
    """No global auth_user: only the entries that set their own look roles up,
    each with its own auth_query and in its own auth_dbname."""
    import harness
    drop_roles(pg)
    pg.query("CREATE ROLE p12_lookup LOGIN SUPERUSER PASSWORD 'lookup_pw'")
    pg.query("CREATE ROLE p12_role LOGIN PASSWORD 'role_pw'")
    pg.query("GRANT ALL ON DATABASE app TO p12_role")
    monkeypatch.setitem(harness.PASSWORDS, "p12_lookup", "lookup_pw")
    down_port = harness.free_port()
    pooler = sluice(auth_type="scram-sha-256", databases={
        "looked": pg_entry(pg, "auth_user=p12_lookup"),
        # a query that finds the role but no password: the login fails as for a wrong one
        "nopw": pg_entry(pg, "auth_user=p12_lookup auth_query='SELECT rolname, NULL::text "
                             "FROM pg_catalog.pg_authid WHERE rolname = $1'"),
        "elsewhere": pg_entry(pg, "auth_user=p12_lookup auth_dbname=down"),
        "down": f"host=127.0.0.1 port={down_port} dbname=app",
    })
    try:
        with pooler.connect(user="p12_role", password="role_pw", dbname="looked") as conn:
            assert conn.execute("select current_user").fetchone() == ("p12_role",)
        err = refusal(pooler, user="p12_role", password="role_pw", dbname="app")
        assert err.sqlstate == "28P01", err
        err = refusal(pooler, user="p12_role", password="role_pw", dbname="nopw")
        assert err.sqlstate == "28P01", err
        err = refusal(pooler, user="p12_role", password="role_pw", dbname="elsewhere")
        assert err.sqlstate == "08006", err
        assert err.message == 'could not look up user "p12_role" with auth_query', err
        # the cached answer of "looked" still logs in there
        with pooler.connect(user="p12_role", password="role_pw", dbname="looked") as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        pooler.stop()
        drop_roles(pg)
