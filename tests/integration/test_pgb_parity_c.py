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
- server_tls13_ciphers, client_tls_ecdhcurve, client_tls_dheparams: what the
  TLS handshakes on either leg may use (openssl s_client, pg_stat_ssl).
- tcp_socket_buffer: SO_SNDBUF and SO_RCVBUF of client and server sockets.
- resolv_conf: server host names asked of that file's name servers.
- auth_type = pam (and hba pam lines) with auth_pam_confdir: pam_permit,
  pam_deny and pam_exec, as PgBouncer's test_auth.py test_pam_*.
"""

import grp
import os
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest

import harness
import pgwire
from harness import wait_for
from test_p12_keys import peer_sockets
# the TLS module's certificates and PostgreSQL with ssl = on (module-scoped fixtures)
from test_tls import certs, client_tls, pg_tls  # noqa: F401


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


# -- server_lifetime at release (PgBouncer's release_server) -------------------------------

def test_server_lifetime_zero_uses_each_server_once(sluice):
    pooler = sluice(pool_mode="transaction", server_lifetime=0)
    with pooler.connect() as conn:
        conn.prepare_threshold = None
        pids = [conn.execute("select pg_backend_pid()").fetchone()[0] for _ in range(4)]
    assert len(set(pids)) == 4, pids
    assert "server lifetime over" in pooler.log_text(lines=None)


def test_server_lifetime_retires_a_server_that_is_never_idle(sluice):
    # one client keeps its pool's only server busy without a pause: the janitor never
    # sees it idle, so the lifetime must be enforced when the server is released
    pooler = sluice(pool_mode="transaction", server_lifetime=1, default_pool_size=1)
    with pooler.connect() as conn:
        conn.prepare_threshold = None
        first = conn.execute("select pg_backend_pid()").fetchone()[0]
        deadline = time.monotonic() + 10
        pid = first
        while pid == first and time.monotonic() < deadline:
            pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    assert pid != first, "a busy server outlived server_lifetime"


# -- TLS: server_tls13_ciphers, client_tls_ecdhcurve, client_tls_dheparams ----------------

def s_client(pooler, *args):
    """openssl s_client through the pooler's SSLRequest (-starttls postgres); True when
    the TLS handshake completed."""
    out = subprocess.run(["openssl", "s_client", "-connect", f"{pooler.host}:{pooler.port}",
                          "-starttls", "postgres", *args], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=20)
    return out.returncode == 0 and "Cipher is (NONE)" not in out.stdout, out.stdout


def test_server_tls13_ciphers_picks_the_suite_towards_postgresql(sluice, certs, pg_tls):
    def server_cipher(**keys):
        pooler = sluice(server_tls_sslmode="require", **keys)
        with pooler.connect() as conn:
            return conn.execute("SELECT version, cipher FROM pg_stat_ssl "
                                "WHERE pid = pg_backend_pid()").fetchone()
    # OpenSSL prefers AES-256-GCM; pgsluice offers PostgreSQL only ChaCha20
    assert server_cipher(server_tls13_ciphers="TLS_CHACHA20_POLY1305_SHA256") == \
        ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256")
    assert server_cipher() == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")


def test_server_tls13_ciphers_invalid_stops_start_up(sluice):
    pooler = sluice(start=False, server_tls13_ciphers="NOT_A_SUITE")
    result = harness.run_binary([pooler.ini_path], timeout=20)
    assert result.returncode != 0
    assert "server_tls13_ciphers" in result.stdout + pooler.log_text(lines=None)


def test_client_tls_ecdhcurve_is_the_only_group_offered(sluice, certs):
    pooler = sluice(**client_tls(certs, client_tls_ecdhcurve="secp384r1"))
    ok, out = s_client(pooler, "-groups", "P-384")
    assert ok, out
    ok, out = s_client(pooler, "-groups", "P-256")
    assert not ok, out
    # auto (the default): OpenSSL's groups, P-256 among them
    pooler = sluice(**client_tls(certs))
    ok, out = s_client(pooler, "-groups", "P-256")
    assert ok, out


def test_client_tls_ecdhcurve_unknown_stops_start_up(sluice, certs):
    pooler = sluice(start=False, **client_tls(certs, client_tls_ecdhcurve="no-such-curve"))
    result = harness.run_binary([pooler.ini_path], timeout=20)
    assert result.returncode != 0
    assert "client_tls_ecdhcurve" in result.stdout + pooler.log_text(lines=None)


@pytest.fixture(scope="module")
def rsa_cert(tmp_path_factory):
    """A self-signed RSA certificate: TLS 1.2's DHE suites need an RSA key (DHE-RSA-*)."""
    d = tmp_path_factory.mktemp("rsa")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(d / "rsa.key"),
                    "-out", str(d / "rsa.crt")], check=True, capture_output=True, timeout=60)
    return d / "rsa.crt", d / "rsa.key"


@pytest.mark.parametrize("dheparams,dhe_works", [("auto", True), ("legacy", True), ("none", False)])
def test_client_tls_dheparams_decides_whether_dhe_suites_work(sluice, rsa_cert, dheparams, dhe_works):
    crt, key = rsa_cert
    pooler = sluice(client_tls_sslmode="require", client_tls_cert_file=crt, client_tls_key_file=key,
                    client_tls_dheparams=dheparams)
    ok, out = s_client(pooler, "-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256")
    assert ok == dhe_works, out
    # ECDHE suites are unaffected
    ok, out = s_client(pooler, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert ok, out


# -- tcp_socket_buffer -------------------------------------------------------------------

def test_tcp_socket_buffer_sets_both_buffers_of_client_and_server_sockets(sluice, pg):
    pooler = sluice(tcp_socket_buffer=65536, pool_mode="session")
    with pooler.connect() as conn:
        conn.execute("select 1")
        socks = peer_sockets(pooler.pid)
        try:
            assert socks, "no TCP socket found in the pooler"
            for (local, peer), sock in socks.items():
                # Linux doubles the value for its bookkeeping (socket(7))
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 131072, (local, peer)
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 131072, (local, peer)
        finally:
            for sock in socks.values():
                sock.close()


# -- resolv_conf -------------------------------------------------------------------------

class TinyDNS:
    """A UDP name server on 127.0.0.1 answering A queries for one name with 127.0.0.1;
    AAAA for it: no records; any other name: NXDOMAIN. Enough for libevent's evdns."""

    def __init__(self, name):
        self.name = name.lower()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                data, addr = self.sock.recvfrom(512)
            except OSError:
                return
            try:
                self.sock.sendto(self.answer(data), addr)
            except (OSError, IndexError, struct.error):
                continue

    def answer(self, q):
        qid, flags = struct.unpack("!HH", q[:4])
        labels, i = [], 12
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode().lower())
            i += 1 + q[i]
        qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
        question = q[12:i + 5]
        name = ".".join(labels)
        self.queries.append((name, qtype))
        rd = flags & 0x0100
        if name != self.name:
            return struct.pack("!HHHHHH", qid, 0x8183 | rd, 1, 0, 0, 0) + question  # NXDOMAIN
        if qtype != 1:
            return struct.pack("!HHHHHH", qid, 0x8180 | rd, 1, 0, 0, 0) + question  # no records
        record = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
        return struct.pack("!HHHHHH", qid, 0x8180 | rd, 1, 1, 0, 0) + question + record

    def close(self):
        self.sock.close()


def test_resolv_conf_sends_server_host_names_to_its_name_servers(sluice, pg, workbase):
    dns = TinyDNS("db.pgsluice-test")
    try:
        conf = os.path.join(workbase, f"resolv-{dns.port}.conf")
        with open(conf, "w") as f:
            f.write(f"nameserver 127.0.0.1:{dns.port}\n")
        pooler = sluice(resolv_conf=conf,
                        databases={"named": f"host=db.pgsluice-test port={pg.port} dbname=app"})
        with pooler.connect(dbname="named") as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        assert ("db.pgsluice-test", 1) in dns.queries
        # the system's resolver does not know the name: without resolv_conf the login fails
        plain = sluice(databases={"named": f"host=db.pgsluice-test port={pg.port} dbname=app"},
                       query_wait_timeout=2)
        with pytest.raises(psycopg.OperationalError):
            plain.connect(dbname="named").execute("select 1")
    finally:
        dns.close()


def test_resolv_conf_that_cannot_be_read_stops_start_up(sluice, workbase):
    pooler = sluice(start=False, resolv_conf=os.path.join(workbase, "no-such-resolv.conf"))
    result = harness.run_binary([pooler.ini_path], timeout=20)
    assert result.returncode != 0
    assert 'could not use resolv_conf "' in result.stdout + pooler.log_text(lines=None)


# -- suspend_timeout ---------------------------------------------------------------------

def stalled_reader(pooler):
    """A client that asks for ~40 MB of rows and reads none of it: its output cannot drain."""
    sess = pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw")
    sess.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sess.send(b"Q", b"select repeat('x', 1000) from generate_series(1, 40000)\0")
    return sess


@pytest.mark.parametrize("timeout", [1, 0])
def test_suspend_timeout_drops_a_client_that_does_not_drain(sluice, timeout):
    pooler = sluice(suspend_timeout=timeout, pool_mode="transaction")
    stalled = stalled_reader(pooler)
    # opened before SUSPEND: a suspended pgsluice accepts no new connection
    other = psycopg.connect(pooler.dsn(dbname="pgbouncer"), autocommit=True,
                            cursor_factory=psycopg.ClientCursor)
    try:
        # the server streams until pgsluice's output to the client is full
        wait_for(lambda: any(r["database"] == "app" and r["sv_active"] == 1
                             for r in admin_rows(pooler, "SHOW POOLS")), 10, what="the query running")
        time.sleep(0.5)
        with pgwire.login(pooler.host, pooler.port, "app", "pgbouncer", password="app_pw") as admin:
            admin.send(b"Q", b"SUSPEND\0")
            if timeout:
                started = time.monotonic()
                messages = admin.read_until_ready()
                assert ("C", b"SUSPEND\0") in messages, messages
                assert time.monotonic() - started < 10
                assert "closing because: suspend_timeout" in pooler.log_text(lines=None)
                cur = other.execute("SHOW CLIENTS")
                db = [d.name for d in cur.description].index("database")
                pooled = [r for r in cur.fetchall() if r[db] == "app"]
                assert pooled == [], pooled      # the stalled client is gone
                other.execute("RESUME")
            else:
                # 0: SUSPEND waits for the flush as long as it takes; RESUME cancels it
                with pytest.raises(TimeoutError):
                    admin.read(timeout=2.5)
                other.execute("RESUME")
                with pytest.raises(pgwire.ServerError, match="SUSPEND was cancelled by RESUME"):
                    admin.read_until_ready()
                assert "closing because: suspend_timeout" not in pooler.log_text(lines=None)
        with pooler.connect() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        other.close()
        stalled.sock.close()


# -- auth_type = pam (PgBouncer's test_auth.py test_pam_*) --------------------------------

PAM_MODULES = "/lib/x86_64-linux-gnu/security"


def pam_service(tmp_path, auth_line, account_line="account required pam_permit.so"):
    """A PAM configuration directory whose service "pgbouncer" has these lines."""
    pam_d = tmp_path / "pam.d"
    pam_d.mkdir(exist_ok=True)
    (pam_d / "pgbouncer").write_text(f"auth {auth_line}\n{account_line}\n")
    os.chmod(pam_d, 0o755)
    return pam_d


def pam_pooler(sluice, pam_d, **extra):
    if not os.path.exists(os.path.join(PAM_MODULES, "pam_permit.so")):
        pytest.skip("no Linux-PAM modules on this machine")
    settings = {"auth_type": "pam", "auth_pam_confdir": pam_d}
    settings.update(extra)
    return sluice(**settings)


def test_pam_permit_lets_any_password_in(sluice, tmp_path):
    pooler = pam_pooler(sluice, pam_service(tmp_path, "required pam_permit.so"))
    with pooler.connect(password="whatever") as conn:
        assert conn.execute("select current_user").fetchone() == ("app",)


def test_pam_deny_refuses_with_28000(sluice, tmp_path):
    pooler = pam_pooler(sluice, pam_service(tmp_path, "required pam_deny.so"))
    err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="app_pw")
    # PostgreSQL's words and SQLSTATE for a PAM failure (auth.c auth_failed)
    assert (err.sqlstate, err.message) == ("28000", 'PAM authentication failed for user "app"')
    assert "pam_authenticate() failed: Authentication failure" in pooler.log_text(lines=None)


def test_pam_exec_sees_user_password_service_and_client_address(sluice, tmp_path):
    script = tmp_path / "check.sh"
    script.write_text("""#!/bin/sh
read pw
[ "$PAM_USER" = app ] || exit 1
[ "$pw" = pam_secret ] || exit 3
[ "$PAM_SERVICE" = pgbouncer ] || exit 5
[ "$PAM_TYPE" = auth ] || exit 7
[ "$PAM_RHOST" = 127.0.0.1 ] || exit 8
exit 0
""")
    os.chmod(tmp_path, 0o755)
    pam_d = pam_service(tmp_path, f"required pam_exec.so expose_authtok /bin/sh {script}")
    pooler = pam_pooler(sluice, pam_d)
    with pooler.connect(password="pam_secret") as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="wrong")
    assert err.sqlstate == "28000"
    log = pooler.log_text(lines=None)
    assert "pam_conversation(): PAM error: /bin/sh failed: exit code 3" in log, log


def test_pam_hba_line_and_other_methods_side_by_side(sluice, tmp_path):
    hba = tmp_path / "hba.conf"
    hba.write_text("host all pw_user 127.0.0.1/32 scram-sha-256\n"
                   "host all all 127.0.0.1/32 pam\n")
    pooler = pam_pooler(sluice, pam_service(tmp_path, "required pam_permit.so"),
                        auth_type="hba", auth_hba_file=hba)
    with pooler.connect(password="anything") as conn:                 # pam: permitted
        assert conn.execute("select 1").fetchone() == (1,)
    with pooler.connect(user="pw_user", dbname="pwdb") as conn:        # scram: its own password
        assert conn.execute("select 1").fetchone() == (1,)
    err = pgwire.login_error(pooler.host, pooler.port, "pw_user", "pwdb", password="wrong")
    assert err.sqlstate == "28P01"


@pytest.mark.serial     # a latency bound: alone (conftest.py)
def test_slow_pam_does_not_stall_logged_in_clients(sluice, tmp_path):
    script = tmp_path / "slow.sh"
    script.write_text("#!/bin/sh\nsleep 2\nexit 0\n")
    os.chmod(tmp_path, 0o755)
    pam_d = pam_service(tmp_path, f"required pam_exec.so /bin/sh {script}")
    pooler = pam_pooler(sluice, pam_d)
    with pooler.connect(password="x") as conn:
        done = threading.Event()
        slow = threading.Thread(target=lambda: (pooler.connect(password="y").close(), done.set()))
        slow.start()
        time.sleep(0.3)          # the second login is inside PAM now
        started = time.monotonic()
        for _ in range(20):
            assert conn.execute("select 1").fetchone() == (1,)
        assert time.monotonic() - started < 1.5, "a PAM check held the loop"
        assert not done.is_set()
        slow.join(10)
        assert done.is_set()


def test_pam_password_logs_the_role_in_to_postgresql_too(sluice, pg, tmp_path):
    """A PAM user with no auth_file entry: the password PAM accepted logs its servers in
    (PgBouncer keeps it for that, its issue #285), here with SCRAM towards PostgreSQL."""
    pg.query("CREATE ROLE pam_only LOGIN PASSWORD 'pam_pw'", dbname="postgres")
    try:
        script = tmp_path / "check.sh"
        script.write_text('#!/bin/sh\nread pw\n[ "$PAM_USER" = pam_only ] && [ "$pw" = pam_pw ]\n')
        os.chmod(tmp_path, 0o755)
        # server_lifetime = 0: each transaction gets a server that logs in anew
        pooler = pam_pooler(sluice, pam_service(tmp_path, f"required pam_exec.so expose_authtok /bin/sh {script}"),
                            pool_mode="transaction", server_lifetime=0)
        with pooler.connect(user="pam_only", password="pam_pw") as conn:
            pids = {conn.execute("select pg_backend_pid()").fetchone()[0] for _ in range(3)}
            assert conn.execute("select current_user").fetchone() == ("pam_only",)
        assert len(pids) == 3
        err = pgwire.login_error(pooler.host, pooler.port, "pam_only", "app", password="wrong")
        assert err.sqlstate == "28000"
    finally:
        pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'pam_only'",
                 dbname="postgres")
        pg.query("DROP ROLE IF EXISTS pam_only", dbname="postgres")


# -- conffile ------------------------------------------------------------------------------

def test_conffile_shows_the_file_and_set_changes_what_reload_reads(sluice):
    pooler = sluice(default_pool_size=7)
    rows = {r["key"]: r["value"] for r in admin_rows(pooler, "SHOW CONFIG")}
    assert rows["conffile"] == str(pooler.ini_path)
    other = pooler.workdir / "other.ini"
    other.write_text(pooler.ini_path.read_text().replace("default_pool_size = 7", "default_pool_size = 3"))
    with psycopg.connect(pooler.dsn(dbname="pgbouncer"), autocommit=True,
                         cursor_factory=psycopg.ClientCursor) as admin:
        admin.execute(f"SET conffile = '{other}'")
        admin.execute("RELOAD")
    rows = {r["key"]: r["value"] for r in admin_rows(pooler, "SHOW CONFIG")}
    assert rows["default_pool_size"] == "3"
    assert rows["conffile"] == str(other)
    assert f"conffile: RELOAD and SIGHUP read {other}" in pooler.log_text(lines=None)
