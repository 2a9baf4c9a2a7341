# SPDX-License-Identifier: PostgreSQL
"""An installed pgsluice serves a tagged query and records it.

Runs in the suite against the build, and in scripts/test's packaging step
against the binary the .deb installed (PGSLUICE_BIN=/usr/bin/pgsluice,
tests/packaging/deb_smoke.sh): --migrate then takes the sluice schema from
the migrations the binary finds itself (/usr/share/pgsluice/sql when
installed), not from PGSLUICE_SQLDIR.
"""

import os
import subprocess

import pytest

import harness
from test_migrate import fresh_db  # noqa: F401 (fixture)

pytestmark = [pytest.mark.skipif(harness.is_pgbouncer(), reason="--migrate is pgsluice's own"),
              pytest.mark.serial]   # also the .deb step's test: alone (conftest.py)

TAGS = "/*ai_user='alice',ai_model='gpt-4o',ai_tokens_in='12',ai_tokens_out='3'*/"


def test_version_check_config_migrate_and_one_tagged_query(sluice, pg, fresh_db):  # noqa: F811
    version = harness.run_binary(["-V"])
    assert version.returncode == 0 and version.stdout.startswith("pgsluice "), version.stdout

    pooler = sluice(start=False, ai_database="usage", pool_mode="transaction",
                    databases={"usage": f"host={pg.host} port={pg.port} dbname={fresh_db} user=app"})
    check = harness.run_binary(["--check-config", pooler.ini_path], cwd=pooler.workdir)
    assert check.returncode == 0, check.stdout

    env = {k: v for k, v in os.environ.items() if k != "PGSLUICE_SQLDIR"}
    migrate = subprocess.run([str(pooler.binary), "--migrate", str(pooler.ini_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=60, cwd=pooler.workdir, env=env, stdin=subprocess.DEVNULL)
    assert migrate.returncode == 0, migrate.stdout

    pooler.start()
    with pooler.connect(dbname="usage") as conn:
        assert conn.execute(f"SELECT 41 + 1 {TAGS}").fetchone() == (42,)
    harness.wait_for(lambda: pg.query("SELECT subject, model, input_tokens, output_tokens"
                                      " FROM sluice.llm_usage", dbname=fresh_db),
                     timeout=30, what="the usage row")
    rows = pg.query("SELECT subject, model, input_tokens, output_tokens FROM sluice.llm_usage",
                    dbname=fresh_db)
    assert [tuple(r) for r in rows] == [("alice", "gpt-4o", 12, 3)], rows
