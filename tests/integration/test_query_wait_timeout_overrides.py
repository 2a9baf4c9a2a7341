# SPDX-License-Identifier: PostgreSQL
"""query_wait_timeout per database and per user (issue 12, PgBouncer 1.25's config.md).

PgBouncer takes `query_wait_timeout` in a `[databases]` entry and in a
`[users]` entry too (-1: not set, 0: no limit), the user's over the
database's over the global key. A client waiting for a server longer than
the one in force gets `FATAL 53300 query_wait_timeout`.
"""

import time

import pytest

import harness
import pgwire

PASSWORDS = {"app": "app_pw", "pw_user": "pw_pw"}


def pg_entry(pg, settings=""):
    return f"host={pg.host} port={pg.port} dbname=app pool_size=1 {settings}".strip()


def login(pooler, dbname, user="app"):
    return pgwire.login(pooler.host, pooler.port, user, dbname, password=PASSWORDS[user], timeout=20)


def wait_result(sess, timeout):
    """The FATAL a query waiting in the pool ends with within timeout s, or None if it is still waiting."""
    sess.send(b"Q", b"select 1\0")
    sess.timeout = timeout
    try:
        sess.read_until_ready()
        return "answered"
    except TimeoutError:
        return None
    except pgwire.ServerError as err:
        return err


def test_a_database_entry_overrides_the_global_query_wait_timeout(sluice, pg):
    pooler = sluice(query_wait_timeout=120, databases={"qw": pg_entry(pg, "query_wait_timeout=1")})
    with login(pooler, "qw") as holder, login(pooler, "qw") as waiter:
        holder.query("select 1")                   # session pooling: holds the only server
        started = time.monotonic()
        err = wait_result(waiter, 15)
        assert isinstance(err, pgwire.ServerError), err
        assert (err.sqlstate, err.severity, err.message) == ("53300", "FATAL", "query_wait_timeout")
        assert err.fields.get("detail") == "No server connection was free within query_wait_timeout (1 s)."
        assert time.monotonic() - started < 10      # the global 120 s did not apply


def test_a_users_entry_overrides_the_database_and_minus_one_means_not_set(sluice, pg):
    pooler = sluice(query_wait_timeout=120,
                    databases={"qw": pg_entry(pg, "query_wait_timeout=0")},
                    extra_ini="\n[users]\napp = query_wait_timeout=1\npw_user = query_wait_timeout=-1\n")
    # app: its [users] 1 s wins over the database's 0 (no limit)
    with login(pooler, "qw") as holder, login(pooler, "qw") as waiter:
        holder.query("select 1")
        err = wait_result(waiter, 15)
        assert isinstance(err, pgwire.ServerError), err
        assert (err.sqlstate, err.message) == ("53300", "query_wait_timeout")
    # pw_user: -1 is "not set", so the database's 0 holds: still waiting after 3 s, served once freed
    with login(pooler, "qw", "pw_user") as holder:
        holder.query("select 1")
        with login(pooler, "qw", "pw_user") as waiter:
            assert wait_result(waiter, 3) is None
            holder.close()
            waiter.timeout = 15
            waiter.read_until_ready()


@pytest.mark.parametrize("value", ["-2", "soon"])
def test_a_bad_value_names_the_key(sluice, pg, value):
    pooler = sluice(start=False, databases={"qw": pg_entry(pg, f"query_wait_timeout={value}")})
    out = harness.run_binary([pooler.ini_path], cwd=pooler.workdir)
    assert out.returncode != 0
    assert f'invalid value "{value}" for key "query_wait_timeout" of database "qw"' in out.stdout
