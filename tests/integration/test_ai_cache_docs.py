# SPDX-License-Identifier: PostgreSQL
"""The completion cache's documented flow (docs/ai-middleware.md, "The flow, end to end")
runs as written against pgsluice: look up, on a miss call the model and store, on a hit
answer from the cache; one usage row for the model call and one cached row."""

import os
import re
import subprocess
import sys

import pytest

import harness
from harness import wait_until
from test_ai_usage import usage_pooler
from test_migrate import fresh_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own")

DOCS = harness.REPO / "docs" / "ai-middleware.md"


def documented_flow():
    text = DOCS.read_text()
    m = re.search(r"^### The flow, end to end\n(.*?)(?=^#{1,3} |\Z)", text, re.S | re.M)
    assert m, 'docs/ai-middleware.md has no "### The flow, end to end" section'
    blocks = re.findall(r"```python\n(.*?)```", m.group(1), re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_documented_flow_runs_and_counts_one_call_and_one_hit(sluice, pg, fresh_db):
    pooler = usage_pooler(sluice, pg, fresh_db).start()
    pg.query("CREATE TABLE llm_cache (prompt_hash text PRIMARY KEY, answer text)", dbname=fresh_db)
    pg.query("GRANT ALL ON llm_cache TO app", dbname=fresh_db)
    env = dict(os.environ, DATABASE_URL=pooler.dsn(dbname="usage"))
    out = subprocess.run([sys.executable, "-c", documented_flow()], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["WHAT IS A CONNECTION POOLER?"] * 3
    wait_until(lambda: pg.query("SELECT count(*) FROM sluice.llm_usage", dbname=fresh_db)[0][0] >= 2,
               10, "two usage rows")
    rows = pg.query("SELECT cached, subject, model, input_tokens, output_tokens FROM sluice.llm_usage"
                    " ORDER BY cached", dbname=fresh_db)
    assert rows == [(False, "alice", "gpt-4o", 12, 3), (True, "alice", "gpt-4o", 0, 0)]
