# SPDX-License-Identifier: PostgreSQL
"""Issue 17, "Stop the bleeding": authentication before the database check, and
configuration that does what it says (admin SET, RELOAD, PgBouncer's literals,
keys nothing read, options=-c).

Refusals are checked with pgwire.login_error (libpq loses the SQLSTATE).
"""

import os
import socket
import struct
import threading
import time

import psycopg
import pytest

import pgwire
from harness import wait_for
# the TLS module's certificates and its ssl = on PostgreSQL (module-scoped fixtures)
from test_tls import certs, client_tls, pg_tls, server_leg_is_ssl, verify_full  # noqa: F401

PASSWORD_AUTH_TYPES = ["scram-sha-256", "md5", "plain"]


def console(pooler):
    return pooler.connect(dbname="pgsluice")


def show_config(pooler):
    with console(pooler) as conn:
        return dict((r[0], r[1]) for r in conn.execute("SHOW CONFIG").fetchall())


def plaintext_refusal(pooler):
    return pgwire.login_error(pooler.host, pooler.port, "app", "app", password="app_pw")


def hba_file(tmp_path, method):
    path = tmp_path / "pg_hba.conf"
    path.write_text(f"host all all 127.0.0.1/32 {method}\n")
    return path


# -- 7. authentication before "database does not exist" ---------------------------
@pytest.mark.parametrize("auth_type", PASSWORD_AUTH_TYPES + ["hba"])
def test_unknown_database_is_told_only_after_the_password_is_checked(sluice, tmp_path, auth_type):
    extra = {"auth_hba_file": hba_file(tmp_path, "scram-sha-256")} if auth_type == "hba" else {}
    pooler = sluice(auth_type=auth_type, **extra)
    known = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="wrong_pw")
    unknown = pgwire.login_error(pooler.host, pooler.port, "app", "no_such_db", password="wrong_pw")
    assert known.sqlstate == "28P01", known
    assert (unknown.sqlstate, unknown.message) == (known.sqlstate, known.message)
    # The right password then learns that the database does not exist.
    err = pgwire.login_error(pooler.host, pooler.port, "app", "no_such_db", password="app_pw")
    assert err.sqlstate == "3D000", err
    assert err.message == "no such database: no_such_db"   # PgBouncer's text


def test_trust_refuses_an_unknown_user_alike_for_every_database(sluice):
    pooler = sluice(auth_type="trust")
    known = pgwire.login_error(pooler.host, pooler.port, "nobody_here", "app")
    unknown = pgwire.login_error(pooler.host, pooler.port, "nobody_here", "no_such_db")
    assert known.sqlstate.startswith("28"), known
    assert (unknown.sqlstate, unknown.message) == (known.sqlstate, known.message)
    # A user trust lets in learns that the database does not exist.
    err = pgwire.login_error(pooler.host, pooler.port, "app", "no_such_db")
    assert err.sqlstate == "3D000", err


@pytest.mark.parametrize("auth_type, code", [("scram-sha-256", 10), ("md5", 5), ("plain", 3)])
def test_unknown_database_is_asked_for_the_password_first(sluice, auth_type, code):
    """No early close: the first answer to the startup packet is the same
    authentication request for an unknown database as for a known one."""
    pooler = sluice(auth_type=auth_type)
    for dbname in ("app", "no_such_db"):
        sock = socket.create_connection((pooler.host, pooler.port), timeout=5)
        try:
            sess = pgwire.Session(sock, 5)
            body = struct.pack("!I", pgwire.PROTOCOL_V3)
            body += b"user\0app\0database\0" + dbname.encode() + b"\0\0"
            sess.send(b"", body)
            msg_type, reply = sess.read()
            assert (msg_type, struct.unpack("!I", reply[:4])[0]) == ("R", code), (dbname, msg_type, reply)
        finally:
            sock.close()


# -- 15. server_check_query = <empty> --------------------------------------------
def test_server_check_query_empty_literal_checks_without_sql(sluice):
    pooler = sluice(server_check_query="<empty>", server_check_delay=0, default_pool_size=1)
    pids = set()
    for _ in range(3):   # every reuse of the one server connection is checked, and passes
        with pooler.connect() as conn:
            assert conn.execute("select 41 + 1").fetchone() == (42,)
            pids.add(conn.execute("select pg_backend_pid()").fetchone()[0])
    assert len(pids) == 1, pids
    # An empty value turns the check off (PgBouncer 1.25's meaning).
    with console(pooler) as admin:
        admin.execute("SET server_check_query = ''")
    for _ in range(2):
        with pooler.connect() as conn:
            assert conn.execute("select 1").fetchone() == (1,)


def test_server_check_query_defaults_to_empty_literal_as_pgbouncer(sluice):
    pooler = sluice(server_check_delay=0, default_pool_size=1)
    assert show_config(pooler)["server_check_query"] == "<empty>"
    for _ in range(2):
        with pooler.connect() as conn:
            assert conn.execute("select 1").fetchone() == (1,)


def test_none_and_empty_placeholders_of_other_keys_mean_not_set(sluice):
    """server_reset_query = <empty> is not sent as SQL: the one server connection
    is reset by nothing and reused, instead of failing its reset and closing."""
    pooler = sluice(server_reset_query="<empty>", auth_user="<none>", default_pool_size=1,
                    pool_mode="session")
    pids = set()
    for _ in range(3):
        with pooler.connect() as conn:
            pids.add(conn.execute("select pg_backend_pid()").fetchone()[0])
    assert len(pids) == 1, pids
    config = show_config(pooler)
    assert (config["server_reset_query"], config["auth_user"]) == ("", "")


def test_system_default_ca_placeholder_uses_the_system_store(sluice, certs, pg_tls):
    """The test CA is not in the system store, so verify-ca refuses PostgreSQL's
    certificate; pgsluice starts, instead of looking for a file "<system default>"."""
    pooler = sluice(server_tls_sslmode="verify-ca", server_tls_ca_file="<system default>")
    assert show_config(pooler)["server_tls_ca_file"] == "<system default>"
    err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="app_pw")
    assert err.sqlstate == "08006", err


# -- 16. keys nothing read --------------------------------------------------------
def test_application_name_add_host_is_seen_in_pg_stat_activity(sluice, pg):
    pooler = sluice(application_name_add_host=1)
    with pooler.connect(application_name="reporting") as conn:
        shown = conn.execute("show application_name").fetchone()[0]
        seen = pg.query("select application_name from pg_stat_activity "
                        "where application_name like 'reporting - %'")
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as own:
            client_port = own.getsockname()[1]
    assert shown == f"reporting - 127.0.0.1:{client_port}"
    assert [r[0] for r in seen] == [shown]


def test_application_name_add_host_names_app_when_the_client_sent_none(sluice):
    pooler = sluice(application_name_add_host=1)
    with psycopg.connect(pooler.dsn(), autocommit=True) as conn:
        shown = conn.execute("show application_name").fetchone()[0]
    assert shown.startswith("app - 127.0.0.1:"), shown


@pytest.mark.parametrize("key, value", [("pkt_buf", "8192"), ("sbuf_loopcnt", "10")])
def test_buffer_tuning_keys_are_warned_about_as_not_supported(sluice, key, value):
    pooler = sluice(extra_ini=f"{key} = {value}")
    line = pooler.line_of(key)
    wait_for(lambda: f'PgBouncer key "{key}" is not supported by pgsluice and is ignored'
             in pooler.log_text(), 5, what=f"warning for {key}")
    assert f"{pooler.ini_path}:{line}:" in pooler.log_text()
    with pooler.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


class StallingProxy:
    """A TCP proxy to PostgreSQL that serves the first connection only: then its
    accept queue is filled, so a later connect (a forwarded cancel request)
    hangs unanswered, as with a server host that stopped answering."""

    def __init__(self, pg):
        self.target = (pg.host, pg.port)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.socks = [self.listener]
        threading.Thread(target=self._serve_first, daemon=True).start()

    def _serve_first(self):
        client, _ = self.listener.accept()
        upstream = socket.create_connection(self.target)
        self.socks += [client, upstream]
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", self.port))   # sits in the accept queue for good
        self.socks.append(filler)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        for sock in self.socks:
            sock.close()


def test_cancel_request_not_forwarded_within_cancel_wait_timeout_is_dropped(sluice, pg):
    proxy = StallingProxy(pg)
    try:
        pooler = sluice(cancel_wait_timeout=1, server_tls_sslmode="disable",
                        databases={"app": f"host=127.0.0.1 port={proxy.port} dbname=app"})
        with pooler.connect() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
            timer = threading.Timer(0.3, conn.cancel)
            timer.start()
            started = time.monotonic()
            conn.execute("select pg_sleep(2)")   # the cancel never reaches PostgreSQL
            timer.join()
            assert time.monotonic() - started >= 1.9
        wait_for(lambda: "cancel request not forwarded within cancel_wait_timeout"
                 in pooler.log_text(), 3, what="the dropped cancel request logged")
    finally:
        proxy.close()


# -- 17. options=-c with ignore_startup_parameters --------------------------------
def test_options_setting_in_ignore_startup_parameters_is_ignored(sluice):
    pooler = sluice(ignore_startup_parameters="extra_float_digits")
    with pooler.connect(options="-c extra_float_digits=3") as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_options_keeps_tracked_settings_next_to_ignored_ones(sluice):
    pooler = sluice(ignore_startup_parameters="extra_float_digits", pool_mode="transaction")
    with pooler.connect(options="-c extra_float_digits=3 -c TimeZone=Asia/Tokyo") as conn:
        assert conn.execute("show timezone").fetchone() == ("Asia/Tokyo",)


def test_options_setting_not_ignored_is_a_session_setting(sluice):
    """A -c setting neither tracked nor ignored follows the client onto its
    servers (docs/pooling.md, "Session settings under transaction pooling")."""
    pooler = sluice(ignore_startup_parameters="extra_float_digits", pool_mode="transaction")
    with pooler.connect(options="-c extra_float_digits=3 -c work_mem=64MB") as conn:
        assert conn.execute("show work_mem").fetchone() == ("64MB",)


def test_options_word_that_is_no_setting_is_refused_with_08P01_naming_it(sluice):
    pooler = sluice(ignore_startup_parameters="extra_float_digits")
    err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="app_pw",
                             params={"options": "-c extra_float_digits=3 -x"})
    assert err.sqlstate == "08P01", err
    assert "only '-c config=val' and '--config=val' are allowed" in err.message


# -- 14. admin SET and RELOAD take effect, or say why not ----------------------------



def test_admin_set_client_tls_sslmode_takes_effect_for_new_clients(sluice, certs):
    pooler = sluice(**client_tls(certs, mode="disable"))
    with pooler.connect() as conn:          # plaintext TCP is fine while TLS is off
        assert conn.execute("select 1").fetchone() == (1,)
    with console(pooler) as conn:
        conn.execute("SET client_tls_sslmode = require")
    assert show_config(pooler)["client_tls_sslmode"] == "require"
    err = plaintext_refusal(pooler)
    assert (err.sqlstate, err.message) == ("28000", "SSL required"), err
    with pooler.connect(**verify_full(certs)) as conn:
        assert conn.pgconn.ssl_in_use


def test_admin_set_of_an_unloadable_certificate_is_refused_and_the_old_one_kept(sluice, certs, tmp_path):
    pooler = sluice(**client_tls(certs))
    missing = tmp_path / "missing.crt"
    with console(pooler) as conn:
        with pytest.raises(psycopg.errors.ProtocolViolation, match="SET failed") as exc:   # PgBouncer's
            conn.execute(f"SET client_tls_cert_file = '{missing}'")
    assert "client_tls_cert_file" in str(exc.value)
    assert show_config(pooler)["client_tls_cert_file"] == str(certs.server.crt)
    with pooler.connect(**verify_full(certs)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_admin_set_auth_file_loads_the_new_file(sluice, tmp_path):
    pooler = sluice()
    other = tmp_path / "userlist2.txt"
    other.write_text('"app" "other_pw"\n')
    with console(pooler) as conn:
        conn.execute(f"SET auth_file = '{other}'")
    err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="app_pw")
    assert err.sqlstate == "28P01", err
    # The password of the new file is the one asked for now.
    with pgwire.login(pooler.host, pooler.port, "app", "pgsluice", password="other_pw") as sess:
        assert sess.query("SHOW VERSION")


def test_admin_set_of_a_restart_only_key_says_it_cannot_change_at_run_time(sluice):
    pooler = sluice()
    with console(pooler) as conn:
        with pytest.raises(psycopg.errors.CantChangeRuntimeParam) as exc:
            conn.execute("SET unix_socket_dir = '/tmp'")
    assert "cannot be changed without restarting" in str(exc.value)


def test_admin_set_auth_user_looks_roles_up_as_the_new_user(sluice, pg, monkeypatch):
    """The auth_query connection of the old auth_user (who may not read
    pg_authid) is closed, so the lookup runs as the new one."""
    import harness
    for role in ("cfg_aq_role", "cfg_aq_weak", "cfg_aq_lookup"):
        pg.query(f"DROP ROLE IF EXISTS {role}")
    pg.query("CREATE ROLE cfg_aq_lookup LOGIN SUPERUSER PASSWORD 'lookup_pw'")
    pg.query("CREATE ROLE cfg_aq_weak LOGIN PASSWORD 'weak_pw'")
    pg.query("CREATE ROLE cfg_aq_role LOGIN PASSWORD 'aq_pw'")
    monkeypatch.setitem(harness.PASSWORDS, "cfg_aq_lookup", "lookup_pw")
    monkeypatch.setitem(harness.PASSWORDS, "cfg_aq_weak", "weak_pw")
    pooler = sluice(auth_type="scram-sha-256", auth_user="cfg_aq_weak")
    err = pgwire.login_error(pooler.host, pooler.port, "cfg_aq_role", "app", password="aq_pw")
    # cfg_aq_weak may not read pg_authid: the query fails, PgBouncer's "bouncer config error"
    assert err.sqlstate == "F0000" and err.message == "bouncer config error", err
    with console(pooler) as conn:
        conn.execute("SET auth_user = cfg_aq_lookup")
    with pooler.connect(user="cfg_aq_role", password="aq_pw") as conn:
        assert conn.execute("select current_user").fetchone() == ("cfg_aq_role",)


def test_console_reload_of_a_bad_file_answers_its_file_and_line(sluice):
    pooler = sluice(default_pool_size=3)
    pooler.extra_ini = "default_pool_size = lots"
    pooler.write_config()
    line = [n for n, text in enumerate(pooler.ini_path.read_text().splitlines(), 1)
            if text == "default_pool_size = lots"][0]
    with console(pooler) as conn:
        with pytest.raises(psycopg.errors.ConfigFileError) as exc:
            conn.execute("RELOAD")
    assert f"{pooler.ini_path}:{line}:" in str(exc.value)
    assert "default_pool_size" in str(exc.value)
    assert show_config(pooler)["default_pool_size"] == "3"   # the old configuration is kept
    with pooler.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_reload_of_server_tls_retires_servers_made_without_it(sluice, certs, pg_tls):
    pooler = sluice(server_tls_sslmode="disable", pool_mode="session", default_pool_size=2)
    with pooler.connect() as conn:
        assert server_leg_is_ssl(conn) is False
    busy = pooler.connect()
    assert server_leg_is_ssl(busy) is False
    pooler.reload(server_tls_sslmode="verify-full", server_tls_ca_file=certs.ca.crt)
    wait_for(lambda: show_config(pooler)["server_tls_sslmode"] == "verify-full", 5,
             what="the reload applied")
    # The idle plain server is gone: a new client gets a TLS server leg.
    with pooler.connect() as conn:
        assert server_leg_is_ssl(conn) is True
    # The busy one is kept for its session, marked to close when released.
    assert server_leg_is_ssl(busy) is False
    with console(pooler) as conn:
        cur = conn.execute("SHOW SERVERS")
        servers = [dict(zip([d.name for d in cur.description], r)) for r in cur.fetchall()]
    assert sorted(s["close_needed"] for s in servers) == [0, 1], servers
    busy.close()
    for _ in range(2):
        with pooler.connect() as conn:
            assert server_leg_is_ssl(conn) is True

