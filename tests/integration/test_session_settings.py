# SPDX-License-Identifier: PostgreSQL
"""Session settings under transaction pooling (docs/pooling.md, "Session settings
under transaction pooling"; issue 16 item 2).

With pool_size = 1 every client below shares one server connection, so a
setting that leaked from one client to another, or one that did not follow its
client, shows in the rows and values the clients read.
"""

import shutil
import threading
from pathlib import Path

from harness import wait_for

import pgwire

import psycopg
import pytest
from session_helpers import APP_PASSWORD, backend, connect, one, run_node_script, tenants, tx_pooler  # noqa: F401
from test_client_node import node_modules  # noqa: F401 (fixture: npm ci of the kit)

ROUNDS = 10_000
BATCH = 200        # statements per simple Query batch of the interleaving test


def setting(conn, name):
    return one(conn, "SELECT current_setting(%s, true)", (name,))


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


# -- node-postgres ------------------------------------------------------------------

NODE_SCRIPT = r"""
const { Client } = require('pg');
(async () => {
  const url = process.env.DATABASE_URL;
  const a = new Client({ connectionString: url });
  const b = new Client({ connectionString: url, options: '-c search_path=tenant_b,public -c app.tenant=b' });
  await a.connect(); await b.connect();
  await a.query("SET search_path TO tenant_a, public");
  await a.query("SET app.tenant = 'a'");
  const seen = { a: new Set(), b: new Set() };
  for (let i = 0; i < 200; i++) {
    for (const [name, c] of [['a', a], ['b', b]]) {
      const r = await c.query("SELECT (SELECT v FROM t) || '/' || (SELECT string_agg(v, ',') FROM rls_rows) AS x");
      seen[name].add(r.rows[0].x);
    }
  }
  await a.query('BEGIN'); await a.query("SET app.tenant = 'b'"); await a.query('ROLLBACK');
  const after = (await a.query("SELECT current_setting('app.tenant') AS t")).rows[0].t;
  const pids = [(await a.query('SELECT pg_backend_pid() AS p')).rows[0].p,
                (await b.query('SELECT pg_backend_pid() AS p')).rows[0].p];
  console.log(JSON.stringify({ a: [...seen.a], b: [...seen.b], after, pids }));
  await a.end(); await b.end();
})().catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_node_postgres(sluice, pg, tenants, tmp_path, node_modules):  # noqa: F811
    result = run_node_script(tx_pooler(sluice), tmp_path / "settings.js", NODE_SCRIPT)
    assert result["a"] == ["a/row-a"]
    assert result["b"] == ["b/row-b"]
    assert result["after"] == "a"
    assert result["pids"][0] == result["pids"][1]


# -- what else works under transaction pooling (the table of docs/pooling.md) ---------


def terminate(pg, pooler, pid):
    """End the server pid and wait until a fresh client gets a new server."""
    pg.query("SELECT pg_terminate_backend(%s)", (pid,))

    def new_server():
        try:
            with connect(pooler) as probe:
                return backend(probe) != pid
        except psycopg.OperationalError:
            return False
    wait_for(new_server, 10, what="a new server")


def test_table_session_advisory_lock_belongs_to_the_server(sluice, pg):
    """Session-level advisory locks do not work: the lock is the server
    connection's, so another client on that server takes it too. Transaction
    level (pg_advisory_xact_lock) works."""
    pooler = tx_pooler(sluice)
    a, b = connect(pooler), connect(pooler)
    assert one(a, "SELECT pg_try_advisory_lock(4242)") is True
    assert one(b, "SELECT pg_try_advisory_lock(4242)") is True      # no mutual exclusion
    with pg.connect() as direct:
        assert one(direct, "SELECT pg_try_advisory_lock(4242)") is False
        with a.transaction():
            assert one(a, "SELECT pg_try_advisory_xact_lock(4343)") is True
            assert one(direct, "SELECT pg_try_advisory_xact_lock(4343)") is False
    one(a, "SELECT pg_advisory_unlock_all()::text")


def test_table_temp_table_stays_with_the_server(sluice, pg):
    """Temporary tables stay on the server: the next client there sees them,
    and their creator on another server gets 42P01."""
    pooler = tx_pooler(sluice)
    a, b = connect(pooler), connect(pooler)
    a.execute("CREATE TEMP TABLE mine (v int)")
    a.execute("INSERT INTO mine VALUES (1)")
    assert one(b, "SELECT count(*) FROM mine") == 1       # another client's table
    terminate(pg, pooler, backend(a))
    with pytest.raises(psycopg.Error) as e:
        a.execute("SELECT * FROM mine")
    assert e.value.sqlstate == "42P01"


def test_table_with_hold_cursor_stays_with_the_server(sluice, pg):
    pooler = tx_pooler(sluice)
    a, b = connect(pooler), connect(pooler)
    a.execute("DECLARE held CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 3) g")
    assert one(b, "FETCH 1 FROM held") == 1               # another client's cursor
    terminate(pg, pooler, backend(a))
    with pytest.raises(psycopg.Error) as e:
        a.execute("FETCH 1 FROM held")
    assert e.value.sqlstate == "34000"


def test_table_sql_prepare_stays_with_the_server(sluice, pg):
    """SQL PREPARE stays on the server (26000 elsewhere); protocol-level named
    statements follow the client (max_prepared_statements)."""
    pooler = tx_pooler(sluice)
    a, b = connect(pooler), connect(pooler)
    a.execute("PREPARE p1 AS SELECT 41 + 1")
    assert one(b, "EXECUTE p1") == 42                     # another client's statement
    with a.cursor() as cur:
        cur.execute("SELECT %s::int * 2", (21,), prepare=True)
        assert cur.fetchone()[0] == 42
    terminate(pg, pooler, backend(a))
    with pytest.raises(psycopg.Error) as e:
        a.execute("EXECUTE p1")
    assert e.value.sqlstate == "26000"
    with a.cursor() as cur:                               # the protocol-level one still works
        cur.execute("SELECT %s::int * 2", (21,), prepare=True)
        assert cur.fetchone()[0] == 42


def test_untracked_setting_does_not_leak(sluice, pg):
    """A change pgsluice cannot follow (a DO block running set_config) stays
    with its server, and the next other client there gets RESET ALL first."""
    pooler = tx_pooler(sluice)
    a, b = connect(pooler), connect(pooler)
    a.execute("DO $$ BEGIN PERFORM set_config('app.hidden', 'leak', false); END $$")
    assert setting(a, "app.hidden") == "leak"
    assert setting(b, "app.hidden") in (None, "")


def test_reset_all_goes_back_to_startup_options(sluice, pg, tenants):
    """RESET ALL on a client with startup options: back to those values, on the
    same server (whose own RESET ALL went to the server default) as on another."""
    pooler = tx_pooler(sluice)
    c = connect(pooler, options="-c search_path=tenant_b,public")
    other = connect(pooler)
    c.execute("SET search_path = tenant_a")
    c.execute("RESET ALL")
    assert one(c, "SELECT v FROM t") == "b"
    c.execute("SET search_path = tenant_a")
    c.execute("RESET search_path")
    assert one(c, "SELECT v FROM t") == "b"
    c.execute("BEGIN")
    c.execute("SET search_path = tenant_a")
    c.execute("ROLLBACK")
    assert one(c, "SELECT v FROM t") == "b"
    assert one(other, "SHOW search_path") == '"$user", public'
    assert one(c, "SELECT v FROM t") == "b"


def test_invalid_startup_option_fails_the_first_statement_with_postgres_error(sluice, pg):
    """A startup option PostgreSQL refuses ends the client at its first
    statement with PostgreSQL's SQLSTATE (22023), as a direct login would at
    connect time; other clients of the server are not affected."""
    pooler = tx_pooler(sluice)
    other = connect(pooler)
    # libpq reports a FATAL error followed by a closed connection as text only: read it raw
    with pgwire.login(pooler.host, pooler.port, "app", "app", password=APP_PASSWORD,
                      params={"options": "-c statement_timeout=soon"}) as bad:
        with pytest.raises(pgwire.ServerError) as e:
            bad.query("SELECT 1")
    assert (e.value.severity, e.value.sqlstate) == ("FATAL", "22023"), e.value
    assert 'invalid value for parameter "statement_timeout"' in e.value.message
    assert one(other, "SELECT 1") == 1
    assert setting(other, "statement_timeout") == "0"


def test_too_many_startup_options_is_54000(sluice, pg):
    pooler = tx_pooler(sluice)
    options = " ".join(f"-c app.v{i}={i}" for i in range(101))
    err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password=APP_PASSWORD,
                             params={"options": options})
    assert err.sqlstate == "54000", err


def test_many_clients_each_keep_their_own_settings(sluice, pg):
    """Eight clients in threads on one server connection, each with its own
    settings (one via startup options, one never SET), every transaction sees
    exactly its own."""
    pooler = tx_pooler(sluice)
    errors = []

    def client(n):
        try:
            if n == 0:
                conn, want = connect(pooler), (None, "0")
            elif n == 1:
                conn, want = connect(pooler, options="-c app.tenant=t1 -c statement_timeout=1001"), ("t1", "1001ms")
            else:
                conn = connect(pooler)
                conn.execute(f"SET app.tenant = 't{n}'")
                conn.execute(f"SELECT set_config('statement_timeout', '{1000 + n}', false)")
                want = (f"t{n}", f"{1000 + n}ms")
            with conn:
                for _ in range(150):
                    got = conn.execute("SELECT nullif(current_setting('app.tenant', true), ''), "
                                       "current_setting('statement_timeout')").fetchone()
                    if got != want:
                        errors.append((n, got, want))
                        return
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append((n, repr(e)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
