# SPDX-License-Identifier: PostgreSQL
"""SET ROLE and SET SESSION AUTHORIZATION under transaction pooling
(docs/pooling.md, "Session settings under transaction pooling"; issue 16).

PostgreSQL's RESET ALL does not reset role or session_authorization, so a
pooler that resets servers with RESET ALL alone lets one client's SET ROLE
reach the next client of that server. With pool_size = 1 every client below
shares one server connection: current_user shows whose role a statement ran as.
"""

import psycopg
import pytest
from session_helpers import APP_PASSWORD, connect, one, tx_pooler



@pytest.fixture
def roles(pg):
    """sluice_r: a role app may SET ROLE to; sluice_other: one it may not."""
    pg.psql("""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice_r') THEN CREATE ROLE sluice_r; END IF;
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice_other') THEN CREATE ROLE sluice_other; END IF;
        END $$;
        GRANT sluice_r TO app;
    """)
    yield "sluice_r"


def who(conn):
    return one(conn, "SELECT current_user")


def backend(conn):
    return one(conn, "SELECT pg_backend_pid()")


def test_set_role_does_not_leak_to_the_next_client(sluice, pg, roles):
    pooler = tx_pooler(sluice)
    a, b = connect(pooler), connect(pooler)
    a.execute("SET ROLE sluice_r")
    assert who(a) == "sluice_r"
    assert who(b) == "app"
    assert backend(a) == backend(b)       # one server for both
    # A's later transactions still run as sluice_r, B's as app, interleaved
    for _ in range(20):
        assert who(a) == "sluice_r"
        assert who(b) == "app"
    with a.transaction():
        assert who(a) == "sluice_r"
    assert who(b) == "app"


def test_reset_role_and_set_role_none(sluice, pg, roles):
    pooler = tx_pooler(sluice)
    a, b = connect(pooler), connect(pooler)
    a.execute("SET ROLE sluice_r")
    assert who(b) == "app"
    a.execute("RESET ROLE")
    assert who(a) == "app"
    a.execute("SET role TO 'sluice_r'")
    assert who(b) == "app"
    assert who(a) == "sluice_r"
    a.execute("SET ROLE NONE")
    assert who(b) == "app"
    assert who(a) == "app"
    a.execute("SELECT set_config('role', 'sluice_r', false)")
    assert who(b) == "app"
    assert who(a) == "sluice_r"
    # RESET ALL does not reset role, as in PostgreSQL
    a.execute("RESET ALL")
    assert who(b) == "app"
    assert who(a) == "sluice_r"


def test_role_change_in_rolled_back_block_is_undone(sluice, pg, roles):
    pooler = tx_pooler(sluice)
    a, b = connect(pooler), connect(pooler)
    a.execute("BEGIN")
    a.execute("SET ROLE sluice_r")
    assert who(a) == "sluice_r"
    a.execute("ROLLBACK")
    assert who(b) == "app"
    assert who(a) == "app"
    # committed: it stays with A
    a.execute("BEGIN")
    a.execute("SET ROLE sluice_r")
    a.execute("COMMIT")
    assert who(b) == "app"
    assert who(a) == "sluice_r"


def test_failed_set_role_records_nothing(sluice, pg, roles):
    pooler = tx_pooler(sluice)
    a, b = connect(pooler), connect(pooler)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        a.execute("SET ROLE sluice_other")
    assert who(b) == "app"
    assert who(a) == "app"


@pytest.mark.parametrize("statement", [
    "SET ROLE sluice_r; SELECT 1",
    "DO $$ BEGIN EXECUTE 'SET ROLE sluice_r'; END $$",
    "SELECT set_config('role', 'sluice_r', false), 1",
])
def test_unfollowable_role_change_never_leaks(sluice, pg, roles, statement):
    pooler = tx_pooler(sluice)
    a, b = connect(pooler), connect(pooler)
    a.execute(statement)
    assert who(b) == "app"
    c = connect(pooler)
    assert who(c) == "app"


def test_session_authorization_does_not_leak(sluice, pg, roles):
    """Only a superuser may SET SESSION AUTHORIZATION: this pool logs in to
    PostgreSQL as its superuser (over the unix socket, trust)."""
    pooler = tx_pooler(sluice, databases={
        "sudb": f"host={pg.socket_dir} port={pg.port} dbname=app user={pg.admin_user}"})
    a, b = connect_db(pooler, "sudb"), connect_db(pooler, "sudb")
    su = pg.admin_user
    assert who(a) == su
    a.execute("SET SESSION AUTHORIZATION app")
    assert one(a, "SELECT session_user") == "app"
    assert one(b, "SELECT session_user") == su
    assert who(b) == su
    assert one(a, "SELECT session_user") == "app"
    a.execute("SET ROLE sluice_r")
    assert who(a) == "sluice_r"
    assert who(b) == su
    # SET SESSION AUTHORIZATION resets the role, as in PostgreSQL
    a.execute("SET SESSION AUTHORIZATION DEFAULT")
    assert who(a) == su
    assert who(b) == su
    a.execute("SET SESSION AUTHORIZATION app")
    assert who(b) == su
    a.execute("RESET SESSION AUTHORIZATION")
    assert who(a) == su
    assert one(a, "SELECT session_user") == su
    # not followed (two statements): the next client's server is reset
    a.execute("SET SESSION AUTHORIZATION app; SELECT 1")
    assert one(b, "SELECT session_user") == su
    assert who(b) == su


def connect_db(pooler, dbname):
    return psycopg.connect(pooler.dsn("app", APP_PASSWORD, dbname), autocommit=True)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_server_reset_query_reset_all_resets_role(sluice, pg, roles, mode):
    """server_reset_query = RESET ALL also resets role and session_authorization."""
    pooler = tx_pooler(sluice, pool_mode=mode, server_reset_query="RESET ALL",
                       server_reset_query_always=1)
    a = connect(pooler)
    pid = backend(a)
    a.execute("SET ROLE sluice_r; SELECT 1")
    a.close()
    b = connect(pooler)
    assert backend(b) == pid
    assert who(b) == "app"
