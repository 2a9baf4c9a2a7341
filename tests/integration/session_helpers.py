# SPDX-License-Identifier: PostgreSQL
"""Helpers shared by the session-settings tests under transaction pooling
(test_session_settings.py, test_session_settings_extended.py, test_session_role.py):
a one-server transaction pooler, clients as role app, the two-tenant schema
fixture, and running a node-postgres script against a pooler.
"""

import json
import os
import subprocess

import psycopg
import pytest

from test_client_node import KIT as KIT_NODE

APP_PASSWORD = "app_pw"


def tx_pooler(sluice, **overrides):
    """A transaction pooler with one server, so every client shares it."""
    settings = {"pool_mode": "transaction", "default_pool_size": 1, "max_client_conn": 50}
    settings.update(overrides)
    return sluice(**settings)


def connect(pooler, **params):
    return psycopg.connect(pooler.dsn("app", APP_PASSWORD, "app", **params), autocommit=True)


def one(conn, sql, params=None):
    return conn.execute(sql, params).fetchone()[0]


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


def run_node_script(pooler, path, script):
    """Write script to path and run it with node against pooler (DATABASE_URL, the Node
    kit's node_modules); returns the JSON its last output line prints."""
    path.write_text(script)
    url = f"postgresql://app:{APP_PASSWORD}@127.0.0.1:{pooler.port}/app"
    out = subprocess.run(["node", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=60, env=dict(os.environ, DATABASE_URL=url, NODE_PATH=str(KIT_NODE / "node_modules")))
    assert out.returncode == 0, out.stdout
    return json.loads(out.stdout.strip().splitlines()[-1])
