# SPDX-License-Identifier: PostgreSQL
"""Session settings sent through the extended protocol under transaction pooling
(docs/pooling.md, "Session settings under transaction pooling"; issue 16).

psycopg with parameters, psycopg's prepare=True, node-postgres with parameters,
JDBC and asyncpg send SET and set_config() as Parse/Bind/Execute. With
pool_size = 1 every client below shares one server connection, so a setting
that leaked from one client to another, or one that did not follow its client,
shows in the values the clients read.
"""

import shutil
from pathlib import Path

import psycopg
import pytest
from session_helpers import backend, connect, one, run_node_script, tenants, tx_pooler  # noqa: F401
from test_client_node import node_modules  # noqa: F401 (fixture: npm ci of the kit)

ROUNDS = 200


def setting(conn, name):
    # a simple Query (no parameters): it reads the session, it changes nothing
    return conn.execute(f"SELECT current_setting('{name}', true)", prepare=False).fetchone()[0]


QUERY = "SELECT (SELECT v FROM t) || '/' || (SELECT string_agg(v, ',') FROM rls_rows)"


def test_psycopg_parameters_and_prepared_set_interleaved(sluice, pg, tenants):
    """A sets with set_config($1, $2) (unnamed statement, parameters), B with
    SET prepared (named statement) and set_config with one parameter; both
    interleave transactions on the one server and see only their own rows."""
    pooler = tx_pooler(sluice)
    a, b = connect(pooler), connect(pooler)
    a.execute("SELECT set_config('search_path', %s, false)", ["tenant_a, public"])
    a.execute("SELECT set_config(%s, %s, false)", ["app.tenant", "a"])
    b.execute("SET search_path TO tenant_b, public", prepare=True)
    b.execute("SELECT pg_catalog.set_config('app.tenant', %s::text, false)", ["b"])
    assert backend(a) == backend(b)       # one server for both
    seen = {a: set(), b: set()}
    for _ in range(ROUNDS):
        for conn in (a, b):
            seen[conn].add(one(conn, QUERY))                          # extended
            seen[conn].add(conn.execute(QUERY, prepare=False).fetchone()[0])   # simple
    assert seen[a] == {"a/row-a"}
    assert seen[b] == {"b/row-b"}
    # the prepared SET again, after other clients had the server
    b.execute("SET search_path TO tenant_a, public", prepare=True)
    b.execute("SET search_path TO tenant_b, public", prepare=True)
    assert one(a, QUERY) == "a/row-a"
    assert one(b, QUERY) == "b/row-b"


def test_extended_set_in_rolled_back_block_has_no_effect(sluice, pg):
    pooler = tx_pooler(sluice)
    c, other = connect(pooler), connect(pooler)
    c.execute("SELECT set_config('app.flag', %s, false)", ["kept"])
    c.execute("BEGIN")
    c.execute("SELECT set_config('app.flag', %s, false)", ["rolled-back"])
    c.execute("ROLLBACK")
    assert setting(other, "app.flag") in (None, "")
    assert setting(c, "app.flag") == "kept"
    with c.transaction():
        c.execute("SELECT set_config('app.flag', %s, false)", ["committed"])
    assert setting(other, "app.flag") in (None, "")
    assert setting(c, "app.flag") == "committed"


def test_extended_set_then_error_in_one_batch_is_rolled_back(sluice, pg):
    """Execute of set_config, then a failing Execute before one Sync: the
    implicit transaction rolls back, and with it the setting (pipeline mode)."""
    pooler = tx_pooler(sluice)
    c, other = connect(pooler), connect(pooler)
    c.execute("SELECT set_config('app.flag', %s, false)", ["before"])
    with pytest.raises(psycopg.errors.DivisionByZero):
        with c.pipeline():
            c.execute("SELECT set_config('app.flag', %s, false)", ["in-failed-batch"])
            c.execute("SELECT 1/%s::int", [0])
    assert setting(other, "app.flag") in (None, "")
    assert setting(c, "app.flag") == "before"
    # a batch without error keeps it
    with c.pipeline():
        c.execute("SELECT set_config('app.flag', %s, false)", ["in-batch"])
        c.execute("SELECT %s::int", [1])
    assert setting(other, "app.flag") in (None, "")
    assert setting(c, "app.flag") == "in-batch"


def test_extended_set_that_fails_records_nothing(sluice, pg):
    pooler = tx_pooler(sluice)
    c, other = connect(pooler), connect(pooler)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        c.execute("SELECT set_config('statement_timeout', %s, false)", ["not a time"])
    assert setting(other, "statement_timeout") == "0"
    assert setting(c, "statement_timeout") == "0"
    c.execute("SELECT set_config('statement_timeout', %s, false)", ["9s"])
    assert setting(other, "statement_timeout") == "0"
    assert setting(c, "statement_timeout") == "9s"
    c.execute("RESET statement_timeout", prepare=True)
    assert setting(c, "statement_timeout") == "0"


def test_extended_set_local_and_unfollowable_do_not_leak(sluice, pg):
    pooler = tx_pooler(sluice)
    c, other = connect(pooler), connect(pooler)
    with c.transaction():
        c.execute("SELECT set_config('app.flag', %s, true)", ["local"])
        assert setting(c, "app.flag") == "local"
    assert setting(other, "app.flag") in (None, "")
    # a name and is_local from parameters: not followed, reset before the next client
    c.execute("SELECT set_config(%s, %s, %s)", ["app.flag", "unfollowed", False])
    assert setting(other, "app.flag") in (None, "")


def test_extended_role_follows_the_client(sluice, pg):
    pg.psql("""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice_r') THEN CREATE ROLE sluice_r; END IF;
        END $$;
        GRANT sluice_r TO app;
    """)
    pooler = tx_pooler(sluice)
    a, b = connect(pooler), connect(pooler)
    a.execute("SELECT set_config('role', %s, false)", ["sluice_r"])
    assert one(b, "SELECT current_user") == "app"
    assert one(a, "SELECT current_user") == "sluice_r"
    a.execute("RESET ROLE", prepare=True)
    assert one(a, "SELECT current_user") == "app"


NODE_SCRIPT = r"""
const { Client } = require('pg');
(async () => {
  const url = process.env.DATABASE_URL;
  const a = new Client({ connectionString: url });
  const b = new Client({ connectionString: url });
  await a.connect(); await b.connect();
  await a.query('SELECT set_config($1, $2, false)', ['search_path', 'tenant_a, public']);
  await a.query('SELECT set_config($1, $2, false)', ['app.tenant', 'a']);
  await b.query({ name: 'sp', text: 'SELECT set_config($1, $2, false)', values: ['search_path', 'tenant_b, public'] });
  await b.query({ name: 'sp', text: 'SELECT set_config($1, $2, false)', values: ['app.tenant', 'b'] });
  const seen = { a: new Set(), b: new Set() };
  const q = "SELECT (SELECT v FROM t) || '/' || (SELECT string_agg(v, ',') FROM rls_rows) AS x WHERE $1::int = 1";
  for (let i = 0; i < 200; i++) {
    for (const [name, c] of [['a', a], ['b', b]]) {
      const r = await c.query(q, [1]);
      seen[name].add(r.rows[0].x);
    }
  }
  await a.query('BEGIN');
  await a.query('SELECT set_config($1, $2, false)', ['app.tenant', 'b']);
  await a.query('ROLLBACK');
  const after = (await a.query("SELECT current_setting('app.tenant') AS t")).rows[0].t;
  const pids = [(await a.query('SELECT pg_backend_pid() AS p')).rows[0].p,
                (await b.query('SELECT pg_backend_pid() AS p')).rows[0].p];
  console.log(JSON.stringify({ a: [...seen.a], b: [...seen.b], after, pids }));
  await a.end(); await b.end();
})().catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_node_postgres_parameters(sluice, pg, tenants, tmp_path, node_modules):  # noqa: F811
    result = run_node_script(tx_pooler(sluice), tmp_path / "settings_ext.js", NODE_SCRIPT)
    assert result["a"] == ["a/row-a"]
    assert result["b"] == ["b/row-b"]
    assert result["after"] == "a"
    assert result["pids"][0] == result["pids"][1]
