# SPDX-License-Identifier: PostgreSQL
"""Session settings under transaction pooling (docs/pooling.md, "Session settings
under transaction pooling"; issue 16 item 2).

With pool_size = 1 every client below shares one server connection, so a
setting that leaked from one client to another, or one that did not follow its
client, shows in the rows and values the clients read.
"""

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest

APP_PASSWORD = "app_pw"
ROUNDS = 10_000
BATCH = 200        # statements per simple Query batch of the interleaving test


def tx_pooler(sluice, **overrides):
    settings = {"pool_mode": "transaction", "default_pool_size": 1, "max_client_conn": 50}
    settings.update(overrides)
    return sluice(**settings)


def connect(pooler, **params):
    return psycopg.connect(pooler.dsn("app", APP_PASSWORD, "app", **params), autocommit=True)


def one(conn, sql, params=None):
    return conn.execute(sql, params).fetchone()[0]


def setting(conn, name):
    return one(conn, "SELECT current_setting(%s, true)", (name,))


def backend(conn):
    return one(conn, "SELECT pg_backend_pid()")


@pytest.fixture
def tenants(pg):
    """Two schemas with a table t each, and an RLS table rows filtered by app.tenant."""
    pg.psql("""
        DROP SCHEMA IF EXISTS tenant_a CASCADE; DROP SCHEMA IF EXISTS tenant_b CASCADE;
        CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b;
        CREATE TABLE tenant_a.t (v text); INSERT INTO tenant_a.t VALUES ('a');
        CREATE TABLE tenant_b.t (v text); INSERT INTO tenant_b.t VALUES ('b');
        GRANT USAGE ON SCHEMA tenant_a, tenant_b TO app;
        GRANT SELECT ON tenant_a.t, tenant_b.t TO app;
        DROP TABLE IF EXISTS public.rls_rows;
        CREATE TABLE public.rls_rows (tenant text, v text);
        INSERT INTO public.rls_rows VALUES ('a', 'row-a'), ('b', 'row-b');
        ALTER TABLE public.rls_rows ENABLE ROW LEVEL SECURITY;
        CREATE POLICY by_tenant ON public.rls_rows
            USING (tenant = current_setting('app.tenant', true));
        GRANT SELECT ON public.rls_rows TO app;
    """)
    yield
    pg.psql("DROP SCHEMA tenant_a CASCADE; DROP SCHEMA tenant_b CASCADE; DROP TABLE public.rls_rows;")


def test_two_tenants_interleaved_on_one_server(sluice, pg, tenants):
    """Two clients with their own search_path and app.tenant (RLS, role app is no
    superuser), interleaving transactions on the one server, see only their own
    rows, 10,000 transactions each (batched: BATCH transactions per Query)."""
    pooler = tx_pooler(sluice)
    a, b = connect(pooler), connect(pooler)
    a.execute("SET search_path TO tenant_a, public")
    a.execute("SET app.tenant = 'a'")
    b.execute("SET search_path = tenant_b, public")
    b.execute("SELECT set_config('app.tenant', 'b', false)")
    assert backend(a) == backend(b)       # one server for both
    # one Query of BATCH statements is BATCH transactions (implicit, one each)
    batch = ";".join(["SELECT (SELECT v FROM t) || '/' || (SELECT string_agg(v, ',') FROM rls_rows)"] * BATCH)
    seen = {a: set(), b: set()}
    for _ in range(ROUNDS // BATCH):
        for conn in (a, b):
            cur = conn.execute(batch)
            while True:
                seen[conn].update(r[0] for r in cur.fetchall())
                if not cur.nextset():
                    break
    assert seen[a] == {"a/row-a"}
    assert seen[b] == {"b/row-b"}


def test_set_local_does_not_outlive_its_transaction(sluice, pg):
    pooler = tx_pooler(sluice)
    c = connect(pooler)
    with c.transaction():
        c.execute("SET LOCAL statement_timeout = '7s'")
        assert setting(c, "statement_timeout") == "7s"
    assert setting(c, "statement_timeout") == "0"
    other = connect(pooler)
    assert setting(other, "statement_timeout") == "0"


def test_set_in_rolled_back_block_has_no_effect_committed_does(sluice, pg):
    pooler = tx_pooler(sluice)
    c, other = connect(pooler), connect(pooler)
    c.execute("BEGIN")
    c.execute("SET app.flag = 'rolled-back'")
    c.execute("ROLLBACK")
    other.execute("SELECT 1")     # the server goes to another client in between
    assert setting(c, "app.flag") in (None, "")
    c.execute("BEGIN")
    c.execute("SET app.flag = 'committed'")
    c.execute("COMMIT")
    assert setting(other, "app.flag") in (None, "")
    assert setting(c, "app.flag") == "committed"
    # a failed block ends in ROLLBACK too
    c.execute("BEGIN")
    c.execute("SET app.flag = 'failed'")
    with pytest.raises(psycopg.errors.DivisionByZero):
        c.execute("SELECT 1/0")
    c.execute("COMMIT")           # PostgreSQL answers ROLLBACK
    assert setting(other, "app.flag") in (None, "")
    assert setting(c, "app.flag") == "committed"


def test_reset_and_reset_all(sluice, pg):
    pooler = tx_pooler(sluice)
    c, other = connect(pooler), connect(pooler)
    c.execute("SET app.x = '1'")
    c.execute("SET work_mem = '8MB'")
    c.execute("RESET app.x")
    other.execute("SELECT 1")
    assert setting(c, "app.x") in (None, "")
    assert setting(c, "work_mem") == "8MB"
    c.execute("SET search_path TO DEFAULT")
    c.execute("RESET ALL")
    other.execute("SELECT 1")
    assert setting(c, "work_mem") == "4MB"


def test_startup_options_follow_the_client(sluice, pg, tenants):
    pooler = tx_pooler(sluice)
    c = connect(pooler, options="-c search_path=tenant_b,public -c app.tenant=b")
    other = connect(pooler)
    for _ in range(3):
        assert one(c, "SELECT v FROM t") == "b"
        assert one(c, "SELECT string_agg(v, ',') FROM rls_rows") == "row-b"
        assert setting(other, "app.tenant") in (None, "")
        assert one(other, "SHOW search_path") == '"$user", public'
    c.execute("SET search_path = tenant_a")
    assert one(c, "SELECT v FROM t") == "a"
    c.execute("RESET search_path")             # back to the startup value, as PostgreSQL does
    other.execute("SELECT 1")
    assert one(c, "SELECT v FROM t") == "b"


def test_client_that_never_set_sees_defaults(sluice, pg):
    """A server returned to the pool carries no client setting."""
    pooler = tx_pooler(sluice)
    setter, clean = connect(pooler), connect(pooler)
    defaults = {n: setting(clean, n) for n in ("search_path", "statement_timeout", "work_mem")}
    setter.execute("SET search_path = pg_catalog")
    setter.execute("SET statement_timeout = 123456")
    setter.execute("SELECT set_config('work_mem', '9MB', false)")
    setter.execute("SET app.secret = 'it''s mine'")
    assert setting(setter, "app.secret") == "it's mine"
    assert backend(setter) == backend(clean)
    for n, v in defaults.items():
        assert setting(clean, n) == v
    assert setting(clean, "app.secret") in (None, "")
    assert setting(setter, "app.secret") == "it's mine"    # a quote round-trips
    assert setting(setter, "statement_timeout") == "123456ms"


def test_invalid_set_gets_postgres_error_and_records_nothing(sluice, pg):
    pooler = tx_pooler(sluice)
    c, other = connect(pooler), connect(pooler)
    c.execute("SET statement_timeout = '5s'")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        c.execute("SET statement_timeout = 'soon'")
    assert e.value.sqlstate == "22023"
    with pytest.raises(psycopg.Error) as e:
        c.execute("SET no_such_setting = 1")
    assert e.value.sqlstate == "42704"
    other.execute("SELECT 1")
    assert setting(c, "statement_timeout") == "5s"
    assert setting(other, "statement_timeout") == "0"


def test_record_limit_is_54000(sluice, pg):
    pooler = tx_pooler(sluice)
    c = connect(pooler)
    for i in range(100):
        c.execute(f"SET app.v{i} = '{i}'")
    with pytest.raises(psycopg.Error) as e:
        c.execute("SET app.one_too_many = 'x'")
    assert e.value.sqlstate == "54000"
    c.execute("SET app.v1 = 'changed'")       # a recorded one may change
    assert setting(c, "app.v1") == "changed"
    assert setting(c, "app.one_too_many") in (None, "")


def test_savepoint_rollback_keeps_record_consistent(sluice, pg):
    """ROLLBACK TO SAVEPOINT in a block with SETs: the record keeps them
    (commit at end, documented), on the client's next server as on this one."""
    pooler = tx_pooler(sluice)
    c, other = connect(pooler), connect(pooler)
    c.execute("BEGIN")
    c.execute("SET app.s = 'before'")
    c.execute("SAVEPOINT p")
    c.execute("SET app.s = 'after'")
    c.execute("ROLLBACK TO SAVEPOINT p")
    c.execute("COMMIT")
    assert setting(c, "app.s") == "after"
    other.execute("SELECT 1")
    assert setting(other, "app.s") in (None, "")
    assert setting(c, "app.s") == "after"


def test_cache_does_not_answer_another_search_path(sluice, pg, tenants):
    pooler = tx_pooler(sluice)
    a, b = connect(pooler), connect(pooler)
    a.execute("SET search_path = tenant_a")
    b.execute("SET search_path = tenant_b")
    q = "SELECT v FROM t /*ai_cache='lookup'*/"
    for _ in range(3):
        assert one(a, q) == "a"
        assert one(b, q) == "b"
