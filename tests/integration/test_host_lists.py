# SPDX-License-Identifier: PostgreSQL
"""Host lists in [databases] (issue 12 item 3, docs/pooling.md "Host lists").

PgBouncer 1.25's `host=a,b,c` with `port=` (one port for all, or one per
host) and `load_balance_hosts = round-robin|disable`: server logins spread
over the hosts, or go to the first host that answers; a host that is down is
skipped and clients never notice. Two real listeners: the test PostgreSQL
itself and a small TCP proxy to it on another port, started here. A port
where nothing listens plays the host that is down.
"""

import selectors
import socket
import threading
from contextlib import ExitStack

import psycopg
import pytest

import harness


class TcpProxy:
    """Forwards every connection on 127.0.0.1:<port> to the target; counts them."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._pipe, args=(conn,), daemon=True).start()

    def _pipe(self, conn):
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        except OSError:
            conn.close()
            return
        sel = selectors.DefaultSelector()
        sel.register(conn, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, conn)
        try:
            while not self.stopping:
                for key, _ in sel.select(timeout=1):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            pass
        finally:
            sel.close()
            conn.close()
            upstream.close()

    def close(self):
        self.stopping = True
        self.listener.close()


@pytest.fixture
def proxy(pg):
    p = TcpProxy(pg.port)
    yield p
    p.close()


def dead_port():
    """A port where nothing listens: a connect is refused, like a host that is down."""
    return harness.free_port()


def admin(pooler):
    return psycopg.connect(pooler.dsn(dbname="pgsluice", password="app_pw"), autocommit=True,
                           cursor_factory=psycopg.ClientCursor)


def server_ports(pooler, database="hl"):
    """The remote port of each server connection of database (SHOW SERVERS)."""
    with admin(pooler) as conn:
        cur = conn.execute("SHOW SERVERS")
        cols = [d.name for d in cur.description]
        return sorted(r[cols.index("port")] for r in cur.fetchall() if r[cols.index("database")] == database)


def pools_column(pooler, database, column):
    with admin(pooler) as conn:
        cur = conn.execute("SHOW POOLS")
        cols = [d.name for d in cur.description]
        return [r[cols.index(column)] for r in cur.fetchall() if r[cols.index("database")] == database]


def hold_sessions(pooler, stack, n):
    """n clients of database hl in session mode, each holding its own server; returns their backend pids."""
    pids = []
    for _ in range(n):
        conn = stack.enter_context(pooler.connect(dbname="hl", password="app_pw"))
        pids.append(conn.execute("select pg_backend_pid()").fetchone()[0])
    return pids


def test_round_robin_spreads_server_logins_over_the_hosts(sluice, pg, proxy):
    pooler = sluice(databases={"hl": f"host=127.0.0.1,127.0.0.1 port={proxy.port},{pg.port} dbname=app"})
    with ExitStack() as stack:
        pids = hold_sessions(pooler, stack, 4)
        assert len(set(pids)) == 4
        ports = server_ports(pooler)
    # four logins, alternating between the two hosts
    assert ports == sorted([proxy.port, proxy.port, pg.port, pg.port]), ports
    assert proxy.accepted == 2
    assert pools_column(pooler, "hl", "load_balance_hosts") == ["round-robin"]


def test_a_host_that_is_down_is_skipped_and_queries_succeed(sluice, pg, proxy):
    down = dead_port()
    pooler = sluice(databases={
        "hl": f"host=127.0.0.1,127.0.0.1,127.0.0.1 port={down},{proxy.port},{pg.port} dbname=app"})
    with ExitStack() as stack:
        pids = hold_sessions(pooler, stack, 6)
        assert len(set(pids)) == 6
        ports = server_ports(pooler)
    assert down not in ports
    assert set(ports) == {proxy.port, pg.port}, ports
    assert "trying the next host" in pooler.log_text(400)


def test_disable_uses_the_first_host_that_answers(sluice, pg, proxy):
    down = dead_port()
    pooler = sluice(databases={
        "hl": f"host=127.0.0.1,127.0.0.1,127.0.0.1 port={down},{proxy.port},{pg.port} dbname=app "
              "load_balance_hosts=disable"})
    with ExitStack() as stack:
        hold_sessions(pooler, stack, 3)
        ports = server_ports(pooler)
    assert ports == [proxy.port] * 3, ports
    assert proxy.accepted == 3
    assert pools_column(pooler, "hl", "load_balance_hosts") == ["disable"]


def test_global_load_balance_hosts_and_one_port_for_every_host(sluice, pg):
    # localhost resolves to 127.0.0.1 (and perhaps ::1, where PostgreSQL does not
    # listen: that address is tried, then the next): one port for both hosts
    pooler = sluice(load_balance_hosts="disable",
                    databases={"hl": f"host=localhost,127.0.0.1 port={pg.port} dbname=app"})
    with pooler.connect(dbname="hl", password="app_pw") as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert server_ports(pooler) == [pg.port]
    assert pools_column(pooler, "hl", "load_balance_hosts") == ["disable"]
    with admin(pooler) as conn:
        cur = conn.execute("SHOW DATABASES")
        cols = [d.name for d in cur.description]
        rows = {r[0]: r for r in cur.fetchall()}
    assert rows["hl"][cols.index("load_balance_hosts")] == "disable"
    assert rows["hl"][cols.index("host")] == "localhost,127.0.0.1"
    # a single host shows no value, as PgBouncer
    assert pools_column(pooler, "app", "load_balance_hosts") in ([], [None])


class SilentHost:
    """A listener whose accept queue is full: the kernel drops further SYNs, so a
    connect gets no answer at all (a host that is down behind a firewall)."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers = []
        for _ in range(4):
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(f)

    def close(self):
        for f in self.fillers:
            f.close()
        self.listener.close()


def test_a_host_that_does_not_answer_is_skipped_after_server_connect_timeout(sluice, pg):
    silent = SilentHost()
    try:
        pooler = sluice(server_connect_timeout=1, load_balance_hosts="disable",
                        databases={"hl": f"host=127.0.0.1,127.0.0.1 port={silent.port},{pg.port} dbname=app"})
        with pooler.connect(dbname="hl", password="app_pw", connect_timeout=30) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        assert server_ports(pooler) == [pg.port]
        assert f"port {silent.port} failed (no answer within server_connect_timeout)" in pooler.log_text(400)
    finally:
        silent.close()


def test_a_host_whose_name_does_not_resolve_is_skipped(sluice, pg):
    # .invalid never resolves (RFC 6761): an NXDOMAIN, or no answer at all from a
    # sandbox's name server, which server_connect_timeout ends
    pooler = sluice(server_connect_timeout=2, load_balance_hosts="disable",
                    databases={"hl": f"host=pgsluice-test.invalid,127.0.0.1 port={pg.port} dbname=app"})
    with pooler.connect(dbname="hl", password="app_pw", connect_timeout=30) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert server_ports(pooler) == [pg.port]
    assert 'host "pgsluice-test.invalid"' in pooler.log_text(400)


def test_every_host_down_fails_the_login_with_the_connection_error(sluice):
    pooler = sluice(query_wait_timeout=3, server_login_retry=1,
                    databases={"hl": f"host=127.0.0.1,127.0.0.1 port={dead_port()},{dead_port()} dbname=app"})
    with pytest.raises(psycopg.OperationalError) as err:
        pooler.connect(dbname="hl", password="app_pw", connect_timeout=20)
    # each host was tried before the login failed; the client gets why (08006)
    assert 'could not connect to server for database "hl"' in str(err.value), err.value
    assert "Connection refused" in str(err.value), err.value


@pytest.mark.parametrize("entry, message", [
    ("host=a,b,c port=5432,5433", "invalid number of ports: 2 ports for 3 hosts"),
    ("host=a,,c", "a host name is empty"),
    ("host=a,b port=5432,x", "invalid value \"5432,x\" for key \"port\""),
    ("host=a,b load_balance_hosts=random", "expected round-robin or disable"),
])
def test_bad_host_lists_are_config_errors(tmp_path, entry, message):
    ini = tmp_path / "p.ini"
    ini.write_text(f"[pgsluice]\nauth_type = trust\n[databases]\nhl = {entry}\n")
    out = harness.run_binary(["--check-config", ini])
    assert out.returncode == 1, out.stdout
    assert "p.ini:4: " in out.stdout and message in out.stdout, out.stdout
