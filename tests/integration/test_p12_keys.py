# SPDX-License-Identifier: PostgreSQL
"""Issue 12, item 7 (a subset): PgBouncer keys pgsluice used to warn about and
ignore, now applied.

- tcp_keepalive with tcp_keepidle, tcp_keepintvl, tcp_keepcnt, and
  tcp_user_timeout, on client and server sockets. The options are read back
  from pgsluice's own live sockets: pidfd_getfd(2) copies a descriptor of the
  pgsluice process into the test, and getsockopt on the copy answers for the
  very socket pgsluice set up (PostgreSQL's tcp_keepalives_* show its own end,
  `ss` shows only the keepalive timer, not the interval or the count).
- scram_iterations: the i= of the SCRAM server-first-message for a plain-text
  auth_file password, and for a user that is not in auth_file (the mock
  exchange must not give that away).
- client_tls13_ciphers: the TLS 1.3 suite libpq ends up with, and a client
  that offers none of the configured suites failing the handshake.
- query_wait_notify: PgBouncer 1.25's NOTICE to a client queued for a server.
"""

import base64
import ctypes
import errno
import hashlib
import hmac
import os
import socket
import ssl
import struct
import subprocess
import threading
import time

import psycopg
import pytest

import harness
import pgwire
from harness import wait_for
# the TLS module's certificates (a module-scoped fixture) and its pooler settings
from test_tls import certs, client_tls, ssl_request  # noqa: F401

SYS_PIDFD_GETFD = 438      # the same number on every Linux architecture
QUEUED_NOTICE = "No server connection available in postgres backend, client being queued"


# -- reading socket options of pgsluice's sockets ---------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def peer_sockets(pid):
    """{(local address, peer address): socket} for every TCP socket of process pid.

    Each socket is a duplicate made with pidfd_getfd: options read from it are
    those of pgsluice's own socket. The caller closes them.
    """
    pidfd = os.pidfd_open(pid)
    found = {}
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            fd = _libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                err = ctypes.get_errno()
                if err in (errno.ENOSYS, errno.EPERM):
                    pytest.skip(f"pidfd_getfd: {os.strerror(err)}")
                continue       # closed in the meantime
            try:
                sock = socket.socket(fileno=fd)
            except OSError:
                os.close(fd)   # not a socket
                continue
            try:
                key = (sock.getsockname(), sock.getpeername())
            except OSError:
                sock.close()   # a listening or unix socket
                continue
            if sock.family != socket.AF_INET:
                sock.close()
                continue
            found[key] = sock
    finally:
        os.close(pidfd)
    return found


def keepalive_options(sock):
    return {
        "SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0,
        "TCP_KEEPIDLE": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        "TCP_KEEPINTVL": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        "TCP_KEEPCNT": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        "TCP_USER_TIMEOUT": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    }


def pgsluice_legs(pooler, pg, conn):
    """Options of pgsluice's socket towards conn (client leg) and towards PostgreSQL (server leg)."""
    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as mine:
        client_addr = mine.getsockname()
    # The server connection serving conn: PostgreSQL sees pgsluice's port.
    server_port = conn.execute("SELECT inet_client_port()").fetchone()[0]
    socks = peer_sockets(pooler.pid)
    try:
        client_leg = [s for (_, peer), s in socks.items() if peer == client_addr]
        server_leg = [s for (local, peer), s in socks.items()
                      if peer[1] == pg.port and local[1] == server_port]
        assert len(client_leg) == 1, f"pgsluice's socket towards {client_addr}: {socks}"
        assert len(server_leg) == 1, f"pgsluice's sockets towards PostgreSQL: {socks}"
        return keepalive_options(client_leg[0]), keepalive_options(server_leg[0])
    finally:
        for s in socks.values():
            s.close()


def start_failure(pooler):
    """What a pooler that must refuse its config printed; fails when it keeps running."""
    try:
        out = harness.run_binary([pooler.ini_path], cwd=pooler.workdir, timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError("pooler kept running with an invalid config value") from None
    text = out.stdout + pooler.log_text(lines=None)
    assert out.returncode > 0, text
    return text


# -- 1. tcp_keepidle, tcp_keepintvl, tcp_keepcnt, tcp_user_timeout ----------------------
def test_tcp_keepalive_keys_are_set_on_client_and_server_sockets(sluice, pg):
    pooler = sluice(tcp_keepalive=1, tcp_keepidle=41, tcp_keepintvl=7, tcp_keepcnt=3,
                    tcp_user_timeout=12345)
    want = {"SO_KEEPALIVE": True, "TCP_KEEPIDLE": 41, "TCP_KEEPINTVL": 7, "TCP_KEEPCNT": 3,
            "TCP_USER_TIMEOUT": 12345}
    with pooler.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        client_leg, server_leg = pgsluice_legs(pooler, pg, conn)
    assert client_leg == want
    assert server_leg == want

    # A reload applies to sockets made after it (an idle server is reused as it is).
    pooler.reload(tcp_keepidle=50, tcp_keepcnt=0, tcp_user_timeout=0)
    wait_for(lambda: show_config(pooler).get("tcp_keepidle") == "50", 10, what="the reload")
    with pooler.connect() as conn:
        conn.execute("SELECT 1")
        client_leg, server_leg = pgsluice_legs(pooler, pg, conn)
    with open("/proc/sys/net/ipv4/tcp_keepalive_probes") as f:
        os_keepcnt = int(f.read())
    reloaded = {"SO_KEEPALIVE": True, "TCP_KEEPIDLE": 50, "TCP_KEEPINTVL": 7,
                "TCP_KEEPCNT": os_keepcnt, "TCP_USER_TIMEOUT": 0}   # 0: the OS's
    assert client_leg == reloaded
    # The server is the one from before (still being reset, a new one is opened).
    assert server_leg in (want, reloaded)


def test_tcp_keepalive_off_still_sets_tcp_user_timeout(sluice, pg):
    """As PgBouncer: tcp_keepidle/intvl/cnt need tcp_keepalive; tcp_user_timeout does not."""
    pooler = sluice(tcp_keepalive=0, tcp_keepidle=41, tcp_user_timeout=2500)
    with pooler.connect() as conn:
        conn.execute("SELECT 1")
        legs = pgsluice_legs(pooler, pg, conn)
    for leg in legs:
        assert leg["SO_KEEPALIVE"] is False
        assert leg["TCP_USER_TIMEOUT"] == 2500


@pytest.mark.parametrize("key,value", [("tcp_keepcnt", "128"), ("tcp_keepidle", "-1"),
                                       ("tcp_user_timeout", "soon")])
def test_tcp_keepalive_key_out_of_range_stops_start_up(sluice, key, value):
    pooler = sluice(start=False, **{key: value})
    text = start_failure(pooler)
    assert f"{pooler.ini_path.name}:{pooler.line_of(key)}" in text, text
    assert key in text


# -- 2. scram_iterations --------------------------------------------------------------
def scram_server_first(pooler, user, password):
    """Log in as user with SCRAM; returns the attributes of server-first-message.

    The exchange is finished with the password (so the i= shown is the one
    the proof is checked against); raises pgwire.ServerError when refused.
    """
    sock = socket.create_connection((pooler.host, pooler.port), timeout=10)
    sess = pgwire.Session(sock, 10)
    try:
        body = struct.pack("!I", 196608) + b"user\0" + user.encode() + b"\0database\0app\0\0"
        sess.send(b"", body)
        msg_type, body = sess.read()
        assert (msg_type, struct.unpack("!I", body[:4])[0]) == ("R", 10), (msg_type, body)
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n=,r={nonce}"
        first = ("n,," + first_bare).encode()
        sess.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
        msg_type, body = sess.read()
        assert (msg_type, struct.unpack("!I", body[:4])[0]) == ("R", 11), (msg_type, body)
        server_first = body[4:].decode()
        attrs = dict(item.split("=", 1) for item in server_first.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message,
                             hashlib.sha256).digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
        sess.send(b"p", f"{without_proof},p={proof}".encode())
        while True:
            msg_type, body = sess.read()
            if msg_type == "E":
                raise pgwire.ServerError(pgwire._parse_fields(body))
            if msg_type == "R" and struct.unpack("!I", body[:4])[0] == 0:
                break
        sess.read_until_ready()
        return attrs
    finally:
        sess.close()


def test_scram_iterations_is_the_iteration_count_of_plain_auth_file_passwords(sluice):
    pooler = sluice(auth_type="scram-sha-256", scram_iterations=1234)
    assert scram_server_first(pooler, "app", harness.PASSWORDS["app"])["i"] == "1234"
    # The second login uses the derived secret kept for the user: same count.
    assert scram_server_first(pooler, "app", harness.PASSWORDS["app"])["i"] == "1234"
    # A user that is not in auth_file sees the same count, and fails only at the end.
    with pytest.raises(pgwire.ServerError) as err:
        scram_server_first(pooler, "nobody_here", "whatever")
    assert err.value.sqlstate == "28P01"

    # RELOAD: secrets are derived anew with the new count, for real and mock users.
    pooler.reload(scram_iterations=2048)
    wait_for(lambda: show_config(pooler).get("scram_iterations") == "2048", 10, what="the reload")
    assert scram_server_first(pooler, "app", harness.PASSWORDS["app"])["i"] == "2048"
    with psycopg.connect(pooler.dsn(password=harness.PASSWORDS["app"])) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_scram_iterations_hides_unknown_users(sluice):
    """The mock exchange for a user missing from auth_file follows scram_iterations too."""
    pooler = sluice(auth_type="scram-sha-256", scram_iterations=1500)
    seen = {}

    def capture(user):
        orig = pgwire.Session.read

        def spy(self, timeout=None):
            msg_type, body = orig(self, timeout)
            if msg_type == "R" and struct.unpack("!I", body[:4])[0] == 11:
                attrs = dict(i.split("=", 1) for i in body[4:].decode().split(","))
                seen[user] = attrs["i"]
            return msg_type, body
        pgwire.Session.read = spy
        try:
            return pgwire.login_error(pooler.host, pooler.port, user, "app", password="wrong_pw")
        finally:
            pgwire.Session.read = orig

    known, unknown = capture("app"), capture("nobody_here")
    assert seen == {"app": "1500", "nobody_here": "1500"}
    assert (known.sqlstate, known.message) == ("28P01", "SASL authentication failed")   # PgBouncer's text
    assert unknown.sqlstate == "28P01"


def test_scram_iterations_default_is_4096_and_bad_values_stop_start_up(sluice):
    pooler = sluice(auth_type="scram-sha-256")
    assert show_config(pooler)["scram_iterations"] == "4096"
    assert scram_server_first(pooler, "app", harness.PASSWORDS["app"])["i"] == "4096"
    bad = sluice(start=False, scram_iterations=0)
    text = start_failure(bad)
    assert f"{bad.ini_path.name}:{bad.line_of('scram_iterations')}" in text, text


# -- 3. client_tls13_ciphers ------------------------------------------------------------
def tls13_pooler(sluice, certs, suites):
    return sluice(**client_tls(certs, client_tls_protocols="tlsv1.3",
                               client_tls13_ciphers=suites))


def tls13_handshake(pooler):
    """TLS 1.3 to the pooler with an OpenSSL client's default suites; returns the suite."""
    sock, answer = ssl_request(pooler)
    with sock:
        assert answer == b"S"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        with ctx.wrap_socket(sock) as tls:
            assert tls.version() == "TLSv1.3"
            return tls.cipher()[0]


def test_client_tls13_ciphers_picks_the_suite(sluice, certs):
    # OpenSSL clients (libpq, Python) prefer AES-256-GCM; pgsluice allows only ChaCha20.
    pooler = tls13_pooler(sluice, certs, "TLS_CHACHA20_POLY1305_SHA256")
    assert tls13_handshake(pooler) == "TLS_CHACHA20_POLY1305_SHA256"
    with pooler.connect(sslmode="require") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # Without the key: OpenSSL's default suites, the client's first choice.
    pooler = sluice(**client_tls(certs, client_tls_protocols="tlsv1.3"))
    assert tls13_handshake(pooler) == "TLS_AES_256_GCM_SHA384"


def test_client_tls13_ciphers_mismatch_fails_the_handshake(sluice, certs):
    # TLS_AES_128_CCM_SHA256 is not among the suites OpenSSL clients offer by default.
    pooler = tls13_pooler(sluice, certs, "TLS_AES_128_CCM_SHA256")
    with pytest.raises(ssl.SSLError, match="(?i)handshake|cipher|alert"):
        tls13_handshake(pooler)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pooler.dsn(password=harness.PASSWORDS["app"], sslmode="require"),
                        connect_timeout=5).close()
    # RELOAD to a suite the clients offer: new connections get in.
    pooler.reload(client_tls13_ciphers="TLS_AES_128_GCM_SHA256")

    def handshake_after_reload():
        try:
            return tls13_handshake(pooler)
        except ssl.SSLError:
            return None      # SIGHUP not handled yet
    assert wait_for(handshake_after_reload, 10, what="the reload") == "TLS_AES_128_GCM_SHA256"
    with pooler.connect(sslmode="require") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_client_tls13_ciphers_invalid_stops_start_up(sluice, certs):
    pooler = sluice(start=False, **client_tls(certs, client_tls13_ciphers="NOT_A_SUITE"))
    text = start_failure(pooler)
    assert "client_tls13_ciphers" in text, text


# -- 4. query_wait_notify ---------------------------------------------------------------
def show_config(pooler):
    with pooler.connect(dbname="pgsluice") as conn:
        return {r[0]: r[1] for r in conn.execute("SHOW CONFIG").fetchall()}


def wait_behind_a_held_server(pooler, hold_s):
    """One client holds the only server for hold_s while another runs SELECT 2.

    Returns (the notices the waiting client got, its answer, seconds it waited).
    """
    notices = []
    with pooler.connect() as holder, pooler.connect() as waiter:
        waiter.add_notice_handler(lambda d: notices.append((d.severity, d.sqlstate,
                                                            d.message_primary)))
        holder.execute("BEGIN")
        holder.execute("SELECT 1")
        release = threading.Timer(hold_s, lambda: holder.execute("COMMIT"))
        release.start()
        try:
            start = time.monotonic()
            answer = waiter.execute("SELECT 2").fetchone()
            waited = time.monotonic() - start
        finally:
            release.join()
    return notices, answer, waited


def test_query_wait_notify_tells_a_queued_client_once(sluice):
    pooler = sluice(pool_mode="transaction", default_pool_size=1, query_wait_notify=2,
                    query_wait_timeout=30)
    notices, answer, waited = wait_behind_a_held_server(pooler, 4.5)
    assert answer == (2,)
    assert waited >= 4
    # Once per wait, though the client waited twice query_wait_notify.
    assert notices == [("NOTICE", "00000", QUEUED_NOTICE)]

    # A client served before query_wait_notify hears nothing.
    notices, answer, _ = wait_behind_a_held_server(pooler, 0.3)
    assert (notices, answer) == ([], (2,))

    # 0 turns the notice off (RELOAD).
    pooler.reload(query_wait_notify=0)
    wait_for(lambda: show_config(pooler).get("query_wait_notify") == "0", 10, what="the reload")
    notices, answer, _ = wait_behind_a_held_server(pooler, 2.0)
    assert (notices, answer) == ([], (2,))


def test_new_keys_in_show_config_with_pgbouncer_defaults(sluice):
    config = show_config(sluice())
    assert {k: config.get(k) for k in ("tcp_keepidle", "tcp_keepintvl", "tcp_keepcnt",
                                        "tcp_user_timeout", "scram_iterations",
                                        "client_tls13_ciphers", "query_wait_notify")} == {
        "tcp_keepidle": "0", "tcp_keepintvl": "0", "tcp_keepcnt": "0",
        "tcp_user_timeout": "0", "scram_iterations": "4096", "client_tls13_ciphers": "",
        "query_wait_notify": "5"}
