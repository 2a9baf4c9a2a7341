# SPDX-License-Identifier: PostgreSQL
"""Issue 17, items 5 and 18: the completion cache never answers a client with rows its own
session could not return, and a comment does not change the meaning of SET sluice.user.

Item 5: client A fills the cache; client B, whose session differs in a setting (search_path,
a custom setting read by a row-level security policy, SET ROLE, set_config() in a SELECT, a
startup option), runs the same lookup and must get the rows PostgreSQL gives B's session,
not A's cached ones. The rule (docs/ai-middleware.md, "Completion cache"): a client that may
have changed settings the key does not hold looks nothing up and stores nothing for the rest
of its connection.

Item 18: OpenTelemetry's instrumentation-pg appends /*traceparent='...'*/ to every
statement; SET sluice.user with a trailing (or leading, or --) comment sets the subject.
"""

import struct

import psycopg
import pytest
from psycopg import errors

import harness
import pgwire
from test_admin import console
from test_ai_cache import ANSWER, TABLE, answer, executions, rows_of, tag, table  # noqa: F401
from test_ai_usage import connect as usage_connect
from test_ai_usage import usage_pooler, wait_for_rows
from test_migrate import fresh_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own")

TENANT = "SELECT v FROM tenant_rows WHERE k = %s"


@pytest.fixture
def tenants(pg, table):
    """tenant_rows in schema public (v = 'public-k') and in schema tenant_b (v = 'b-k')."""
    pg.query("DROP SCHEMA IF EXISTS tenant_b CASCADE")
    pg.query("DROP TABLE IF EXISTS public.tenant_rows")
    pg.query("CREATE SCHEMA tenant_b AUTHORIZATION app")
    for schema, prefix in (("public", "public"), ("tenant_b", "b")):
        pg.query(f"CREATE TABLE {schema}.tenant_rows (k int PRIMARY KEY, v text)")
        pg.query(f"INSERT INTO {schema}.tenant_rows SELECT k, '{prefix}-' || k FROM generate_series(1, 5) k")
        pg.query(f"GRANT SELECT ON {schema}.tenant_rows TO app")
    yield
    pg.query("DROP SCHEMA IF EXISTS tenant_b CASCADE")
    pg.query("DROP TABLE IF EXISTS public.tenant_rows")


def run(conn, sql, params, protocol):
    if protocol == "simple":
        return psycopg.ClientCursor(conn).execute(sql, params).fetchall()
    return conn.execute(sql, params, prepare=protocol == "named").fetchall()


# -- item 5: the key covers every setting a client changed, or it bypasses the cache ------
@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
@pytest.mark.parametrize("protocol", ["simple", "unnamed", "named"])
@pytest.mark.parametrize("set_prepared", [False, True], ids=["set-simple", "set-parse"])
def test_set_search_path_gets_its_own_schemas_rows(sluice, pg, tenants, pool_mode, protocol, set_prepared):
    pooler = sluice(pool_mode=pool_mode, default_pool_size=1 if pool_mode == "transaction" else 5)
    with pooler.connect() as a, pooler.connect() as b:
        for _ in range(2):
            assert run(a, tag(TENANT), (1,), protocol) == [("public-1",)]
        # psycopg sends a statement without parameters as a simple Query, a prepared one as Parse
        b.execute("SET search_path = tenant_b", prepare=set_prepared)
        for _ in range(3):
            assert run(b, tag(TENANT), (1,), protocol) == [("b-1",)]
        if pool_mode == "session":
            # A's own session is untouched and still answered from the cache
            assert run(a, tag(TENANT), (1,), protocol) == [("public-1",)]
    if pool_mode == "session":      # B's server was reset (DISCARD ALL) for the next client
        with pooler.connect() as d:
            for _ in range(2):
                assert run(d, tag(TENANT), (2,), protocol) == [("public-2",)]


def test_a_server_whose_settings_a_client_changed_stores_no_answer(sluice, pg, tenants):
    """Transaction pooling, one server: B's SET search_path stays on the server B used, where
    a later client's lookup reads tenant_b's rows (PostgreSQL's answer for that server; SET
    does not belong under transaction pooling). That answer is not stored under the later
    client's key: after RECONNECT a client on a fresh server gets its own schema's rows."""
    pooler = sluice(pool_mode="transaction", default_pool_size=1)
    with pooler.connect() as b:
        b.execute("SET search_path = tenant_b")
        assert rows_of(b, tag(TENANT), (1,)) == [("b-1",)]
    with pooler.connect() as c:
        rows_of(c, tag(TENANT), (2,))
    with console(pooler) as admin:
        admin.execute("RECONNECT app")
    with pooler.connect() as d:
        assert rows_of(d, "SELECT current_setting('search_path')") == [('"$user", public',)]
        for _ in range(2):
            assert rows_of(d, tag(TENANT), (2,)) == [("public-2",)]


def test_a_lookup_pipelined_right_after_set_timezone_is_keyed_on_the_new_timezone(sluice, pg, table):
    """SET TimeZone and a lookup in one write: the lookup runs with the new TimeZone, and its
    answer is not kept under the key of the old one, so a client still on the old TimeZone
    gets its own text."""
    sql = tag(f"SELECT ts::text FROM {TABLE} WHERE k = 5")
    pooler = sluice(pool_mode="transaction", default_pool_size=1)
    with pgwire.login(pooler.host, pooler.port, "app", "app", password=harness.APP_PASSWORD) as w:
        assert w.query("SHOW TimeZone") != [["Asia/Tokyo"]]
        w.sock.sendall(b"".join(b"Q" + struct.pack("!I", len(q) + 5) + q + b"\0" for q in
                                (b"SET TimeZone TO 'Asia/Tokyo'", sql.encode())))
        w.read_until_ready()
        assert pgwire.data_rows(w.read_until_ready()) == [["2024-01-01 14:00:07.5+09"]]
    with pooler.connect() as p:
        [(own,)] = rows_of(p, f"SELECT ts::text FROM {TABLE} WHERE k = 5")    # untagged: PostgreSQL's
        assert own != "2024-01-01 14:00:07.5+09"
        for _ in range(2):
            assert rows_of(p, sql) == [(own,)]
    with pooler.connect() as q:     # a SET TimeZone of its own still lets a client hit the cache
        q.execute("SET TimeZone TO 'Asia/Tokyo'")
        for _ in range(3):
            assert rows_of(q, sql) == [("2024-01-01 14:00:07.5+09",)]
    # W's lookup, P's untagged query and first lookup, Q's first lookup
    assert executions(pg) == 4


@pytest.fixture
def rls(pg, table):
    """docs: rows of tenants a and b; app sees the tenant named by the custom setting
    app.tenant, tenant a when it is not set."""
    pg.query("DROP TABLE IF EXISTS rls_docs")
    pg.query("CREATE TABLE rls_docs (tenant text, k int, v text)")
    pg.query("INSERT INTO rls_docs VALUES ('a', 1, 'a-secret'), ('b', 1, 'b-secret')")
    pg.query("ALTER TABLE rls_docs ENABLE ROW LEVEL SECURITY")
    pg.query("CREATE POLICY by_tenant ON rls_docs USING"
             " (tenant = coalesce(nullif(current_setting('app.tenant', true), ''), 'a'))")
    pg.query("GRANT SELECT ON rls_docs TO app")
    yield "SELECT v FROM rls_docs WHERE k = %s"
    pg.query("DROP TABLE IF EXISTS rls_docs")


@pytest.mark.parametrize("how", ["SET app.tenant = 'b'", "SET SESSION app.tenant TO 'b' /*x*/",
                                 "SELECT set_config('app.tenant', 'b', false)",
                                 "BEGIN; SET LOCAL app.tenant = 'b'"])
@pytest.mark.parametrize("protocol", ["simple", "unnamed"])
def test_custom_setting_read_by_row_level_security_is_never_answered_for_another_tenant(
        sluice, pg, rls, how, protocol):
    pooler = sluice(pool_mode="session")
    with pooler.connect() as a, pooler.connect() as b:
        for _ in range(2):
            assert run(a, tag(rls), (1,), protocol) == [("a-secret",)]
        b.execute(how)
        for _ in range(2):
            assert run(b, tag(rls), (1,), protocol) == [("b-secret",)]
        if how.startswith("BEGIN"):
            b.execute("COMMIT")


def test_set_role_gets_the_roles_own_answer(sluice, pg, table):
    pg.query("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cachekey_reader')"
             " THEN CREATE ROLE cachekey_reader; END IF; END$$")
    pg.query("GRANT cachekey_reader TO app")
    pg.query(f"GRANT SELECT ON {TABLE} TO cachekey_reader")
    sql = tag(f"SELECT current_user::text, answer FROM {TABLE} WHERE k = %s")
    pooler = sluice(pool_mode="session")
    with pooler.connect() as a, pooler.connect() as b:
        for _ in range(2):
            assert rows_of(a, sql, (3,)) == [("app", answer(3))]
        b.execute("SET ROLE cachekey_reader")
        for _ in range(2):
            assert rows_of(b, sql, (3,)) == [("cachekey_reader", answer(3))]
        # a role without the privilege gets PostgreSQL's error, not app's rows
        pg.query(f"REVOKE SELECT ON {TABLE} FROM cachekey_reader")
        with pytest.raises(errors.InsufficientPrivilege):
            rows_of(b, tag(ANSWER), (3,))


@pytest.mark.parametrize("protocol", ["simple", "unnamed"])
def test_set_config_in_a_select_is_seen_by_the_clients_next_lookup(sluice, pg, table, protocol):
    sql = tag(f"SELECT current_setting('app.x', true), answer FROM {TABLE} WHERE k = %s")
    pooler = sluice(pool_mode="session")
    with pooler.connect() as a, pooler.connect() as b:
        for _ in range(2):
            assert run(a, sql, (4,), protocol) == [(None, answer(4))]
        assert run(b, "SELECT set_config('app.x', 'y', false)", None, protocol) == [("y",)]
        for _ in range(2):
            assert run(b, sql, (4,), protocol) == [("y", answer(4))]
    assert executions(pg) == 3      # A's lookup once, B's every time


def test_a_startup_option_of_another_client_does_not_stay_on_the_pooled_server(sluice, pg, tenants):
    """search_path in track_extra_parameters, set by one client's options: a client that never
    set it gets its own (default) schema's rows, from PostgreSQL and from the cache."""
    pooler = sluice(pool_mode="transaction", default_pool_size=1, track_extra_parameters="search_path")
    with pooler.connect(options="-c search_path=tenant_b") as b:
        for _ in range(2):
            assert rows_of(b, tag(TENANT), (1,)) == [("b-1",)]
    with pooler.connect() as a:
        for _ in range(2):
            assert rows_of(a, tag(TENANT), (1,)) == [("public-1",)]
            assert rows_of(a, "SELECT current_setting('search_path')") != [("tenant_b",)]
    with pooler.connect(options="-c search_path=tenant_b") as b2:
        assert rows_of(b2, tag(TENANT), (1,)) == [("b-1",)]


# -- item 18: a comment does not change the meaning of SET sluice.user -----------------------
TRACE = "00-0af7651916cd43dd8448eb211c80317c-b7ad6b7169203331-01"


@pytest.mark.parametrize("statement,subject", [
    (f"SET sluice.user = 'otel' /*traceparent='{TRACE}'*/", "otel"),
    ("SET sluice.user = 'dashed' -- set by the worker", "dashed"),
    ("SET sluice.user TO bare/* no blank */", "bare"),
    (f"/*traceparent='{TRACE}'*/ SET sluice.user = 'leading'", "leading"),
    ("SET /* a /* nested */ comment */ sluice.user = 'nested';", "nested"),
])
def test_set_sluice_user_with_a_comment_sets_the_subject(sluice, pg, fresh_db, statement, subject):
    pooler = usage_pooler(sluice, pg, fresh_db).start()
    with usage_connect(pooler) as conn:
        assert conn.execute(statement).statusmessage == "SET"
        assert conn.execute("SHOW sluice.user").fetchone() == (subject,)
        conn.execute("SELECT 1 /*ai_tokens_in='5'*/")
    wait_for_rows(pg, fresh_db, 1)
    assert pg.query("SELECT subject, input_tokens FROM sluice.llm_usage", dbname=fresh_db) == [(subject, 5)]


def test_reset_sluice_user_with_a_trailing_comment_resets_it(sluice, pg, fresh_db):
    pooler = usage_pooler(sluice, pg, fresh_db).start()
    with usage_connect(pooler) as conn:
        conn.execute(f"SET sluice.user = 'gone' /*traceparent='{TRACE}'*/")
        assert conn.execute(f"RESET sluice.user /*traceparent='{TRACE}'*/").statusmessage == "RESET"
        assert conn.execute("SHOW sluice.user").fetchone() == ("",)


def test_set_sluice_user_with_an_unterminated_comment_is_postgres_syntax_error(sluice):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        with pytest.raises(errors.SyntaxError):
            conn.execute("SET sluice.user = 'x' /* never closed")
        assert conn.execute("SHOW sluice.user").fetchone() == ("",)
