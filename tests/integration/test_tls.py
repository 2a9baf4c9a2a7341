# SPDX-License-Identifier: PostgreSQL
"""TLS on both legs (issue 4): clients to pgsluice (client_tls_*), pgsluice to
PostgreSQL (server_tls_*), auth_type = cert, and certificates reloaded on SIGHUP.

The certificates are made here with the openssl command line: a CA, a server
certificate for 127.0.0.1 and localhost (PostgreSQL and pgsluice both present it),
a client certificate with CN=app, and an unrelated second CA. For this module
only, the test PostgreSQL runs with ssl = on (ALTER SYSTEM, undone at teardown);
its pg_hba.conf `host` lines accept clients with and without TLS.

Tests of the client leg set server_tls_sslmode = disable, and tests of the server
leg leave client TLS off, so that a failure points at one leg; the last tests run
verify-full on both legs, the set-up of a TLS-only client fleet in front of a
TLS-only managed PostgreSQL. docs/tls.md describes what is tested here.
"""

import itertools
import os
import random
import re
import shutil
import socket
import ssl
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from harness import wait_for

import harness
import pgwire

SSL_REQUEST = struct.pack("!II", 8, 80877103)
# What an error about an untrusted or mismatching certificate mentions: OpenSSL's
# "certificate verify failed", libpq's "server certificate for ... does not match".
TLS_VERIFY_ERROR = re.compile(r"certificate|verif", re.I)
# What libpq reports when pgsluice refuses the client's certificate with a TLS
# alert ("tlsv13 alert certificate required", "tlsv1 alert unknown ca"), as
# opposed to "SSL SYSCALL error: EOF detected" when the connection just closes.
CLIENT_CERT_REFUSED = re.compile(r"certificate|unknown ca|alert", re.I)




def full_text(err):
    """Message, DETAIL and HINT of a pgwire.ServerError, for matching."""
    return " | ".join(err.fields.get(k, "") for k in ("message", "detail", "hint"))


# -- certificates ---------------------------------------------------------------------
@dataclass
class Cert:
    crt: Path
    key: Path
    serial: int


REQ_CONFIG = """\
[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

LEAF_EXTENSIONS = """\
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
"""

SERVER_SAN = "IP:127.0.0.1,DNS:localhost"


class CertFactory:
    """Makes keys and certificates in one directory with the openssl command line."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "req.cnf"
        self.config.write_text(REQ_CONFIG)
        self.serials = itertools.count(0x1001)

    def _openssl(self, *args):
        out = subprocess.run(["openssl"] + [str(a) for a in args], capture_output=True,
                             text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(map(str, args))} failed:\n{out.stderr}")
        return out.stdout

    def _key(self, name):
        key = self.dir / f"{name}.key"
        self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", key)
        key.chmod(0o600)     # libpq refuses a client key others can read
        return key

    def serial_of(self, crt):
        return int(self._openssl("x509", "-in", crt, "-noout", "-serial").strip()
                   .split("=", 1)[1], 16)

    def ca(self, name, cn):
        key = self._key(name)
        crt = self.dir / f"{name}.crt"
        self._openssl("req", "-x509", "-new", "-key", key, "-subj", f"/CN={cn}", "-days", "2",
                      "-config", self.config, "-extensions", "v3_ca", "-out", crt)
        return Cert(crt, key, self.serial_of(crt))

    def issue(self, name, ca, cn, san=None):
        """A certificate for cn signed by ca; san like "IP:127.0.0.1,DNS:localhost"."""
        key = self._key(name)
        csr, crt, ext = (self.dir / f"{name}.{s}" for s in ("csr", "crt", "ext"))
        ext.write_text(LEAF_EXTENSIONS + (f"subjectAltName = {san}\n" if san else ""))
        self._openssl("req", "-new", "-key", key, "-subj", f"/CN={cn}", "-config", self.config,
                      "-out", csr)
        serial = next(self.serials)
        self._openssl("x509", "-req", "-in", csr, "-CA", ca.crt, "-CAkey", ca.key,
                      "-set_serial", serial, "-days", "2", "-extfile", ext, "-out", crt)
        return Cert(crt, key, serial)


@dataclass
class Certs:
    factory: CertFactory
    ca: Cert            # signs everything below except other_client
    server: Cert        # CN=localhost, SAN IP:127.0.0.1 DNS:localhost
    client: Cert        # CN=app
    elsewhere: Cert     # signed by ca, but for another host name only
    other_ca: Cert      # an unrelated CA
    other_client: Cert  # CN=app, signed by other_ca


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    f = CertFactory(tmp_path_factory.mktemp("tls-certs"))
    ca = f.ca("ca", "pgsluice test CA")
    other_ca = f.ca("other_ca", "unrelated test CA")
    return Certs(
        factory=f, ca=ca, other_ca=other_ca,
        server=f.issue("server", ca, "localhost", SERVER_SAN),
        client=f.issue("client", ca, "app"),
        elsewhere=f.issue("elsewhere", ca, "db.elsewhere.invalid", "DNS:db.elsewhere.invalid"),
        other_client=f.issue("other_client", other_ca, "app"),
    )


# -- PostgreSQL with ssl = on -------------------------------------------------------
def pg_accepts_tls(pg, certs, sslmode="verify-full"):
    """True when a direct connection to PostgreSQL with sslmode works."""
    try:
        with psycopg.connect(pg.dsn(sslmode=sslmode, sslrootcert=str(certs.ca.crt))):
            return True
    except psycopg.OperationalError:
        return False


class PostgresTLS:
    """The files the test PostgreSQL's ssl_cert_file / ssl_key_file name."""

    def __init__(self, pg, certs):
        self.pg = pg
        self.certs = certs
        self.dir = pg.basedir / "tls"
        self.crt = self.dir / "server.crt"
        self.key = self.dir / "server.key"

    def install(self, cert):
        """Copy cert into PostgreSQL's files, owned by its OS user, key mode 0600."""
        self.dir.mkdir(exist_ok=True)
        shutil.copyfile(cert.crt, self.crt)
        shutil.copyfile(cert.key, self.key)
        self.key.chmod(0o600)
        harness.give_to(self.dir, self.pg.account)

    def serve(self, cert):
        """Make PostgreSQL present cert to new connections (pg_reload_conf, waited for)."""
        self.install(cert)
        self.pg.query("SELECT pg_reload_conf()")
        matches = cert is self.certs.server       # valid for 127.0.0.1 and signed by the CA
        wait_for(lambda: pg_accepts_tls(self.pg, self.certs) == matches, 10, interval=0.1,
                 what=f"PostgreSQL presenting {cert.crt.name}")


@pytest.fixture(scope="module")
def pg_tls(pg, certs):
    """ssl = on in the test PostgreSQL for this module; off again afterwards."""
    if not pg.running:
        pg.start()
    tls = PostgresTLS(pg, certs)
    tls.install(certs.server)
    pg.query("ALTER SYSTEM SET ssl = on")
    pg.query("ALTER SYSTEM SET ssl_cert_file = %s" % quote(tls.crt))
    pg.query("ALTER SYSTEM SET ssl_key_file = %s" % quote(tls.key))
    pg.query("SELECT pg_reload_conf()")
    try:
        wait_for(lambda: pg_accepts_tls(pg, certs), 10, interval=0.1,
                 what="PostgreSQL accepting TLS after ssl = on:\n" + pg.log_text())
        yield tls
    finally:
        if not pg.running:
            pg.start()
        for name in ("ssl", "ssl_cert_file", "ssl_key_file"):
            pg.query(f"ALTER SYSTEM RESET {name}")
        pg.query("SELECT pg_reload_conf()")
        wait_for(lambda: not pg_accepts_tls(pg, certs, sslmode="require"), 10, interval=0.1,
                 what="PostgreSQL back to ssl = off")


def quote(path):
    return "'" + str(path).replace("'", "''") + "'"


# -- clients -------------------------------------------------------------------------
def client_tls(certs, mode="require", cert=None, **extra):
    """Pooler overrides: client TLS with the server certificate, server leg plain."""
    cert = cert or certs.server
    settings = {"client_tls_sslmode": mode, "client_tls_cert_file": cert.crt,
                "client_tls_key_file": cert.key, "server_tls_sslmode": "disable"}
    if mode.startswith("verify"):
        settings["client_tls_ca_file"] = certs.ca.crt
    settings.update(extra)
    return settings


def verify_full(certs, client=None):
    """libpq parameters: TLS with the pooler's certificate checked against the CA."""
    params = {"sslmode": "verify-full", "sslrootcert": str(certs.ca.crt)}
    if client is not None:
        params.update(sslcert=str(client.crt), sslkey=str(client.key))
    return params


def ssl_request(pooler, timeout=5):
    """Open TCP, send SSLRequest; returns (socket, the one-byte answer)."""
    sock = socket.create_connection((pooler.host, pooler.port), timeout=timeout)
    sock.sendall(SSL_REQUEST)
    return sock, sock.recv(1)


def tls_socket(pooler, certs, client=None, min_version=None, max_version=None):
    """A TLS socket to the pooler, its certificate verified against the CA for 127.0.0.1."""
    sock, answer = ssl_request(pooler)
    try:
        assert answer == b"S", f"SSLRequest answered {answer!r}, expected b'S'"
        ctx = ssl.create_default_context(cafile=str(certs.ca.crt))
        if min_version is not None:
            ctx.minimum_version = min_version
        if max_version is not None:
            ctx.maximum_version = max_version
        if client is not None:
            ctx.load_cert_chain(str(client.crt), str(client.key))
        return ctx.wrap_socket(sock, server_hostname=pooler.host)
    except BaseException:
        sock.close()
        raise


def tls_login(pooler, certs, user="app", dbname="app", password=None, client=None):
    """pgwire's login over TLS: a pgwire.Session, or pgwire.ServerError with the SQLSTATE.

    With password None, a password request is an error (WireError), so a
    successful login proves that none was asked for.
    """
    sock = tls_socket(pooler, certs, client=client)
    sess = pgwire.Session(sock, 5.0)
    try:
        body = struct.pack("!I", pgwire.PROTOCOL_V3)
        for key, value in (("user", user), ("database", dbname)):
            body += key.encode() + b"\0" + value.encode() + b"\0"
        sess.send(b"", body + b"\0")
        while True:
            msg_type, body = sess.read()
            if msg_type == "E":
                raise pgwire.ServerError(pgwire._parse_fields(body))
            if msg_type == "N":
                continue
            if msg_type != "R":
                raise pgwire.WireError(f"unexpected message {msg_type!r} during authentication")
            code = struct.unpack("!I", body[:4])[0]
            if code == 0:
                break
            if code == 12:           # SASLFinal
                continue
            if password is None:
                raise pgwire.WireError(f"asked for a password (auth code {code})")
            if code == 3:
                sess.send(b"p", password.encode() + b"\0")
            elif code == 10:
                mechanisms = [m.decode() for m in body[4:].split(b"\0") if m]
                pgwire._scram_exchange(sess, mechanisms, password)
            else:
                raise pgwire.WireError(f"unsupported authentication request {code}")
        sess.read_until_ready()
        return sess
    except BaseException:
        sock.close()
        raise


def served_serial(pooler, certs):
    """Serial number of the certificate the pooler presents to a new TLS client."""
    with tls_socket(pooler, certs) as sock:
        return int(sock.getpeercert()["serialNumber"], 16)


def closed_by_peer(sock, timeout):
    """True when the peer closes sock within timeout (whatever it sends first is skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(4096):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
    return False


def server_leg_is_ssl(conn):
    return conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0]


# -- client leg ----------------------------------------------------------------------
def test_client_tls_is_off_by_default(sluice):
    pooler = sluice(server_tls_sslmode="disable")
    sock, answer = ssl_request(pooler)
    sock.close()
    assert answer == b"N"      # PgBouncer's default client_tls_sslmode = disable
    with pooler.connect(sslmode="prefer") as conn:
        assert not conn.pgconn.ssl_in_use
    with pytest.raises(psycopg.OperationalError, match="does not support SSL"):
        pooler.connect(sslmode="require")


def test_psql_verify_full_through_pgsluice_prints_1(pg, sluice, certs):
    pooler = sluice(**client_tls(certs))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    out = subprocess.run([str(pg.bindir / "psql"), "-X", pooler.dsn(**verify_full(certs)),
                          "-Atc", "select 1"],
                         capture_output=True, text=True, timeout=20, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_psycopg_verify_full_uses_tls(sluice, certs):
    pooler = sluice(**client_tls(certs))
    with pooler.connect(**verify_full(certs)) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select current_user").fetchone() == ("app",)


def test_client_certificate_is_for_the_configured_host(sluice, certs):
    """A client checking the host name against a name the certificate lacks refuses it."""
    pooler = sluice(**client_tls(certs, cert=certs.elsewhere))
    with pytest.raises(psycopg.OperationalError, match=TLS_VERIFY_ERROR):
        pooler.connect(**verify_full(certs))
    # verify-ca checks only the signature: the same certificate is accepted.
    with pooler.connect(sslmode="verify-ca", sslrootcert=str(certs.ca.crt)) as conn:
        assert conn.pgconn.ssl_in_use


@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
def test_plaintext_tcp_client_is_refused_with_28000_when_tls_is_required(sluice, certs, mode):
    pooler = sluice(**client_tls(certs, mode=mode))
    err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="app_pw")
    assert err.sqlstate == "28000", err
    assert err.severity == "FATAL"
    assert re.search(r"ssl required", err.message, re.I), err
    with pytest.raises(psycopg.OperationalError, match="(?i)SSL required"):
        pooler.connect(sslmode="disable")


def test_tls_client_gets_in_where_plaintext_is_refused(sluice, certs):
    pooler = sluice(**client_tls(certs))
    pgwire.login_error(pooler.host, pooler.port, "app", "app", password="app_pw")
    with pooler.connect(sslmode="prefer") as conn:        # libpq's default: tries TLS first
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)


def test_unix_socket_client_needs_no_tls_when_tls_is_required(sluice, certs):
    pooler = sluice(**client_tls(certs))
    with pooler.connect(host=str(pooler.workdir)) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)


@pytest.mark.parametrize("mode", ["allow", "prefer"])
def test_allow_and_prefer_accept_plaintext_and_tls_clients(sluice, certs, mode):
    pooler = sluice(**client_tls(certs, mode=mode))
    with pooler.connect(sslmode="disable") as plain:
        assert not plain.pgconn.ssl_in_use
        assert plain.execute("select 1").fetchone() == (1,)
    with pooler.connect(**verify_full(certs)) as tls:
        assert tls.pgconn.ssl_in_use
        assert tls.execute("select 1").fetchone() == (1,)


def test_tls_client_sees_the_login_error_pgsluice_sends(sluice, certs):
    """A FATAL error at login reaches a TLS client before the close, as it does in plaintext."""
    pooler = sluice(**client_tls(certs))
    with pytest.raises(psycopg.OperationalError,
                       match="SASL authentication failed"):
        pooler.connect(password="wrong", **verify_full(certs))
    with pytest.raises(psycopg.OperationalError, match="no such database: nope"):
        pooler.connect(dbname="nope", **verify_full(certs))


def test_tls_client_can_log_in_with_scram(sluice, certs):
    """pgwire's SCRAM over TLS: the password exchange works inside TLS too."""
    pooler = sluice(**client_tls(certs))
    with tls_login(pooler, certs, password="app_pw") as sess:
        assert sess.query("select current_user") == [["app"]]
    with pytest.raises(pgwire.ServerError) as caught:
        tls_login(pooler, certs, password="wrong")
    assert caught.value.sqlstate == "28P01", caught.value


def test_default_protocols_accept_tls_1_2_and_1_3(sluice, certs):
    pooler = sluice(**client_tls(certs))      # client_tls_protocols = secure
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                          (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        with tls_socket(pooler, certs, min_version=version, max_version=version) as sock:
            assert sock.version() == name


def test_client_tls_protocols_tlsv1_3_refuses_a_tls_1_2_client(sluice, certs):
    pooler = sluice(**client_tls(certs, client_tls_protocols="tlsv1.3"))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_socket(pooler, certs, max_version=ssl.TLSVersion.TLSv1_2).close()
    with tls_socket(pooler, certs, min_version=ssl.TLSVersion.TLSv1_3) as sock:
        assert sock.version() == "TLSv1.3"
    with pooler.connect(**verify_full(certs)) as conn:       # libpq negotiates 1.3
        assert conn.execute("select 1").fetchone() == (1,)


def test_missing_certificate_file_keeps_pgsluice_from_starting(sluice, certs, tmp_path):
    missing = tmp_path / "missing.crt"
    with pytest.raises(RuntimeError) as caught:
        sluice(client_tls_sslmode="require", client_tls_cert_file=missing,
               client_tls_key_file=certs.server.key)
    # The log says which setting (or which file) is wrong.
    assert re.search(rf"client_tls_cert_file|{re.escape(str(missing))}",
                     str(caught.value)), caught.value


# -- client certificates and auth_type = cert ----------------------------------------
def cert_auth_pooler(sluice, certs):
    return sluice(auth_type="cert", **client_tls(certs, mode="verify-full"))


def test_cert_auth_logs_in_as_the_certificate_cn_without_a_password(sluice, certs):
    pooler = cert_auth_pooler(sluice, certs)
    with pooler.connect(password="", **verify_full(certs, client=certs.client)) as conn:
        assert conn.execute("select current_user").fetchone() == ("app",)
    # pgwire fails when a password is asked for: none is.
    with tls_login(pooler, certs, client=certs.client) as sess:
        assert sess.query("select current_user") == [["app"]]


def test_cert_auth_refuses_a_client_without_a_certificate(sluice, certs, tmp_path):
    pooler = cert_auth_pooler(sluice, certs)
    no_cert = {"sslcert": str(tmp_path / "none.crt"), "sslkey": str(tmp_path / "none.key")}
    with pytest.raises(psycopg.OperationalError, match=CLIENT_CERT_REFUSED):
        pooler.connect(password="app_pw", **verify_full(certs), **no_cert)
    # The refusal is per client.
    with pooler.connect(password="", **verify_full(certs, client=certs.client)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_cert_auth_refuses_a_user_other_than_the_cn_with_28000(sluice, certs):
    """PostgreSQL's own cert method answers 28000 here (28P01 is for password methods)."""
    pooler = cert_auth_pooler(sluice, certs)
    with pytest.raises(pgwire.ServerError) as caught:
        tls_login(pooler, certs, user="trust_user", client=certs.client)
    assert caught.value.sqlstate == "28000", caught.value
    assert caught.value.severity == "FATAL"
    assert 'certificate authentication failed for user "trust_user"' in caught.value.message


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_client_certificate_from_another_ca_is_refused(sluice, certs, mode):
    pooler = sluice(**client_tls(certs, mode=mode))     # auth_type stays scram-sha-256
    with pytest.raises(psycopg.OperationalError, match=CLIENT_CERT_REFUSED):
        pooler.connect(**verify_full(certs, client=certs.other_client))
    with pytest.raises(psycopg.OperationalError, match=CLIENT_CERT_REFUSED):
        pooler.connect(**verify_full(certs))                # no certificate at all
    with pooler.connect(**verify_full(certs, client=certs.client)) as conn:
        assert conn.execute("select current_user").fetchone() == ("app",)


# -- bad input during the handshake ---------------------------------------------------
def test_garbage_during_tls_handshake_does_not_disturb_other_clients(sluice, certs):
    pooler = sluice(**client_tls(certs))
    rng = random.Random(80877103)
    junk = bytes([0x00]) + rng.randbytes(199)                 # not a TLS record at all
    # A TLS handshake record header (0x16, version 3.1) with a ClientHello type and
    # length, then random bytes: gets past the record layer into the parser.
    fake_hello = b"\x16\x03\x01\x00\xc3\x01\x00\x00\xbf" + rng.randbytes(191)
    with pooler.connect(**verify_full(certs)) as established:
        assert established.execute("select 1").fetchone() == (1,)
        opened = []
        try:
            for payload in (junk, fake_hello):
                sock, answer = ssl_request(pooler)
                opened.append(sock)
                assert answer == b"S"
                sock.sendall(payload)
            # A handshake that starts and stalls: a record header promising 512 bytes.
            stalled, answer = ssl_request(pooler)
            opened.append(stalled)
            assert answer == b"S"
            stalled.sendall(b"\x16\x03\x01\x02\x00")

            assert established.execute("select 2").fetchone() == (2,)
            with pooler.connect(**verify_full(certs)) as newcomer:
                assert newcomer.pgconn.ssl_in_use
                assert newcomer.execute("select 3").fetchone() == (3,)
            for sock in opened[:2]:
                assert closed_by_peer(sock, 5), "garbage handshake left open by the pooler"
        finally:
            for sock in opened:
                sock.close()
        assert established.execute("select 4").fetchone() == (4,)
    assert pooler.proc.poll() is None, "pooler exited"
    with pooler.connect(**verify_full(certs)) as after:
        assert after.execute("select 5").fetchone() == (5,)


def test_stalled_tls_handshake_is_closed_after_client_login_timeout(sluice, certs):
    pooler = sluice(**client_tls(certs, client_login_timeout=1))
    stalled, answer = ssl_request(pooler)
    try:
        assert answer == b"S"
        stalled.sendall(b"\x16\x03\x01\x02\x00")      # a ClientHello that never comes
        assert closed_by_peer(stalled, 10), "stalled handshake still open after 10 s"
    finally:
        stalled.close()
    with pooler.connect(**verify_full(certs)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


# -- certificates reloaded on SIGHUP --------------------------------------------------
def copy_cert(cert, directory, name):
    """Copy cert into directory as name.crt / name.key; returns the new Cert."""
    crt, key = Path(directory) / f"{name}.crt", Path(directory) / f"{name}.key"
    shutil.copyfile(cert.crt, crt)
    shutil.copyfile(cert.key, key)
    key.chmod(0o600)
    return Cert(crt, key, cert.serial)


def test_sighup_reloads_a_certificate_rewritten_in_place(sluice, certs, tmp_path):
    live = copy_cert(certs.server, tmp_path, "live")
    pooler = sluice(**client_tls(certs, cert=live))
    assert served_serial(pooler, certs) == certs.server.serial
    with pooler.connect(**verify_full(certs)) as before:
        rotated = certs.factory.issue("rotated", certs.ca, "localhost-rotated", SERVER_SAN)
        copy_cert(rotated, tmp_path, "live")
        pooler.reload()
        wait_for(lambda: served_serial(pooler, certs) == rotated.serial, 5,
                 what="new TLS clients served the rotated certificate")
        # A session that began with the old certificate goes on.
        assert before.execute("select 1").fetchone() == (1,)
    with pooler.connect(**verify_full(certs)) as after:
        assert after.pgconn.ssl_in_use


def test_sighup_switches_to_new_certificate_files_and_old_ones_may_go(sluice, certs, tmp_path):
    old = copy_cert(certs.server, tmp_path, "old")
    pooler = sluice(**client_tls(certs, cert=old))
    assert served_serial(pooler, certs) == certs.server.serial
    renewed = certs.factory.issue("renewed", certs.ca, "localhost-renewed", SERVER_SAN)
    pooler.reload(client_tls_cert_file=renewed.crt, client_tls_key_file=renewed.key)
    wait_for(lambda: served_serial(pooler, certs) == renewed.serial, 5,
             what="new TLS clients served the renewed certificate")
    old.crt.unlink()
    old.key.unlink()
    for _ in range(3):
        with pooler.connect(**verify_full(certs)) as conn:
            assert conn.execute("select 1").fetchone() == (1,)


def test_reload_with_a_missing_certificate_keeps_serving_the_old_one(sluice, certs, tmp_path):
    pooler = sluice(**client_tls(certs))
    missing = tmp_path / "missing.crt"
    log_before = len(pooler.logfile.read_text(errors="replace"))
    pooler.reload(client_tls_cert_file=missing)
    new_log = lambda: pooler.logfile.read_text(errors="replace")[log_before:]  # noqa: E731
    wait_for(lambda: re.search(rf"client_tls_cert_file|{re.escape(str(missing))}", new_log()),
             5, what="a log line about the bad client_tls_cert_file")
    assert pooler.proc.poll() is None, "pooler exited on a bad reload"
    assert served_serial(pooler, certs) == certs.server.serial
    with pooler.connect(**verify_full(certs)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_sighup_applies_a_new_client_ca(sluice, certs):
    """client_tls_ca_file changed by reload: clients of the new CA get in, the old ones not."""
    pooler = sluice(**client_tls(certs, mode="verify-ca"))
    with pooler.connect(**verify_full(certs, client=certs.client)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    pooler.reload(client_tls_ca_file=certs.other_ca.crt)

    def other_ca_client_gets_in():
        try:
            with pooler.connect(**verify_full(certs, client=certs.other_client)):
                return True
        except psycopg.OperationalError:
            return False
    wait_for(other_ca_client_gets_in, 5, interval=0.1, what="client of the new CA admitted")
    with pytest.raises(psycopg.OperationalError):
        pooler.connect(**verify_full(certs, client=certs.client))


# -- server leg -------------------------------------------------------------------------
def test_require_to_a_postgresql_without_ssl_fails_with_08006(sluice, pg, certs):
    """Runs before pg_tls turns ssl on: require is never downgraded to plaintext."""
    if pg_accepts_tls(pg, certs, sslmode="require"):
        pytest.skip("the test PostgreSQL has ssl = on")
    pooler = sluice(server_tls_sslmode="require")
    err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="app_pw")
    assert err.sqlstate == "08006", err
    assert re.search(r"ssl|tls", full_text(err), re.I), err.fields


def test_verify_full_to_postgresql_is_an_ssl_connection_in_pg_stat_ssl(sluice, certs, pg_tls):
    pooler = sluice(server_tls_sslmode="verify-full", server_tls_ca_file=certs.ca.crt)
    with pooler.connect() as conn:
        row = conn.execute("SELECT ssl, version FROM pg_stat_ssl"
                           " WHERE pid = pg_backend_pid()").fetchone()
    assert row[0] is True, row
    assert row[1] in ("TLSv1.2", "TLSv1.3"), row


@pytest.mark.parametrize("mode, ssl_expected", [
    (None, True),            # PgBouncer's default prefer: TLS when the server offers it
    ("prefer", True),
    ("require", True),
    ("verify-ca", True),
    ("allow", False),        # as in PgBouncer, allow does not ask for TLS
    ("disable", False),
])
def test_server_tls_sslmode_decides_whether_postgresql_sees_ssl(sluice, certs, pg_tls,
                                                                mode, ssl_expected):
    overrides = {"server_tls_ca_file": certs.ca.crt}
    if mode is not None:
        overrides["server_tls_sslmode"] = mode
    with sluice(**overrides).connect() as conn:
        assert server_leg_is_ssl(conn) is ssl_expected


def test_verify_full_to_postgresql_by_dns_name(pg, sluice, certs, pg_tls):
    pooler = sluice(server_tls_sslmode="verify-full", server_tls_ca_file=certs.ca.crt,
                    databases={"bydns": f"host=localhost port={pg.port} dbname=app"})
    with pooler.connect(dbname="bydns") as conn:
        assert server_leg_is_ssl(conn) is True


def assert_refused_for_tls(pooler):
    """A client of pooler gets a login error that names the certificate problem."""
    with pytest.raises(psycopg.OperationalError) as caught:
        pooler.connect()
    assert TLS_VERIFY_ERROR.search(str(caught.value)), caught.value
    err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="app_pw")
    assert err.sqlstate == "08006", err
    assert TLS_VERIFY_ERROR.search(full_text(err)), err.fields


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_postgresql_certificate_from_an_unknown_ca_is_refused(sluice, certs, pg_tls, mode):
    assert_refused_for_tls(sluice(server_tls_sslmode=mode,
                                  server_tls_ca_file=certs.other_ca.crt))


def test_verify_full_refuses_a_postgresql_certificate_for_another_host(sluice, certs, pg_tls):
    pg_tls.serve(certs.elsewhere)      # signed by the CA, but not for 127.0.0.1
    try:
        assert_refused_for_tls(sluice(server_tls_sslmode="verify-full",
                                      server_tls_ca_file=certs.ca.crt))
        # verify-ca checks the signature only: the same server is accepted.
        with sluice(server_tls_sslmode="verify-ca",
                    server_tls_ca_file=certs.ca.crt).connect() as conn:
            assert server_leg_is_ssl(conn) is True
    finally:
        pg_tls.serve(certs.server)


# -- both legs ------------------------------------------------------------------------
def both_legs_verify_full(sluice, certs):
    return sluice(**client_tls(certs, server_tls_sslmode="verify-full",
                               server_tls_ca_file=certs.ca.crt))


def test_psql_verify_full_on_both_legs(pg, sluice, certs, pg_tls):
    pooler = both_legs_verify_full(sluice, certs)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    out = subprocess.run([str(pg.bindir / "psql"), "-X", pooler.dsn(**verify_full(certs)),
                          "-Atc", "select 1"],
                         capture_output=True, text=True, timeout=20, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_psycopg_verify_full_on_both_legs(sluice, certs, pg_tls):
    pooler = both_legs_verify_full(sluice, certs)
    with pooler.connect(**verify_full(certs)) as conn:
        assert conn.pgconn.ssl_in_use
        assert server_leg_is_ssl(conn) is True
        assert conn.execute("select count(*) from generate_series(1, 50000)").fetchone() \
            == (50000,)
