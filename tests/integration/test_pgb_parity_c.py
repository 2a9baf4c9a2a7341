# SPDX-License-Identifier: PostgreSQL
"""Issue 12: PgBouncer keys pgsluice used to warn about and ignore, now applied
as PgBouncer 1.25 documents them (doc/config.md).

- disable_pqexec: a simple-protocol Query ends the client with FATAL 08P01
  "PQexec disallowed"; the extended protocol keeps working. The admin console,
  which takes only simple queries, stays usable (PgBouncer closes it too).
- server_round_robin: idle servers are reused oldest first, so every server of
  the pool takes turns; without it the most recently used one is reused (LIFO).
- tcp_defer_accept (default on, Linux): a TCP client is accepted once it has
  sent its first packet, so a silent connection holds no login slot.
- unix_socket_group: the unix socket file is given to that group; a group that
  does not exist stops the start with a clear error.
- autodb_idle_timeout: pools of databases served by the "*" entry that nobody
  used for that long are dropped (SHOW DATABASES / SHOW POOLS forget them) and
  come back on the next login.
"""

import grp
import os
import socket
import time

import psycopg
import pytest

import harness
import pgwire
from harness import wait_for


def admin_rows(pooler, sql):
    """Rows of an admin console command as dicts."""
    with psycopg.connect(pooler.dsn(dbname="pgbouncer"), autocommit=True,
                         cursor_factory=psycopg.ClientCursor) as admin:
        cur = admin.execute(sql)
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]


def login_clients(pooler):
    """SHOW LISTS' login_clients: connections accepted and not yet logged in."""
    for row in admin_rows(pooler, "SHOW LISTS"):
        if row["list"] == "login_clients":
            return row["items"]
    raise AssertionError("SHOW LISTS has no login_clients row")


# -- disable_pqexec ------------------------------------------------------------------------

def test_disable_pqexec_refuses_a_simple_query_with_08p01(sluice):
    pooler = sluice(disable_pqexec=1)
    with pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw") as sess:
        sess.send(b"Q", b"select 1\0")
        msg_type, body = sess.read()
        assert msg_type == "E"
        err = pgwire.ServerError(pgwire._parse_fields(body))
        assert (err.severity, err.sqlstate, err.message) == ("FATAL", "08P01", "PQexec disallowed")
        assert sess.is_closed_by_peer()
    assert 'client used "Query" packet type' in pooler.log_text(lines=None)


def test_disable_pqexec_keeps_the_extended_protocol(sluice):
    pooler = sluice(disable_pqexec=1, pool_mode="transaction")
    with pooler.connect() as conn:
        # with parameters, or prepared, psycopg 3 sends Parse/Bind/Execute/Sync
        assert conn.execute("select %s::int + 1", (41,)).fetchone() == (42,)
        assert conn.execute("select 'no parameters'", prepare=True).fetchone() == ("no parameters",)
        with pytest.raises(psycopg.OperationalError, match="PQexec disallowed"):
            conn.execute("select 'a simple Query'")
    # the admin console, which takes only simple queries, stays usable (PgBouncer closes it too)
    assert any(row["database"] == "app" for row in admin_rows(pooler, "SHOW POOLS"))


def test_simple_queries_are_allowed_by_default(sluice):
    pooler = sluice()
    with pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw") as sess:
        assert sess.query("select 1") == [["1"]]


def test_disable_pqexec_is_not_changed_by_set(sluice):
    pooler = sluice()
    with psycopg.connect(pooler.dsn(dbname="pgbouncer"), autocommit=True,
                         cursor_factory=psycopg.ClientCursor) as admin:
        with pytest.raises(psycopg.Error):
            admin.execute("SET disable_pqexec = 1")
    with pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw") as sess:
        assert sess.query("select 2") == [["2"]]


# -- server_round_robin --------------------------------------------------------------------

def backend_pids(pooler, n):
    """pg_backend_pid() of n transactions run one after another by one client."""
    with pooler.connect() as conn:
        conn.prepare_threshold = None   # psycopg's own Parse round trips would take servers too
        return [conn.execute("select pg_backend_pid()").fetchone()[0] for _ in range(n)]


def open_servers(pooler, count):
    """Make the pool hold count idle servers: count clients in open transactions at once."""
    conns = [pooler.connect(autocommit=False) for _ in range(count)]
    try:
        pids = {c.execute("select pg_backend_pid()").fetchone()[0] for c in conns}
        assert len(pids) == count
    finally:
        for c in conns:
            c.rollback()
            c.close()
    return pids


@pytest.mark.parametrize("round_robin", [0, 1])
def test_server_round_robin_spreads_transactions_over_idle_servers(sluice, round_robin):
    pooler = sluice(pool_mode="transaction", default_pool_size=3, server_round_robin=round_robin)
    servers = open_servers(pooler, 3)
    wait_for(lambda: sum(r["sv_idle"] for r in admin_rows(pooler, "SHOW POOLS")
                         if r["database"] == "app") == 3, 5, what="3 idle servers")
    pids = backend_pids(pooler, 6)
    assert set(pids) <= servers
    if round_robin:
        # FIFO: each server in turn, the same order twice
        assert len(set(pids)) == 3
        assert pids[:3] == pids[3:]
    else:
        # LIFO: the server just released is the next one taken
        assert len(set(pids)) == 1


def test_server_round_robin_can_be_turned_on_by_reload(sluice):
    pooler = sluice(pool_mode="transaction", default_pool_size=2)
    open_servers(pooler, 2)
    assert len(set(backend_pids(pooler, 4))) == 1
    pooler.reload(server_round_robin=1)
    wait_for(lambda: any(r["key"] == "server_round_robin" and r["value"] == "1"
                         for r in admin_rows(pooler, "SHOW CONFIG")), 5, what="reload")
    assert len(set(backend_pids(pooler, 4))) == 2


# -- tcp_defer_accept ----------------------------------------------------------------------

@pytest.mark.parametrize("defer", [None, 0])
def test_tcp_defer_accept_holds_back_silent_tcp_connections(sluice, defer):
    pooler = sluice(tcp_defer_accept=defer)   # None: the default, on
    assert login_clients(pooler) == 0
    silent = socket.create_connection((pooler.host, pooler.port), timeout=5)
    try:
        if defer == 0:
            wait_for(lambda: login_clients(pooler) == 1, 5, what="the silent client accepted")
        else:
            time.sleep(0.5)   # what must NOT happen: give the accept every chance
            assert login_clients(pooler) == 0
        # once it speaks it is a client like any other
        silent.sendall(b"\0\0\0\x08\x04\xd2\x16\x2f")     # SSLRequest
        assert silent.recv(1) in (b"N", b"S")
        wait_for(lambda: login_clients(pooler) == 1, 5, what="the client accepted")
    finally:
        silent.close()
    with pooler.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_tcp_defer_accept_shows_in_show_config(sluice):
    pooler = sluice()
    rows = {r["key"]: r for r in admin_rows(pooler, "SHOW CONFIG")}
    assert rows["tcp_defer_accept"]["value"] == "1"
    assert rows["tcp_defer_accept"]["default"] == "1"


# -- unix_socket_group ---------------------------------------------------------------------

def other_group():
    """A group this process may give files to other than its own: any (root), else a
    supplementary one; None when there is none."""
    mine = os.getgid()
    if os.geteuid() == 0:
        for g in grp.getgrall():
            if g.gr_gid != mine:
                return g
        return None
    for gid in os.getgroups():
        if gid != mine:
            return grp.getgrgid(gid)
    return None


def test_unix_socket_group_gives_the_socket_to_the_group(sluice):
    group = other_group()
    if group is None:
        pytest.skip("this account can give files to no group but its own")
    pooler = sluice(unix_socket_group=group.gr_name, unix_socket_mode="0770")
    path = os.path.join(str(pooler.workdir), f".s.PGSQL.{pooler.port}")
    st = os.stat(path)
    assert st.st_gid == group.gr_gid
    assert st.st_mode & 0o777 == 0o770
    with pooler.connect(host=str(pooler.workdir)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_unix_socket_group_that_does_not_exist_stops_the_start(sluice):
    pooler = sluice(unix_socket_group="no_such_group_pgsluice", start=False)
    result = harness.run_binary([pooler.ini_path], timeout=20)
    assert result.returncode != 0
    assert 'unix_socket_group "no_such_group_pgsluice" does not exist' in \
        result.stdout + pooler.log_text(lines=None)


# -- autodb_idle_timeout -------------------------------------------------------------------

def pool_databases(pooler):
    return {r["database"] for r in admin_rows(pooler, "SHOW POOLS")}


def database_names(pooler):
    return {r["name"] for r in admin_rows(pooler, "SHOW DATABASES")}


def test_autodb_idle_timeout_drops_unused_auto_databases(sluice, pg):
    pooler = sluice(autodb_idle_timeout=1, server_idle_timeout=0.5,
                    databases={"*": f"host={pg.host} port={pg.port} dbname=app"})
    with pooler.connect(dbname="auto_one") as conn:
        assert conn.execute("select current_database()").fetchone() == ("app",)
        assert "auto_one" in pool_databases(pooler)
        assert "auto_one" in database_names(pooler)
        time.sleep(1.5)   # in use: the timeout must not drop it under a connected client
        assert "auto_one" in pool_databases(pooler)
        assert conn.execute("select 1").fetchone() == (1,)
    # its server idles out (server_idle_timeout), then the pool goes
    wait_for(lambda: "auto_one" not in pool_databases(pooler), 10, what="auto_one dropped")
    assert "auto_one" not in database_names(pooler)
    assert "app" in database_names(pooler)           # a configured database stays
    assert "dropping database 'auto_one'" in pooler.log_text(lines=None)
    # and comes back on the next login
    with pooler.connect(dbname="auto_one") as conn:
        assert conn.execute("select 2").fetchone() == (2,)
    assert "auto_one" in pool_databases(pooler)


def test_autodb_idle_timeout_zero_keeps_auto_databases(sluice, pg):
    pooler = sluice(autodb_idle_timeout=0, server_idle_timeout=0.5,
                    databases={"*": f"host={pg.host} port={pg.port} dbname=app"})
    with pooler.connect(dbname="auto_two") as conn:
        conn.execute("select 1")
    wait_for(lambda: all(r["sv_idle"] == 0 for r in admin_rows(pooler, "SHOW POOLS")
                         if r["database"] == "auto_two"), 10, what="its server closed")
    time.sleep(1.5)
    assert "auto_two" in pool_databases(pooler)
