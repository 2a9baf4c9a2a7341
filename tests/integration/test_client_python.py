# SPDX-License-Identifier: PostgreSQL
"""The Python kit (clients/python, `import sluice`) against a running pgsluice.

What an application sees: a subject with quotes, spaces and non-ASCII text is
recorded exactly as given; an OpenAI or Anthropic response's usage becomes
the row's token counts; attribute() charges a block's statements and puts the
connection back; execute() waits out a rate-limit refusal and returns the row.
"""

import sys
from types import SimpleNamespace

import time

import psycopg
import pytest

import harness
from test_migrate import assert_succeeded, fresh_db, run_migrate  # noqa: F401 (fixture)

sys.path.insert(0, str(harness.REPO / "clients" / "python"))
import sluice  # noqa: E402

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="pgsluice's own middleware")

RPM = 20


@pytest.fixture
def kit_pooler(sluice_factory, pg, fresh_db):  # noqa: F811
    pooler = sluice_factory(start=False, ai_database="usage", pool_mode="transaction",
                            databases={"usage": f"host={pg.host} port={pg.port} dbname={fresh_db} user=app"},
                            extra_ini=f"[limits]\nlimited = requests_per_minute={RPM}")
    assert_succeeded(run_migrate(pooler))
    pg.query("INSERT INTO sluice.model_prices VALUES ('gpt-4o', 2.5, 10), ('claude-sonnet-4', 3, 15)",
             dbname=fresh_db)
    pg.query("CREATE TABLE answers (k int PRIMARY KEY, text text)", dbname=fresh_db)
    pg.query("GRANT ALL ON answers TO app", dbname=fresh_db)
    pooler.start()
    return pooler, fresh_db


@pytest.fixture
def sluice_factory(sluice):
    return sluice      # the harness fixture's name is taken by the module under test


def rows(pg, db, n):
    harness.wait_for(lambda: len(pg.query("SELECT 1 FROM sluice.llm_usage", dbname=db)) >= n,
                     timeout=30, what=f"{n} usage rows")
    return pg.query("SELECT subject, model, input_tokens, output_tokens, cost_cents"
                    " FROM sluice.llm_usage ORDER BY input_tokens", dbname=db)


def test_comment_encodes_as_sqlcommenter():
    assert sluice.comment(ai_user="o'brien x/y", ai_model="gpt-4o", ai_tokens_in=12) == \
        "/*ai_model='gpt-4o',ai_tokens_in='12',ai_user='o%27brien%20x%2Fy'*/"
    assert sluice.comment(ai_user=None) == ""
    assert sluice.tag("SELECT 1;", ai_user="a") == "SELECT 1 /*ai_user='a'*/"
    assert sluice.tag("SELECT %s", (1,), ai_user="50%") == "SELECT %s /*ai_user='50%%25'*/"
    with pytest.raises(ValueError):
        sluice.comment(**{"ai_user*/": "x"})
    # the Node kit writes the same text for these (clients/node/test/orm.test.js): every byte but
    # letters, digits and -._~ percent-encoded, so a ' never needs the \' escape
    assert sluice.comment(ai_user="a'b c/d%e+f~g!h*(i)", ai_model="m:1?x=y&z") == \
        "/*ai_model='m%3A1%3Fx%3Dy%26z',ai_user='a%27b%20c%2Fd%25e%2Bf~g%21h%2A%28i%29'*/"


def test_usage_reads_openai_and_anthropic_responses():
    openai_chat = {"model": "gpt-4o", "usage": {"prompt_tokens": 120, "completion_tokens": 30}}
    assert sluice.usage(openai_chat) == {"ai_model": "gpt-4o", "ai_tokens_in": 120, "ai_tokens_out": 30}
    anthropic = SimpleNamespace(model="claude-sonnet-4", usage=SimpleNamespace(
        input_tokens=200, output_tokens=50, cache_creation_input_tokens=10,
        cache_read_input_tokens=None))
    assert sluice.usage(anthropic) == {"ai_model": "claude-sonnet-4", "ai_tokens_in": 210,
                                       "ai_tokens_out": 50}
    assert sluice.usage({"usage": None}) == {}


def test_tagged_statements_record_subject_and_usage_exactly(kit_pooler, pg):
    pooler, db = kit_pooler
    subject = "o'brien /ü %20 \"x\""
    openai_chat = {"model": "gpt-4o", "usage": {"prompt_tokens": 120, "completion_tokens": 30}}
    anthropic = SimpleNamespace(model="claude-sonnet-4",
                                usage=SimpleNamespace(input_tokens=200, output_tokens=50))
    with pooler.connect(dbname="usage") as conn:
        conn.execute(sluice.tag("INSERT INTO answers VALUES (%s, %s)", (1, "a%b"),
                                ai_user=subject, **sluice.usage(openai_chat)), (1, "a%b"))
        conn.execute(sluice.tag("SELECT 1", ai_user=subject, **sluice.usage(anthropic)))
        assert conn.execute("SELECT text FROM answers").fetchone() == ("a%b",)
    got = rows(pg, db, 2)
    assert [tuple(r[:4]) for r in got] == [(subject, "gpt-4o", 120, 30),
                                           (subject, "claude-sonnet-4", 200, 50)]
    assert all(r[4] is not None and r[4] > 0 for r in got), got


def test_attribute_charges_the_block_and_restores_the_connection(kit_pooler):
    pooler, _ = kit_pooler
    with pooler.connect(dbname="usage") as conn:
        with sluice.attribute(conn, "tenant 'a'", model="gpt-4o"):
            assert conn.execute("SHOW sluice.user").fetchone() == ("tenant 'a'",)
            conn.execute("SELECT 1")
        assert (conn.execute("SHOW sluice.user").fetchone()[0] or "") == ""
        conn.execute("SET sluice.user = 'outer'")
        with sluice.attribute(conn, "inner"):
            conn.execute("SELECT 2")
        assert conn.execute("SHOW sluice.user").fetchone() == ("outer",)
        with pooler.connect(dbname="pgsluice") as console:
            cur = console.execute("SHOW USAGE")
            cols = [d.name for d in cur.description]
            usage = {(r["subject"], r["model"]): r["requests"] for r in (dict(zip(cols, row)) for row in cur)}
    assert usage == {("tenant 'a'", "gpt-4o"): 1, ("inner", ""): 1}, usage


def test_execute_waits_out_a_rate_limit_refusal(kit_pooler):
    pooler, _ = kit_pooler
    waits = []
    with pooler.connect(dbname="usage") as conn:
        refused = None
        for _ in range(RPM + 5):          # use up the burst
            try:
                conn.execute(sluice.tag("SELECT 1", ai_user="limited"))
            except psycopg.errors.ConfigurationLimitExceeded as e:
                refused = e
                break
        # requests_per_minute holds in any 60 s window: the burst's first slot frees in ~60 s
        assert refused is not None and 0 < sluice.retry_after(refused) <= 61, refused

        def time_passes(seconds):
            # instead of sleeping a minute: the operator raises the limit, as the wait would free a slot
            waits.append(seconds)
            pooler.extra_ini = f"[limits]\nlimited = requests_per_minute={RPM * 100}"
            pooler.reload()
            time.sleep(1.0)    # SIGHUP is handled at the loop's next turn

        cur = sluice.execute(conn, "SELECT %s::int + 1", (41,), ai_user="limited", sleep=time_passes,
                             max_wait=120)
        assert cur.fetchone() == (42,)
        assert waits and 0 < waits[0] <= 61, waits
        pooler.extra_ini = f"[limits]\nlimited = requests_per_minute={RPM}"
        pooler.reload()
        time.sleep(1.0)
        # a limit of 0 has no retry time: raised at once
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
            sluice.execute(conn, "SELECT 1", ai_user="limited", max_wait=0)


def test_budget_status_reads_the_subjects_budgets(sluice_factory, pg, fresh_db):  # noqa: F811
    pooler = sluice_factory(start=False, ai_database="usage", pool_mode="transaction",
                            limits_sync_interval="0.2", limits_refresh_interval="0.2",
                            databases={"usage": f"host={pg.host} port={pg.port} dbname={fresh_db} user=app"},
                            extra_ini="[limits]\nkb = tokens_per_day=1000")
    assert_succeeded(run_migrate(pooler))
    pooler.start()
    with pooler.connect(dbname="usage") as conn:
        conn.execute(sluice.tag("SELECT 1", ai_user="kb", ai_tokens_in=100, ai_tokens_out=20))
        harness.wait_for(lambda: sluice.budget_status(conn, "kb"), timeout=15, what="kb's budget row")
        harness.wait_for(lambda: sluice.budget_status(conn, "kb")[0]["used"] == 120, timeout=15,
                         what="kb's 120 tokens counted")
        [row] = sluice.budget_status(conn, "kb")
        assert row["dimension"] == "tokens_per_day"
        assert (row["limit"], row["used"], row["remaining"]) == (1000, 120, 880), row
        assert sluice.budget_status(conn, "nobody") == []
