# SPDX-License-Identifier: PostgreSQL
"""Authentication towards clients (auth_type) and towards PostgreSQL (server auth methods).

Refusals are checked with pgwire.login_error, because libpq does not report
the SQLSTATE of a failed connection attempt.
"""

import psycopg
import pytest

import pgwire

CLIENT_AUTH_TYPES = ["scram-sha-256", "md5", "plain"]


@pytest.mark.parametrize("auth_type", CLIENT_AUTH_TYPES)
def test_right_password_logs_in(sluice, auth_type):
    with sluice(auth_type=auth_type).connect(user="app", password="app_pw") as conn:
        assert conn.execute("select current_user").fetchone() == ("app",)


@pytest.mark.parametrize("auth_type", CLIENT_AUTH_TYPES)
def test_wrong_password_is_28P01(sluice, auth_type):
    pooler = sluice(auth_type=auth_type)
    err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="not_app_pw")
    assert err.sqlstate == "28P01", err
    assert err.severity == "FATAL"
    # The refusal is per client: the right password still gets in.
    with pooler.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_wrong_password_is_refused_by_libpq_clients_too(sluice):
    pooler = sluice()
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        pooler.connect(password="wrong")


def test_user_missing_from_auth_file_is_28P01(sluice):
    pooler = sluice()
    err = pgwire.login_error(pooler.host, pooler.port, "nobody_here", "app",
                             password="whatever")
    # docs/errors.md: failed authentication is 28P01 (28000 for other refusals).
    assert err.sqlstate in ("28P01", "28000"), err


def test_trust_lets_any_listed_user_in_without_password(sluice):
    pooler = sluice(auth_type="trust")
    with pgwire.login(pooler.host, pooler.port, "app", "app") as sess:
        assert sess.query("select current_user") == [["app"]]


@pytest.mark.parametrize("dbname, role", [
    ("trustdb", "trust_user"),   # PostgreSQL: trust
    ("pwdb", "pw_user"),         # PostgreSQL: password (cleartext)
    ("md5db", "md5_user"),       # PostgreSQL: md5
    ("scramdb", "app"),          # PostgreSQL: scram-sha-256
])
def test_pooler_logs_in_to_server_with_each_auth_method(sluice, dbname, role):
    with sluice().connect(user="app", dbname=dbname) as conn:
        assert conn.execute("select current_user").fetchone() == (role,)


@pytest.mark.parametrize("role", ["pw_user", "md5_user"])
def test_client_role_is_used_for_server_login(sluice, role):
    with sluice().connect(user=role, dbname="app") as conn:
        assert conn.execute("select current_user").fetchone() == (role,)


def test_unknown_database_is_3D000(sluice):
    pooler = sluice()
    err = pgwire.login_error(pooler.host, pooler.port, "app", "no_such_db", password="app_pw")
    assert err.sqlstate == "3D000", err
    assert "no_such_db" in err.message


def test_hba_rules_choose_the_method_and_reject_as_written(sluice, tmp_path):
    hba = tmp_path / "pg_hba.conf"
    hba.write_text(
        "# first match wins\n"
        "host  all  pw_user   127.0.0.1/32  reject\n"          # line 2
        "host  app  md5_user  127.0.0.1/32  password\n"        # line 3
        "host  all  app       127.0.0.0/8   scram-sha-256\n"   # line 4
    )
    pooler = sluice(auth_type="hba", auth_hba_file=str(hba))
    with pooler.connect(user="app", password="app_pw") as conn:
        assert conn.execute("select current_user").fetchone() == ("app",)
    # Cleartext password exchange as the rule says; the server login is the pooler's.
    with pgwire.login(pooler.host, pooler.port, "md5_user", "app", password="md5_pw") as sess:
        assert sess.query("select current_user") == [["md5_user"]]
    err = pgwire.login_error(pooler.host, pooler.port, "pw_user", "app", password="pw_pw")
    assert err.sqlstate == "28000", err
    assert "pg_hba.conf rejects connection" in err.message
    err = pgwire.login_error(pooler.host, pooler.port, "trust_user", "app", password="x")
    assert err.sqlstate == "28000", err
    assert "no pg_hba.conf entry" in err.message
    err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="wrong")
    assert err.sqlstate == "28P01", err


def test_bad_hba_file_keeps_pgsluice_from_starting(sluice, tmp_path):
    hba = tmp_path / "pg_hba.conf"
    hba.write_text("host all all 127.0.0.1/32 peer\n")
    with pytest.raises(Exception) as caught:
        sluice(auth_type="hba", auth_hba_file=str(hba))
    assert "pg_hba.conf:1" in str(caught.value), caught.value


def test_auth_query_logs_in_a_role_missing_from_auth_file(sluice, pg, monkeypatch):
    """auth_user looks roles up in pg_authid over pgsluice's own connection;
    the looked-up SCRAM secret verifies the client and logs the server in."""
    import harness
    pg.query("DROP ROLE IF EXISTS aq_role")
    pg.query("DROP ROLE IF EXISTS aq_lookup")
    pg.query("CREATE ROLE aq_lookup LOGIN SUPERUSER PASSWORD 'lookup_pw'")
    pg.query("CREATE ROLE aq_role LOGIN PASSWORD 'aq_pw'")
    pg.query("GRANT ALL ON DATABASE app TO aq_role")
    monkeypatch.setitem(harness.PASSWORDS, "aq_lookup", "lookup_pw")
    pooler = sluice(auth_type="scram-sha-256", auth_user="aq_lookup")
    with pooler.connect(user="aq_role", password="aq_pw") as conn:
        assert conn.execute("select current_user").fetchone() == ("aq_role",)
    err = pgwire.login_error(pooler.host, pooler.port, "aq_role", "app", password="wrong")
    assert err.sqlstate == "28P01", err
    err = pgwire.login_error(pooler.host, pooler.port, "no_such_role", "app", password="x")
    assert err.sqlstate == "28P01", err
    assert "auth_query: connected to PostgreSQL" in pooler.log_text(lines=200)
