# SPDX-License-Identifier: PostgreSQL
"""PgBouncer behaviour parity, part B (issue 12): authentication outcomes and
their texts as PgBouncer 1.25 reports them, so scripts and monitoring that
match on PgBouncer's words keep working. One test per behaviour.
"""

import hashlib
import threading
import socket
import ssl
import struct

import psycopg
import pytest

import harness
from test_tls import certs, client_tls  # noqa: F401
from test_replication import REPL_PW, repl_role, walsenders  # noqa: F401

LOOKUP_QUERY = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"


def md5_secret(user, password):
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def login_failure(pooler, **params):
    """The text libpq reports (message, DETAIL and HINT lines) for a refused login."""
    with pytest.raises(psycopg.OperationalError) as caught:
        pooler.connect(**params).close()
    return str(caught.value)


@pytest.fixture
def lookup_roles(pg, monkeypatch):
    """pb_lookup (auth_user, in auth_file) and pb_role (only in PostgreSQL)."""
    pg.query("DROP ROLE IF EXISTS pb_role")
    pg.query("DROP ROLE IF EXISTS pb_lookup")
    pg.query("CREATE ROLE pb_lookup LOGIN SUPERUSER PASSWORD 'lookup_pw'")
    pg.query("CREATE ROLE pb_role LOGIN PASSWORD 'role_pw'")
    pg.query("GRANT ALL ON DATABASE app TO pb_role")
    monkeypatch.setitem(harness.PASSWORDS, "pb_lookup", "lookup_pw")
    yield
    pg.query("REVOKE ALL ON DATABASE app FROM pb_role")
    pg.query("DROP ROLE IF EXISTS pb_role")
    pg.query("DROP ROLE IF EXISTS pb_lookup")


def looked_up_entry(pg, extra=""):
    return f"host={pg.host} port={pg.port} dbname=app {extra}".strip()


# -- auth_query outcomes (PgBouncer's test_auth.py: test_auth_user, test_auth_dbname_*) --

def test_auth_query_role_that_does_not_exist_is_no_such_user(sluice, pg, lookup_roles):
    pooler = sluice(auth_type="md5", auth_user="pb_lookup", auth_query=LOOKUP_QUERY,
                    databases={"looked": looked_up_entry(pg)})
    with pooler.connect(user="pb_role", password="role_pw", dbname="looked") as conn:
        assert conn.execute("select current_user").fetchone() == ("pb_role",)
    text = login_failure(pooler, user="pb_nobody", password="x", dbname="looked")
    assert "no such user" in text, text
    text = login_failure(pooler, user="pb_role", password="wrong", dbname="looked")
    assert "password authentication failed" in text, text


def test_auth_query_that_fails_in_postgresql_is_a_config_error(sluice, pg, lookup_roles):
    bad = "SELECT usename, passwd FROM not_pg_shadow WHERE usename = $1"
    pooler = sluice(auth_type="md5", auth_user="pb_lookup",
                    databases={"looked": looked_up_entry(pg, f"auth_query='{bad}'")})
    text = login_failure(pooler, user="pb_role", password="role_pw", dbname="looked")
    assert "bouncer config error" in text, text
    assert '"not_pg_shadow" does not exist' in pooler.log_text(lines=200)


def test_auth_dbname_that_is_not_configured_is_a_config_error(sluice, pg, lookup_roles):
    pooler = sluice(auth_type="md5", auth_user="pb_lookup", auth_dbname="pb_unconfigured",
                    databases={"looked": looked_up_entry(pg),
                               "own": looked_up_entry(pg, "auth_dbname=looked")})
    text = login_failure(pooler, user="pb_role", password="role_pw", dbname="looked")
    assert "bouncer config error" in text, text
    assert 'authentication database "pb_unconfigured" is not configured' in pooler.log_text(lines=200)
    # an entry's own auth_dbname wins over the global one
    with pooler.connect(user="pb_role", password="role_pw", dbname="own") as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_auth_dbname_that_is_disabled_refuses_the_login(sluice, pg, lookup_roles):
    pooler = sluice(auth_type="md5", auth_user="pb_lookup",
                    databases={"authdb": looked_up_entry(pg),
                               "looked": looked_up_entry(pg, "auth_dbname=authdb")})
    with pooler.connect(dbname="pgbouncer") as admin:
        admin.execute("DISABLE authdb")
    text = login_failure(pooler, user="pb_role", password="role_pw", dbname="looked")
    assert 'authentication database "authdb" is disabled' in text, text


def test_admin_console_as_auth_dbname_of_an_entry_is_a_config_error(sluice, pg, lookup_roles):
    pooler = sluice(auth_type="md5", auth_user="pb_lookup",
                    databases={"looked": looked_up_entry(pg, "auth_dbname=pgbouncer"),
                               "*": f"host={pg.host} port={pg.port} auth_dbname=pgbouncer"})
    for dbname in ("looked", "app_elsewhere", "pgbouncer"):
        text = login_failure(pooler, user="pb_role", password="role_pw", dbname=dbname)
        assert "bouncer config error" in text, (dbname, text)
    assert 'cannot use the reserved "pgbouncer" database as an auth_dbname' in pooler.log_text(lines=200)


def test_admin_console_as_global_auth_dbname_keeps_the_pooler_from_starting(sluice, pg):
    with pytest.raises(Exception) as caught:
        sluice(auth_type="md5", auth_user="app", auth_dbname="pgbouncer")
    assert 'cannot use the reserved "pgbouncer" database as an auth_dbname' in str(caught.value)


# -- password types (test_scram_server, test_scram_client) ---------------------------------

def test_server_scram_login_with_an_md5_hash_in_auth_file_says_wrong_password_type(sluice, pg, monkeypatch):
    pg.query("DROP ROLE IF EXISTS pb_scram")
    pg.query("CREATE ROLE pb_scram LOGIN PASSWORD 'scram_pw'")      # stored as SCRAM
    pg.query("GRANT ALL ON DATABASE app TO pb_scram")
    monkeypatch.setitem(harness.PASSWORDS, "pb_scram", md5_secret("pb_scram", "scram_pw"))
    try:
        pooler = sluice(databases={"wrongtype": f"host={pg.host} port={pg.port} dbname=app user=pb_scram"})
        text = login_failure(pooler, dbname="wrongtype")
        assert "wrong password type" in text, text
    finally:
        pg.query("REVOKE ALL ON DATABASE app FROM pb_scram")
        pg.query("DROP ROLE IF EXISTS pb_scram")


def test_scram_client_login_against_an_md5_hash_is_an_authentication_failure(sluice, monkeypatch):
    monkeypatch.setitem(harness.PASSWORDS, "pb_md5only", md5_secret("pb_md5only", "foo"))
    pooler = sluice(auth_type="scram-sha-256")
    for password in ("foo", "wrong"):
        text = login_failure(pooler, user="pb_md5only", password=password)
        assert "password authentication failed" in text or "SASL authentication failed" in text, text


# -- auth_user / auth_query details (test_auth_user_*_trust_*, test_auth_query_no_set_commands) --

def test_trust_with_auth_query_and_a_role_that_does_not_exist_is_no_such_user(sluice, pg, lookup_roles):
    # over PostgreSQL's unix socket, which trusts every role: no server password is needed
    pooler = sluice(auth_type="trust", auth_user="pb_lookup", auth_query=LOOKUP_QUERY,
                    databases={"looked": f"host={pg.socket_dir} port={pg.port} dbname=app"})
    text = login_failure(pooler, user="pb_nobody", password="x", dbname="looked")
    assert "no such user" in text, text
    # a role the query finds logs in under trust, whatever password it gives
    with pooler.connect(user="pb_role", password="anything", dbname="looked") as conn:
        assert conn.execute("select current_user").fetchone() == ("pb_role",)


def test_auth_user_without_a_password_in_auth_file_looks_roles_up(sluice, pg, lookup_roles):
    """auth_user need not be in auth_file when PostgreSQL trusts it (here: its unix socket)."""
    pg.query("DROP ROLE IF EXISTS pb_nopw_lookup")
    pg.query("CREATE ROLE pb_nopw_lookup LOGIN SUPERUSER")
    try:
        local = f"host={pg.socket_dir} port={pg.port} dbname=app"
        pooler = sluice(auth_type="md5", auth_user="pb_nopw_lookup", auth_dbname="local",
                        databases={"local": local, "looked": looked_up_entry(pg)})
        with pooler.connect(user="pb_role", password="role_pw", dbname="looked") as conn:
            assert conn.execute("select current_user").fetchone() == ("pb_role",)
        text = login_failure(pooler, user="pb_role", password="wrong", dbname="looked")
        assert "password authentication failed" in text, text
    finally:
        pg.query("DROP ROLE IF EXISTS pb_nopw_lookup")


def test_auth_query_may_call_a_function_by_its_unqualified_name(sluice, pg, lookup_roles):
    """auth_user's own search_path, as PgBouncer; client settings never reach the lookup."""
    pg.query("""CREATE OR REPLACE FUNCTION public.pb_get_auth(name text)
                RETURNS TABLE(usename name, passwd text) LANGUAGE plpgsql SECURITY DEFINER AS $$
                BEGIN
                  IF current_setting('search_path') LIKE '%pb_evil%' THEN
                    RAISE EXCEPTION 'client search_path reached the auth_query';
                  END IF;
                  RETURN QUERY SELECT s.usename, s.passwd FROM pg_shadow s WHERE s.usename = name;
                END $$""")
    try:
        pooler = sluice(auth_type="md5", auth_user="pb_lookup",
                        auth_query="SELECT * FROM pb_get_auth($1)",
                        track_extra_parameters="search_path",
                        databases={"looked": looked_up_entry(pg)})
        with pooler.connect(user="pb_role", password="role_pw", dbname="looked",
                            options="-c search_path=pb_evil,public") as conn:
            assert conn.execute("select current_user").fetchone() == ("pb_role",)
    finally:
        pg.query("DROP FUNCTION IF EXISTS public.pb_get_auth(text)")


# -- DNS (issue 12 item 3; SHOW DNS_HOSTS as PgBouncer) -------------------------------------

def admin_rows(pooler, sql):
    with pooler.connect(dbname="pgbouncer") as admin:
        return admin.execute(sql).fetchall()


def test_show_dns_hosts_lists_a_resolved_server_host_name_for_dns_max_ttl(sluice, pg):
    pooler = sluice(dns_max_ttl=30, databases={"byname": f"host=localhost port={pg.port} dbname=app"})
    assert admin_rows(pooler, "SHOW DNS_HOSTS") == []
    with pooler.connect(dbname="byname") as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    rows = admin_rows(pooler, "SHOW DNS_HOSTS")
    assert [r[0] for r in rows] == ["localhost"], rows
    host, ttl, addrs = rows[0]
    assert 0 < ttl <= 30, rows
    assert "127.0.0.1" in addrs.split(",") or "::1" in addrs.split(","), rows
    # a numeric address is never listed, and SHOW DNS_ZONES keeps PgBouncer's columns
    with pooler.connect() as conn:
        conn.execute("select 1")
    assert [r[0] for r in admin_rows(pooler, "SHOW DNS_HOSTS")] == ["localhost"]
    with pooler.connect(dbname="pgbouncer") as admin:
        cur = admin.execute("SHOW DNS_ZONES")
        assert [d.name for d in cur.description] == ["zonename", "serial", "count"]
        assert cur.fetchall() == []


def test_dns_max_ttl_zero_keeps_no_answer(sluice, pg):
    pooler = sluice(dns_max_ttl=0, databases={"byname": f"host=localhost port={pg.port} dbname=app"})
    with pooler.connect(dbname="byname") as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert admin_rows(pooler, "SHOW DNS_HOSTS") == []


def test_a_name_that_does_not_exist_is_kept_for_dns_nxdomain_ttl(sluice, pg):
    bad = "pgsluice-no-such-host.invalid"
    try:
        socket.getaddrinfo(bad, 5432)
        pytest.skip(f"{bad} resolves here")
    except socket.gaierror as e:
        if e.errno not in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            pytest.skip(f"no resolver that answers NXDOMAIN here ({e})")
    pooler = sluice(dns_nxdomain_ttl=30, server_login_retry=0, query_wait_timeout=3,
                    databases={"nowhere": f"host={bad} port={pg.port} dbname=app"})
    with pytest.raises(psycopg.OperationalError) as caught:
        pooler.connect(dbname="nowhere").close()
    assert f'could not resolve host "{bad}"' in str(caught.value), caught.value
    rows = admin_rows(pooler, "SHOW DNS_HOSTS")
    assert [(r[0], r[2]) for r in rows] == [(bad, "")], rows
    assert 0 < rows[0][1] <= 30


# -- server TLS settings on reload (test_ssl.py: test_servers_*_tls_*) ------------------------

def server_states(pooler):
    with pooler.connect(dbname="pgbouncer") as admin:
        cur = admin.execute("SHOW SERVERS")
        names = [d.name for d in cur.description]
        return [dict(zip(names, row))["state"] for row in cur.fetchall()]


def test_reload_without_a_tls_change_keeps_the_servers(sluice):
    pooler = sluice(pool_mode="transaction", server_tls_sslmode="disable")
    with pooler.connect() as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()
        pooler.reload()
        harness.wait_for(lambda: "reload" in pooler.log_text(lines=400).lower(), 5, what="the reload")
        assert conn.execute("select pg_backend_pid()").fetchone() == pid
    assert "database configuration changed" not in pooler.log_text(lines=400)


def test_server_tls_change_closes_servers_as_database_configuration_changed(sluice):
    pooler = sluice(pool_mode="session", server_tls_sslmode="disable", default_pool_size=2)
    busy = pooler.connect()
    busy.execute("select 1")
    with pooler.connect() as idle:      # a second server, idle once this client leaves
        idle.execute("select 1")
    harness.wait_for(lambda: "idle" in server_states(pooler), 5, what="an idle server")
    pooler.reload(server_tls_sslmode="allow")
    # the idle server at once, the busy one when its client leaves: PgBouncer's words for both
    harness.wait_for(lambda: pooler.log_text(lines=400).count("closing because: database configuration changed") >= 1,
                     5, what="the idle server closed")
    busy.close()
    harness.wait_for(lambda: pooler.log_text(lines=400).count("closing because: database configuration changed") >= 2,
                     5, what="the busy server closed once released")
    with pooler.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


# -- host lists in the log (test_host_strategy.py) ------------------------------------------

def test_host_list_log_names_the_host_that_failed_and_the_one_connected(sluice, pg):
    dead = harness.free_port()
    # pool_size=1: the next client waits for the one server's reset instead of opening
    # a second one when the machine is loaded (pytest -n), so one connect is logged
    pooler = sluice(databases={"bad_first": f"host=127.0.0.1,127.0.0.1 port={dead},{pg.port} dbname=app "
                                            "pool_size=1"})
    for _ in range(3):
        with pooler.connect(dbname="bad_first") as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    log = pooler.logfile.read_text()
    assert log.count(f"@127.0.0.1:{dead} closing because: connect failed") == 1, log
    assert log.count(f"@127.0.0.1:{pg.port} new connection to server") == 1, log


def test_host_list_with_a_name_that_does_not_resolve_logs_server_dns_lookup_failed(sluice, pg):
    bad = "pgsluice-no-such-host.invalid"
    try:
        socket.getaddrinfo(bad, 5432)
        pytest.skip(f"{bad} resolves here")
    except socket.gaierror as e:
        if e.errno not in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            pytest.skip(f"no resolver that answers NXDOMAIN here ({e})")
    pooler = sluice(databases={"bad_first": f"host={bad},127.0.0.1 port={pg.port} dbname=app"})
    with pooler.connect(dbname="bad_first") as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    log = pooler.logfile.read_text()
    assert log.count("closing because: server DNS lookup failed") == 1, log
    assert log.count(f"@127.0.0.1:{pg.port} new connection to server") == 1, log


# -- replication (test_replication.py: test_*_rep_unprivileged) -----------------------------

def test_replication_login_refused_by_postgresql_says_login_failed(sluice):
    pooler = sluice()
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(pooler.dsn(password="app_pw", replication="database")).close()
    text = str(caught.value)
    assert "login failed" in text, text
    assert "WAL sender" in text or "replication role" in text, text      # PostgreSQL's own words kept
    assert "closing because: login failed (age" in pooler.logfile.read_text()


# -- TLS end of stream (test_ssl_eof.py) ------------------------------------------------------

def test_tls_client_gone_without_close_notify_is_an_end_of_stream(sluice, certs):
    pooler = sluice(**client_tls(certs))
    sock = socket.create_connection((pooler.host, pooler.port))
    port = sock.getsockname()[1]
    try:
        sock.sendall(struct.pack("!II", 8, 80877103))      # SSLRequest
        assert sock.recv(1) == b"S"
        ctx = ssl.create_default_context(cafile=str(certs.ca.crt))
        ctx.check_hostname = False
        tls = ctx.wrap_socket(sock, server_hostname="localhost")
        # read what the server sent after the handshake (TLS 1.3 session tickets), so
        # the close below is a FIN and not a reset for unread data
        tls.settimeout(0.3)
        try:
            tls.recv(1)
        except (socket.timeout, ssl.SSLError):
            pass
        tls.close()                                          # no close_notify
    finally:
        sock.close()
    harness.wait_for(lambda: f"@127.0.0.1:{port} closing because" in pooler.logfile.read_text(), 5,
                     what="the TLS client's close logged")
    log = pooler.logfile.read_text()
    assert "unexpected eof while reading" not in log, log


# -- a client that does not read (test_sbuf_loopcnt.py) -------------------------------------

def test_a_client_that_leaves_a_large_result_unread_does_not_stop_others(sluice):
    pooler = sluice(pool_mode="statement", extra_ini="sbuf_loopcnt = 1")   # warned about, ignored
    stalled = pooler.connect()
    try:
        stalled.pgconn.send_query(b"SELECT repeat('x', 8192) FROM generate_series(1, 20000)")
        stalled.pgconn.flush()
        harness.wait_for(lambda: "active" in server_states(pooler), 5, what="the large result under way")
        with pooler.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            rows = conn.execute("SELECT repeat('x', 200) FROM generate_series(1, 5000)").fetchall()
            assert len(rows) == 5000
        with pooler.connect(dbname="pgbouncer") as admin:
            assert admin.execute("SHOW VERSION").fetchone()
    finally:
        stalled.close()


# -- peering (test_peering.py: test_peering_default_port) -----------------------------------

def test_show_peers_lists_the_own_entry_with_the_default_port(sluice):
    pooler = sluice(peer_id=1, extra_ini="\n[peers]\n1 = host=localhost\n")
    rows = admin_rows(pooler, "SHOW PEERS")
    assert [(r[0], r[1], r[2]) for r in rows] == [(1, "localhost", 6432)], rows


# -- auth_query with an MD5-stored role (known defect to check, issue 12 item 7) ------------

@pytest.mark.parametrize("auth_type", ["md5", "plain", "scram-sha-256"])
def test_auth_query_with_an_md5_stored_role(sluice, pg, lookup_roles, auth_type):
    pg.query("DROP ROLE IF EXISTS pb_md5role")
    pg.query("SET password_encryption = 'md5'; CREATE ROLE pb_md5role LOGIN PASSWORD 'md5_secret'")
    try:
        assert pg.query("SELECT rolpassword LIKE 'md5%' FROM pg_authid WHERE rolname = 'pb_md5role'") == [(True,)]
        # the server leg over PostgreSQL's unix socket (trust): this checks the client leg
        pooler = sluice(auth_type=auth_type, auth_user="pb_lookup",
                        databases={"looked": f"host={pg.socket_dir} port={pg.port} dbname=app"})
        if auth_type == "scram-sha-256":
            # an MD5 hash cannot verify SCRAM: PostgreSQL's outcome, 28P01
            text = login_failure(pooler, user="pb_md5role", password="md5_secret", dbname="looked")
            assert "password authentication failed" in text, text
            return
        with pooler.connect(user="pb_md5role", password="md5_secret", dbname="looked") as conn:
            assert conn.execute("select current_user").fetchone() == ("pb_md5role",)
        text = login_failure(pooler, user="pb_md5role", password="wrong", dbname="looked")
        assert "password authentication failed" in text, text
    finally:
        pg.query("DROP ROLE IF EXISTS pb_md5role")


# -- replication servers count against pool_size (test_replication.py: test_replication_pool_size*) --

def repl_pooler(sluice, pg, repl_role, **overrides):
    entry = f"host={pg.host} port={pg.port} dbname=app user={repl_role} password={REPL_PW} pool_size=2"
    return sluice(pool_mode="session", databases={"repl2": entry}, **overrides)


def repl_connect(pooler):
    return psycopg.connect(pooler.dsn(dbname="repl2", password="app_pw", replication="database"),
                           autocommit=True, cursor_factory=psycopg.ClientCursor)


def test_replication_clients_wait_for_room_in_pool_size(sluice, pg, repl_role):
    pooler = repl_pooler(sluice, pg, repl_role)
    held = [repl_connect(pooler) for _ in range(2)]
    third = {}

    def connect_third():
        try:
            third["conn"] = repl_connect(pooler)
        except Exception as e:    # reported below
            third["error"] = e

    t = threading.Thread(target=connect_third)
    try:
        assert walsenders(pg) == 2
        t.start()
        # the third client logged in to pgsluice and waits: no third server
        harness.wait_for(lambda: sum(1 for r in admin_rows(pooler, "SHOW CLIENTS")) >= 3 + 1, 10,
                         what="the third replication client waiting")
        assert walsenders(pg) == 2
        held.pop().close()
        t.join(10)
        assert "error" not in third, third
        assert third["conn"].execute("IDENTIFY_SYSTEM").fetchone()
        assert walsenders(pg) == 2
    finally:
        t.join(10)
        for c in held + [third.get("conn")]:
            if c is not None:
                c.close()


def test_replication_client_evicts_an_idle_server_of_a_full_pool(sluice, pg, repl_role):
    pooler = repl_pooler(sluice, pg, repl_role)
    a = pooler.connect(dbname="repl2", password="app_pw")
    b = pooler.connect(dbname="repl2", password="app_pw")
    a.execute("select 1")
    b.execute("select 1")
    a.close()
    b.close()
    harness.wait_for(lambda: server_states(pooler).count("idle") == 2, 5, what="two idle servers")
    with repl_connect(pooler) as conn:
        assert conn.execute("IDENTIFY_SYSTEM").fetchone()
    log = pooler.logfile.read_text()
    assert log.count("closing because: evicted for pool_size") == 1, log


# -- a [users] entry for a role known only through auth_query (test_auth_query_works_with_configured_users) --

def test_users_entry_of_a_role_looked_up_with_auth_query_applies(sluice, pg, lookup_roles):
    pooler = sluice(auth_type="md5", auth_user="pb_lookup", pool_mode="session",
                    extra_ini="\n[users]\npb_role = pool_mode=statement\n",
                    databases={"looked": looked_up_entry(pg)})
    with pooler.connect(user="pb_role", password="role_pw", dbname="looked") as conn:
        with pytest.raises(psycopg.OperationalError):
            conn.execute("BEGIN")
    harness.wait_for(lambda: "closing because: transaction blocks not allowed in statement pooling mode"
                     in pooler.logfile.read_text(), 5, what="PgBouncer's words in the log")


def test_auth_user_with_only_a_hash_in_auth_file_is_named_in_the_log(sluice, pg, lookup_roles, monkeypatch):
    """A known difference: pgsluice's lookup connection (libpq) needs auth_user's plain password."""
    monkeypatch.setitem(harness.PASSWORDS, "pb_lookup", md5_secret("pb_lookup", "lookup_pw"))
    pooler = sluice(auth_type="md5", auth_user="pb_lookup", databases={"looked": looked_up_entry(pg)})
    text = login_failure(pooler, user="pb_role", password="role_pw", dbname="looked")
    assert 'could not look up user "pb_role" with auth_query' in text, text
    assert ('auth_file holds only a hash of auth_user "pb_lookup"' in pooler.logfile.read_text())
