# SPDX-License-Identifier: PostgreSQL
"""The Python kit's SQLAlchemy integration (clients/python, sluice.sqlalchemy) against pgsluice.

What an application on SQLAlchemy sees: inside `with sluice.sqlalchemy.attribute(session,
user, model)` its ORM and Core statements come back with their rows and are recorded for
that subject and model (with an LLM response's token counts); outside the block nothing
is charged; sluice.sqlalchemy.execute() waits out a rate-limit refusal (53400) as its
HINT says and returns the rows. Runs with Debian's SQLAlchemy (1.4 in bookworm: the
psycopg2 driver; under SQLAlchemy 2 also psycopg 3, postgresql+psycopg).
"""

import sys
import time

import psycopg
import pytest

import harness
from test_client_python import RPM, kit_pooler, sluice_factory  # noqa: F401 (fixtures)
from test_migrate import fresh_db  # noqa: F401 (fixture)

sqlalchemy = pytest.importorskip("sqlalchemy")
from sqlalchemy import Column, Integer, Text, insert, select, text  # noqa: E402
from sqlalchemy.engine import URL  # noqa: E402
from sqlalchemy.orm import Session, declarative_base  # noqa: E402

sys.path.insert(0, str(harness.REPO / "clients" / "python"))
import sluice  # noqa: E402
import sluice.sqlalchemy  # noqa: E402

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="pgsluice's own middleware")

SQLALCHEMY_2 = int(sqlalchemy.__version__.split(".")[0]) >= 2
Base = declarative_base()


class Answer(Base):
    __tablename__ = "answers"
    k = Column(Integer, primary_key=True)
    text = Column(Text)


def _have(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


DRIVERS = [
    pytest.param("psycopg2", marks=pytest.mark.skipif(not _have("psycopg2"), reason="python3-psycopg2 missing")),
    pytest.param("psycopg", marks=pytest.mark.skipif(
        not SQLALCHEMY_2, reason=f"SQLAlchemy {sqlalchemy.__version__} has no psycopg 3 dialect (2.0 has)")),
]


@pytest.fixture(params=DRIVERS)
def engine(request, kit_pooler):  # noqa: F811
    pooler, db = kit_pooler
    url = URL.create(f"postgresql+{request.param}", username="app", password=harness.PASSWORDS["app"],
                     host=pooler.host, port=pooler.port, database="usage")
    # future=True: SQLAlchemy 2's Connection and Session behaviour under 1.4 too (2.x: the only one)
    eng = sqlalchemy.create_engine(url, pool_size=1, max_overflow=0, future=True)
    yield eng, pooler, db
    eng.dispose()


def show_usage(pooler):
    with pooler.connect(dbname="pgsluice") as console:
        cur = console.execute("SHOW USAGE")
        cols = [d.name for d in cur.description]
        return {(r["subject"], r["model"]): r for r in (dict(zip(cols, row)) for row in cur)}


def test_attribute_tags_orm_and_core_statements_and_records_usage(engine, pg):
    eng, pooler, db = engine
    subject = "o'brien /ü %20 \"x\" 50%"
    response = {"model": "gpt-4o", "usage": {"prompt_tokens": 120, "completion_tokens": 30}}
    with Session(eng) as session:
        session.execute(text("SELECT 1"))                      # outside a block: charged to nobody
        with sluice.sqlalchemy.attribute(session, subject, **sluice.usage(response)) as tags:
            assert tags == {"ai_user": subject, "ai_model": "gpt-4o", "ai_tokens_in": 120, "ai_tokens_out": 30}
            session.execute(insert(Answer).values(k=1, text="a%b 'q'"))
        session.commit()
        with sluice.sqlalchemy.attribute(session, subject, "claude-sonnet-4"):
            got = session.execute(select(Answer.text).where(Answer.k == 1)).all()
            raw = session.execute(text("SELECT 'x%y' AS s")).all()          # no parameters
            orm = session.get(Answer, 1).text
            assert sluice.sqlalchemy.current_tags() == {"ai_user": subject, "ai_model": "claude-sonnet-4"}
        session.commit()
        assert sluice.sqlalchemy.current_tags() == {}
    assert [tuple(r) for r in got] == [("a%b 'q'",)]
    assert [tuple(r) for r in raw] == [("x%y",)]
    assert orm == "a%b 'q'"
    harness.wait_for(lambda: len(pg.query("SELECT 1 FROM sluice.llm_usage WHERE input_tokens > 0",
                                          dbname=db)) >= 1, timeout=30, what="the insert's usage row")
    rows = pg.query("SELECT subject, model, input_tokens, output_tokens, cost_cents FROM sluice.llm_usage"
                    " WHERE input_tokens > 0", dbname=db)
    assert [tuple(r[:4]) for r in rows] == [(subject, "gpt-4o", 120, 30)], rows
    assert rows[0][4] is not None and rows[0][4] > 0, rows
    usage = show_usage(pooler)
    assert set(usage) == {(subject, "gpt-4o"), (subject, "claude-sonnet-4")}, usage
    assert usage[(subject, "gpt-4o")]["requests"] == 1, usage
    assert usage[(subject, "claude-sonnet-4")]["requests"] == 3, usage


def test_blocks_nest_and_end_with_their_tags(engine):
    eng, pooler, _ = engine
    with eng.begin() as conn:
        with sluice.sqlalchemy.attribute(conn, "outer", "gpt-4o"):
            conn.execute(text("SELECT 1"))
            with sluice.sqlalchemy.attribute(None, "inner"):
                conn.execute(text("SELECT :n"), {"n": 2})
            conn.execute(text("SELECT 3"))
        conn.execute(text("SELECT 4"))
    usage = show_usage(pooler)
    assert {k: v["requests"] for k, v in usage.items()} == {("outer", "gpt-4o"): 2, ("inner", "gpt-4o"): 1}, usage


def test_execute_waits_out_a_rate_limit_refusal(engine):
    eng, pooler, _ = engine
    waits = []
    with Session(eng) as session, sluice.sqlalchemy.attribute(session, "limited"):
        refused = None
        for _ in range(RPM + 5):          # use up the burst
            try:
                session.execute(text("SELECT 1"))
                session.commit()
            except sqlalchemy.exc.DBAPIError as e:
                refused = e
                session.rollback()
                break
        assert refused is not None and 0 < sluice.retry_after(refused) <= 61, refused

        # inside a transaction with earlier work the refusal is raised, not retried
        with pytest.raises(sqlalchemy.exc.DBAPIError) as inside:
            session.execute(text("SELECT 0 AS earlier_work"))
        session.rollback()
        assert sluice.retry_after(inside.value) is not None

        def time_passes(seconds):
            # instead of sleeping a minute: the operator raises the limit, as the wait would free a slot
            waits.append(seconds)
            pooler.extra_ini = f"[limits]\nlimited = requests_per_minute={RPM * 100}"
            pooler.reload()
            time.sleep(1.0)    # SIGHUP is handled at the loop's next turn

        got = sluice.sqlalchemy.execute(session, text("SELECT CAST(:n AS int) + 1"), {"n": 41},
                                        sleep=time_passes, max_wait=120).all()
        session.commit()
        assert [tuple(r) for r in got] == [(42,)]
        assert len(waits) == 1 and 0 < waits[0] <= 61, waits


def test_execute_raises_a_refusal_it_cannot_wait_out(engine):
    eng, _, _ = engine
    with Session(eng) as session, sluice.sqlalchemy.attribute(session, "limited"):
        for _ in range(RPM):
            session.execute(text("SELECT 1"))
            session.commit()
        waits = []
        with pytest.raises(sqlalchemy.exc.DBAPIError) as refused:
            sluice.sqlalchemy.execute(session, text("SELECT 1"), max_wait=0, sleep=waits.append)
        assert waits == []
        orig = refused.value.orig
        assert (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) == "53400"


def test_psycopg_errors_and_retry_after_agree():
    # the plain-psycopg path still reads sqlstate; SQLAlchemy's wrapper is unwrapped
    err = psycopg.errors.ConfigurationLimitExceeded("refused")
    assert sluice.retry_after(err) is None        # no HINT: nothing to wait for


def test_execute_on_a_connection_waits_out_a_refusal(engine):
    eng, pooler, _ = engine
    waits = []

    def time_passes(seconds):
        waits.append(seconds)
        pooler.extra_ini = f"[limits]\nlimited = requests_per_minute={RPM * 100}"
        pooler.reload()
        time.sleep(1.0)    # SIGHUP is handled at the loop's next turn

    with eng.connect() as conn, sluice.sqlalchemy.attribute(conn, "limited"):
        for _ in range(RPM + 5):          # use up the burst
            try:
                conn.execute(text("SELECT 1"))
            except sqlalchemy.exc.DBAPIError:
                break
        if conn.in_transaction():
            conn.rollback()
        got = sluice.sqlalchemy.execute(conn, text("SELECT 7"), sleep=time_passes, max_wait=120).all()
    assert [tuple(r) for r in got] == [(7,)]
    assert len(waits) == 1, waits
