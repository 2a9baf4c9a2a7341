# SPDX-License-Identifier: PostgreSQL
"""The back-off examples of docs/ai-middleware.md ("Backing off"), run as written.

A subject first uses up its requests_per_minute, so the example's first
attempt is refused with 53400 and "Retry after N s"; the example must wait
and return the row. The Python example runs with psycopg; the Node.js one
with node-postgres from clients/node/node_modules (npm ci, as test_client_node.py
does), skipped only where node is not installed.
"""

import os
import re
import shutil
import subprocess
import time

import psycopg
import pytest

import harness
from test_client_node import KIT, node_modules  # noqa: F401 (fixture)

DOCS = harness.REPO / "docs" / "ai-middleware.md"
NODE_MODULES = KIT / "node_modules"
RPM = 20          # one statement every 3 s once the burst is used: the wait is short, and
                  # far longer than the gap between using it up and the example's first try

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="pgsluice's own limits")


def code_block(heading, lang):
    text = DOCS.read_text()
    section = text.split(heading, 1)[1]
    m = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert m, f"no ```{lang} block under {heading!r} in {DOCS.name}"
    return m.group(1)


@pytest.fixture
def limited(sluice, pg):
    """A pooler where alice may run RPM statements a minute, a table llm_cache, alice's burst used."""
    if not pg.running:
        pg.start()
    pg.query("CREATE TABLE IF NOT EXISTS llm_cache (k text PRIMARY KEY, answer text)", dbname="app")
    pg.query("GRANT ALL ON llm_cache TO app", dbname="app")
    pg.query("INSERT INTO llm_cache VALUES ('greeting', 'hello') ON CONFLICT DO NOTHING", dbname="app")
    pooler = sluice(extra_ini=f"[limits]\nalice = requests_per_minute={RPM}")
    url = f"postgresql://app:{harness.PASSWORDS['app']}@127.0.0.1:{pooler.port}/app"

    def use_up():
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(RPM + 5):
                try:
                    conn.execute("SELECT 1 /*ai_user='alice'*/")
                except psycopg.errors.ConfigurationLimitExceeded:
                    return
        raise AssertionError("the limit never refused a statement")

    return url, use_up, pooler


def refusals(pooler):
    with pooler.connect(dbname="pgsluice") as console:
        rows = console.execute("SHOW USAGE").fetchall()
        cols = [d.name for d in console.execute("SHOW USAGE").description]
    return sum(dict(zip(cols, r))["refusals"] for r in rows if dict(zip(cols, r))["subject"] == "alice")


def test_python_backoff_example_waits_and_retries(limited, monkeypatch):
    url, use_up, pooler = limited
    waits = []

    def time_passes(seconds):
        # requests_per_minute holds in any 60 s window, so the HINT says ~60 s: instead of
        # sleeping, raise the limit as the wait would free a slot
        waits.append(seconds)
        pooler.extra_ini = f"[limits]\nalice = requests_per_minute={RPM * 100}"
        pooler.reload()
        real_sleep(1.0)    # SIGHUP is handled at the loop's next turn

    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", time_passes)
    namespace = {"DATABASE_URL": url, "key": "greeting"}
    exec(code_block("### Writing tags", "python"), namespace)   # defines tag()
    backoff = code_block("### Backing off: Python (psycopg 3)", "python")
    use_up()
    before = refusals(pooler)
    exec(backoff, namespace)
    assert namespace["rows"] == [("hello",)]
    assert waits and 0 < waits[0] <= 61, waits
    assert refusals(pooler) > before, "the example's first attempt was refused, then retried"


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_node_backoff_example_waits_and_retries(limited, node_modules, tmp_path):
    url, use_up, pooler = limited
    script = tmp_path / "backoff.js"
    script.write_text(code_block("### Backing off: Node.js (node-postgres)", "js"))
    use_up()
    before = refusals(pooler)
    # node-postgres from the Node kit's node_modules (npm ci, package-lock.json's version).
    # The HINT asks for ~60 s: a preloaded setTimeout records the wait and, instead of
    # sleeping, raises alice's limit as the wait would free a slot (ini rewritten, RELOAD).
    waits = tmp_path / "waits"
    preload = tmp_path / "time_passes.js"
    preload.write_text(TIME_PASSES_JS)
    admin = url.rsplit("/", 1)[0] + "/pgsluice"
    out = subprocess.run(["node", "--require", str(preload), str(script), "greeting"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=25,
                         env=dict(os.environ, DATABASE_URL=url, NODE_PATH=str(NODE_MODULES),
                                  ADMIN_URL=admin, PGSLUICE_INI=str(pooler.ini_path), WAITS_FILE=str(waits)))
    assert out.returncode == 0, out.stdout
    assert "answer: 'hello'" in out.stdout, out.stdout
    recorded = [float(w) for w in waits.read_text().split()]
    assert recorded and 0 < recorded[0] <= 61000, recorded
    assert refusals(pooler) > before, "the example's first attempt was refused, then retried"


TIME_PASSES_JS = r"""
const fs = require('fs');
const realSetTimeout = global.setTimeout;
global.setTimeout = (fn, ms, ...args) => {
  if (!(ms >= 1000)) return realSetTimeout(fn, ms, ...args);
  fs.appendFileSync(process.env.WAITS_FILE, `${ms}\n`);
  const ini = process.env.PGSLUICE_INI;
  fs.writeFileSync(ini, fs.readFileSync(ini, 'utf8').replace(/^alice = requests_per_minute=\d+$/m,
    'alice = requests_per_minute=100000'));
  const { Client } = require('pg');
  const admin = new Client({ connectionString: process.env.ADMIN_URL });
  admin.connect().then(() => admin.query('RELOAD')).then(() => admin.end())
    .then(() => realSetTimeout(fn, 0, ...args), (err) => { console.error(err); process.exit(3); });
  return null;
};
"""
