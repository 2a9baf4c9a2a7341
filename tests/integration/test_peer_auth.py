# SPDX-License-Identifier: PostgreSQL
"""Peer authentication, user name maps and the methods pgsluice refuses (issue 12 item 7, docs/hba.md).

An operator's pgbouncer.ini with `auth_type = peer`, or an hba file with
`local ... peer map=...` and an `auth_ident_file`, works unchanged: the OS
user at the other end of the Unix socket (SO_PEERCRED) is the role, or maps
to it. `ident` over TCP, `ldap` and `pam` load but refuse logins with a clear
28000. PgBouncer's console rule holds too: user `pgbouncer` over the Unix
socket from the pooler's own OS user logs in without a password.

The tests connect as the OS user running them (root under CI: the pooler
runs as root too, so the uids match either way).
"""

import os
import pwd

import psycopg

import pgwire

ME = pwd.getpwuid(os.geteuid()).pw_name


def start(sluice, hba=None, ident=None, **overrides):
    pooler = sluice(start=False, **overrides)
    if hba is not None:
        (pooler.workdir / "hba.conf").write_text(hba)
        pooler.overrides.update(auth_type="hba", auth_hba_file=pooler.workdir / "hba.conf")
    if ident is not None:
        (pooler.workdir / "ident.conf").write_text(ident)
        pooler.overrides["auth_ident_file"] = pooler.workdir / "ident.conf"
    return pooler.start()


def over_unix(pooler, user, dbname="app"):
    return psycopg.connect(pooler.dsn(user=user, dbname=dbname, host=str(pooler.workdir), password=""),
                           autocommit=True)


def refused(pooler, user, sqlstate, message, dbname="app", unix=True, password=None):
    """The login fails with sqlstate and a message containing message."""
    host = str(pooler.workdir) if unix else pooler.host
    err = pgwire.login_error(host, pooler.port, user, dbname, password=password)
    assert err.sqlstate == sqlstate, err
    assert message in str(err), err


def test_hba_peer_rule_with_a_map_lets_the_mapped_os_user_in(sluice):
    pooler = start(sluice, hba="local all all peer map=ops\nhost all all all scram-sha-256\n",
                   ident=f"# MAPNAME SYSTEM-USERNAME PG-USERNAME\nops {ME} app\nops /^nobody$ pw_user\n")
    with over_unix(pooler, "app") as conn:
        assert conn.execute("select current_user").fetchone() == ("app",)
    refused(pooler, "pw_user", "28000", 'Peer authentication failed for user "pw_user"')
    # TCP still takes the next rule's password method
    with pooler.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert f'no match in usermap "ops" for user "pw_user" authenticated as "{ME}"' in pooler.log_text()


def test_auth_type_peer_needs_the_os_user_to_be_the_role(sluice):
    pooler = start(sluice, auth_type="peer")
    # scramdb forces the server role (user=app): the client role is the OS user's name
    with over_unix(pooler, ME, dbname="scramdb") as conn:
        assert conn.execute("select current_user").fetchone() == ("app",)
    refused(pooler, "app" if ME != "app" else "pw_user", "28000", "Peer authentication failed for user")
    refused(pooler, ME, "28000", "peer authentication is only supported on local sockets",
            dbname="scramdb", unix=False)


def test_a_reload_picks_up_a_changed_ident_file(sluice):
    pooler = start(sluice, hba="local all all peer map=ops\n", ident="ops nobody app\n")
    refused(pooler, "app", "28000", 'Peer authentication failed for user "app"')
    (pooler.workdir / "ident.conf").write_text(f"ops {ME} app\n")
    with pooler.connect(dbname="pgsluice", host=str(pooler.workdir), user="pgbouncer", password="") as admin:
        psycopg.ClientCursor(admin).execute("RELOAD")
    with over_unix(pooler, "app") as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_ident_over_tcp_refuses_logins_clearly_and_ldap_pam_lines_ask_for_a_password(sluice, tmp_path):
    pam_d = tmp_path / "pam.d"
    pam_d.mkdir()
    (pam_d / "pgbouncer").write_text("auth required pam_deny.so\naccount required pam_deny.so\n")
    pooler = start(sluice, hba="host all pw_user all ident\n"
                               "host all md5_user all pam pamservice=postgresql\n"
                               "host all all all ldap ldapserver=ldap.example.invalid ldapprefix=\"cn=\"\n",
                   auth_pam_confdir=pam_d)
    refused(pooler, "pw_user", "28000",
            "ident authentication over TCP is not supported by pgsluice (pg_hba.conf line 1)", unix=False)
    # pam and ldap (test_pgb_parity_c.py, test_auth_ldap.py): the password is asked for and checked
    refused(pooler, "md5_user", "28000", 'PAM authentication failed for user "md5_user"', unix=False,
            password="md5_pw")
    refused(pooler, "app", "28000", 'LDAP authentication failed for user "app"', unix=False, password="x")
    # auth_ldap_options that do not parse: the login is refused and the log says why
    ldap = sluice(auth_type="ldap", auth_ldap_options="host=ldap.example.com basedn=dc=example,dc=com")
    refused(ldap, "app", "28000", 'LDAP authentication failed for user "app"')
    assert 'auth_ldap_options: unrecognized authentication option name: "host"' in ldap.log_text(lines=None)


def test_pgbouncer_user_logs_in_to_the_console_over_the_unix_socket_without_a_password(sluice):
    pooler = sluice(admin_users="md5_user")
    with psycopg.connect(pooler.dsn(user="pgbouncer", dbname="pgbouncer", host=str(pooler.workdir),
                                    password=""), autocommit=True,
                         cursor_factory=psycopg.ClientCursor) as conn:
        assert conn.execute("SHOW VERSION").fetchone()[0].startswith("pgsluice ")
        conn.execute("PAUSE app")                 # an admin command: the own user is an admin
        conn.execute("RESUME app")
    # over TCP, or to another database, "pgbouncer" is an ordinary (unknown) user
    refused(pooler, "pgbouncer", "28P01", "SASL authentication failed",
            dbname="pgbouncer", unix=False, password="x")
