# SPDX-License-Identifier: PostgreSQL
"""Every runnable example in docs/ is run (issue 15, item 7): what a reader copies works.

docs_blocks.py finds the fenced blocks of docs/*.md and says the rule: ```sh, ```sql,
```python and ```js blocks are examples, run here unless the line before the fence says
`<!-- run by tests/integration/test_x.py -->` (that test runs it) or `<!-- not run: why -->`.
Output, syntax, diagrams and other programs' configuration (```, ```json, ```yaml) are not
run; ```ini fragments must load with pgsluice --check-config. The SQL examples run in
order, each file's against its own copy of an ai_database migrated by pgsluice --migrate,
reached through pgsluice, as an operator would run them.
"""

import os
import re
import shutil
import subprocess
import sys
from urllib.parse import quote

import psycopg
import pytest

import harness
from docs_blocks import RUNNABLE, blocks, examples
from test_client_node import KIT as KIT_NODE, node_modules  # noqa: F401 (fixture)
from test_migrate import assert_succeeded, fresh_db, run_migrate  # noqa: F401 (fixture)

KIT_PY = harness.REPO / "clients" / "python"
pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="pgsluice's own docs")


def test_every_example_is_run_or_says_why_not():
    problems = []
    for b in blocks():
        if b.lang not in RUNNABLE:
            if b.mark:
                problems.append(f"{b.id}: a ```{b.lang or ''} block is not run anyway; drop its mark")
            continue
        if b.mark == "run by":
            test = harness.REPO / b.why
            if not re.fullmatch(r"tests/integration/test_\w+\.py", b.why) or not test.exists():
                problems.append(f"{b.id}: run by {b.why!r}: no such test file")
            elif b.doc not in test.read_text():
                problems.append(f"{b.id}: {b.why} does not name docs/{b.doc}")
        elif b.mark == "not run:" and not b.why:
            problems.append(f"{b.id}: 'not run:' without a reason")
    assert not problems, "\n".join(problems)


# What the SQL examples assume exists besides the sluice schema: the application tables they name.
PRELUDE = """
CREATE TABLE llm_cache (prompt_hash text PRIMARY KEY, answer text);
CREATE TABLE answers (conversation text, reply text);
ALTER TABLE llm_cache OWNER TO app;
ALTER TABLE answers OWNER TO app;
"""
# Set up right before the block whose text has the key (as app, in the same psql session).
SETUP_BEFORE = {
    # the archiving example comes after the retention example, which drops old months
    "DETACH PARTITION sluice.llm_usage_y2025m01": "CREATE TABLE sluice.llm_usage_y2025m01 PARTITION OF"
    " sluice.llm_usage FOR VALUES FROM ('2025-01-01') TO ('2025-02-01');\n",
}


def setup_for(block):
    return "".join(sql for key, sql in SETUP_BEFORE.items() if key in block.text)


def layout(conn, schema, table):
    return conn.execute("SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns"
                        " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                        (schema, table)).fetchall()


def run_with_parameters(dsn, block):
    """A statement as an application sends it ($1, $2 ...): extended protocol, NULL parameters."""
    n = len(re.findall(r"\$\d+", block.text))       # each occurrence becomes one %s
    text = re.sub(r"\$\d+", "%s", block.text.replace("%", "%%"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(text, (None,) * n)


def run_layout(dsn, block):
    """A CREATE TABLE sluice.x block shows a table's layout: it must be the migrated table's."""
    table = re.match(r"\s*CREATE (?:UNLOGGED )?TABLE sluice\.(\w+)", block.text).group(1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA doc_layout")
        try:
            conn.execute(block.text.replace("sluice.", "doc_layout.", 1))
            documented, real = layout(conn, "doc_layout", table), layout(conn, "sluice", table)
        finally:
            conn.execute("DROP SCHEMA doc_layout CASCADE")
    assert documented == real, f"documented {documented}\nmigrated {real}"


def test_sql_examples_run(sluice, pg, fresh_db, tmp_path):  # noqa: F811
    docs = sorted({b.doc for b in examples("sql")})
    clones = {doc: f"{fresh_db}_{i}" for i, doc in enumerate(docs)}
    databases = {"usage": f"host={pg.host} port={pg.port} dbname={fresh_db} user=app"}
    databases.update({f"doc{i}": f"host={pg.host} port={pg.port} dbname={clones[doc]} user=app"
                      for i, doc in enumerate(docs)})
    pooler = sluice(start=False, ai_database="usage", pool_mode="transaction", databases=databases)
    assert_succeeded(run_migrate(pooler))
    pg.psql(PRELUDE, dbname=fresh_db)
    try:
        for doc in docs:       # each doc's examples on their own copy: they need not agree
            pg.query(f"CREATE DATABASE {clones[doc]} TEMPLATE {fresh_db} OWNER app", dbname="postgres")
        pooler.start()
        failures = []
        for i, doc in enumerate(docs):
            dsn = pooler.dsn(dbname=f"doc{i}")
            plain = []
            for b in examples("sql"):
                if b.doc != doc:
                    continue
                try:
                    if re.search(r"\$\d", b.text):
                        run_with_parameters(dsn, b)
                    elif re.match(r"\s*CREATE (UNLOGGED )?TABLE sluice\.", b.text):
                        run_layout(dsn, b)
                    else:
                        plain.append(b)
                except (psycopg.Error, AssertionError) as e:
                    failures.append(f"{b.id}: {type(e).__name__}: {e}")
            # the rest as a reader runs them: psql, the blocks in order, one session
            script = tmp_path / f"{doc}.sql"
            script.write_text("".join(f"\\echo BLOCK {b.id}\n{setup_for(b)}{b.text}" for b in plain))
            out = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script), dsn],
                                 capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            if out.returncode != 0:
                at = re.findall(r"^BLOCK (\S+)$", out.stdout, re.M)
                failures.append(f"{at[-1] if at else doc}: psql: {out.stderr.strip()}")
        assert not failures, "\n".join(failures)
    finally:
        pooler.stop()
        for clone in clones.values():
            pg.query(f"DROP DATABASE IF EXISTS {clone} WITH (FORCE)", dbname="postgres")


# The examples talk to "the pooler" at the addresses a reader's set-up has; run here, they talk
# to the test's pgsluice instead (and to a fresh database where they would change "app").
def localize(text, pooler, db=None):
    text = text.replace("127.0.0.1:6432", f"{pooler.host}:{pooler.port}")
    text = text.replace("app:secret@", f"app:{harness.PASSWORDS['app']}@")
    if db:
        text = re.sub(r"-d app\b", f"-d {db}", text)
    return text


def url_of(pooler, dbname="app"):
    """DATABASE_URL of the test's pgsluice, as the examples read it (a postgresql:// URL)."""
    return (f"postgresql://app:{quote(harness.PASSWORDS['app'], safe='')}@{pooler.host}:{pooler.port}"
            f"/{dbname}")


# After a Python block that only defines something, what shows it works through pgsluice.
PYTHON_AFTER = {
    "def tag(sql, params=None, **tags):": """
import os, psycopg
with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
    assert conn.execute(tag("SELECT %s::int + 1", (41,), ai_user="o'brien 50%"), (41,)).fetchone() == (42,)
    assert conn.execute(tag("SELECT 1", ai_user="tenant/a b")).fetchone() == (1,)
""",
}
# What a Python block must print, where its comment says so.
PYTHON_PRINTS = {
    "SASL authentication failed": "FATAL:  SASL authentication failed",
}


def test_python_examples_run(sluice, tmp_path):
    pooler = sluice(pool_mode="transaction")
    failures = []
    for b in examples("python"):
        code = localize(b.text, pooler) + "".join(v for k, v in PYTHON_AFTER.items() if k in b.text)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, DATABASE_URL=url_of(pooler), PYTHONPATH=str(KIT_PY)),
                             cwd=tmp_path)
        if out.returncode != 0:
            failures.append(f"{b.id}: exit {out.returncode}: {out.stderr.strip()[-500:]}")
        for key, printed in PYTHON_PRINTS.items():
            if key in b.text and printed not in out.stdout:
                failures.append(f"{b.id}: printed {out.stdout!r}, not {printed!r}")
    assert not failures, "\n".join(failures)
    with pooler.connect(dbname="pgsluice") as console:
        subjects = {r[0] for r in console.execute("SHOW USAGE")}
    assert {"o'brien 50%", "tenant/a b", "alice"} <= subjects, subjects


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_js_examples_run(sluice, node_modules, tmp_path):
    """js examples with the kit's node_modules (npm ci); require('pgsluice-kit') finds clients/node."""
    pooler = sluice(pool_mode="transaction")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "pgsluice-kit").symlink_to(KIT_NODE)
    failures = []
    for b in examples("js"):
        script = tmp_path / f"example_{b.line}.js"
        script.write_text(b.text)
        out = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                             env=dict(os.environ, DATABASE_URL=url_of(pooler),
                                      NODE_PATH=f"{tmp_path / 'node_modules'}:{KIT_NODE / 'node_modules'}"))
        if out.returncode != 0:
            failures.append(f"{b.id}: exit {out.returncode}: {(out.stdout + out.stderr).strip()[-800:]}")
    assert not failures, "\n".join(failures)
    assert examples("js"), "no js example left for this test"
    with pooler.connect(dbname="pgsluice") as console:
        got = {(r[0], r[1]): r[2] for r in console.execute("SHOW USAGE")}
    assert got.get(("alice", "gpt-4o"), 0) >= 2, got


# After a shell block, what shows it did what the doc says.
SH_AFTER = {
    "openssl req -x509": "openssl verify -CAfile ca.crt pooler.crt\n",
    "sql/0001_sluice_schema.sql": "psql -X -Atq -d {db} -c 'SELECT version FROM sluice.schema_migrations'\n",
}


def test_sh_examples_run(sluice, pg, fresh_db, tmp_path):  # noqa: F811
    pooler = sluice(pool_mode="transaction")
    (tmp_path / "sql").symlink_to(harness.REPO / "sql")      # the examples run from the repository's top
    env = dict(os.environ, PGHOST=str(pg.socket_dir), PGPORT=str(pg.port), PGUSER=pg.admin_user)
    failures = []
    for b in examples("sh"):
        script = localize(b.text, pooler, fresh_db) + "".join(
            v.format(db=fresh_db) for k, v in SH_AFTER.items() if k in b.text)
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                             timeout=60, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            failures.append(f"{b.id}: exit {out.returncode}: {out.stderr.strip()[-500:]}")
        elif "sql/0001_sluice_schema.sql" in b.text:
            assert out.stdout.split()[-1:] == ["1"], out.stdout    # recorded as version 1
    assert not failures, "\n".join(failures)
    assert examples("sh"), "no shell example left to run: drop this test or the marks"


# ```ini blocks are fragments: each must load (pgsluice --check-config) after a minimal
# config. Files they name on the reader's machine (/etc/...) are not here: those errors only.
INI_BASE = "[databases]\ndocbase = host=127.0.0.1 dbname=app\n\n[pgsluice]\nlisten_port = 6432\nauth_type = trust\n\n"
MISSING_FILE = re.compile(r'could not open file "/etc/|could not load the certificate: .*No such file')
def ini_blocks():
    return [pytest.param(b, id=b.id) for b in blocks() if b.lang == "ini"]


@pytest.mark.parametrize("block", ini_blocks())
def test_ini_fragments_load(block, tmp_path):
    ini = tmp_path / "pgsluice.ini"
    ini.write_text(INI_BASE + block.text)
    out = harness.run_binary(["--check-config", ini], timeout=30)
    errors = [line for line in out.stdout.splitlines() if " ERROR " in line and not MISSING_FILE.search(line)]
    assert not errors, "\n".join(errors)
    assert out.returncode == 0 or MISSING_FILE.search(out.stdout), out.stdout
