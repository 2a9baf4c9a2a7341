# SPDX-License-Identifier: PostgreSQL
"""A client's middleware state is made the first time it needs it (docs/design.md section 7).

pgsluice keeps a client's sluice.user/sluice.model, its statements' tags and its
completion-cache state in one structure it makes only when the client first uses
the middleware (issue 18 items 0 and 3). What a user must not notice: a client that
starts plain and later sets sluice.user, tags a statement (simple or extended
protocol) or looks up the cache is attributed, limited and answered exactly as one
that did so from its first statement; SHOW and RESET of sluice.* on a client that
never set them answer as before.
"""

from urllib.parse import quote

import pytest
from psycopg import errors

import harness

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own")


def tagged(sql, **tags):
    comment = ",".join(f"{key}='{quote(str(value), safe='')}'" for key, value in tags.items())
    return f"{sql} /*{comment}*/"


def one(conn, sql, params=None, **kw):
    return conn.execute(sql, params, **kw).fetchone()[0]


def limited_pooler(sluice, limits, **overrides):
    pooler = sluice(start=False, **overrides)
    pooler.limits = dict(limits)
    pooler.start()
    return pooler


def usage_requests(pooler):
    with pooler.connect(dbname="pgsluice") as console:
        cur = console.execute("SHOW USAGE")
        cols = [d.name for d in cur.description]
        return {(r["subject"], r["model"]): r["requests"] for r in (dict(zip(cols, row)) for row in cur)}


def test_plain_client_shows_and_resets_sluice_settings_then_is_attributed_by_a_late_set(sluice):
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=2"}, pool_mode="transaction")
    with pooler.connect() as conn:
        assert (one(conn, "SHOW sluice.user") or "") == ""
        assert (one(conn, "SHOW sluice.model") or "") == ""
        assert conn.execute("RESET sluice.user").statusmessage == "RESET"
        for n in range(5):     # plain statements, simple and extended: never counted
            assert one(conn, "select %s::int", (n,)) == n
            assert one(conn, f"select {n}") == n
        conn.execute("SET sluice.model = 'gpt-4o'")
        assert one(conn, "SHOW sluice.model") == "gpt-4o"
        assert one(conn, "select 'model only'") == "model only"    # a model alone attributes nothing
        conn.execute("SET sluice.user = 'alice'")
        assert one(conn, "SHOW sluice.user") == "alice"
        assert one(conn, "select 1") == 1
        assert one(conn, "select %s::int", (2,)) == 2
        with pytest.raises(errors.ConfigurationLimitExceeded) as info:
            conn.execute("select 3")
        assert info.value.sqlstate == "53400"
        assert conn.execute("RESET sluice.user").statusmessage == "RESET"
        assert one(conn, "select 'free again'") == "free again"
    assert usage_requests(pooler) == {("alice", "gpt-4o"): 2}


@pytest.mark.parametrize("prepare", [False, True], ids=["unnamed", "prepared"])
def test_first_tagged_extended_statement_after_plain_ones_is_limited(sluice, prepare):
    pooler = limited_pooler(sluice, {"carol": "requests_per_minute=1"}, pool_mode="transaction")
    with pooler.connect() as conn:
        for n in range(3):
            assert one(conn, "select %s::int + 0", (n,), prepare=prepare) == n
        sql = tagged("select %s::int + 1", ai_user="carol")
        assert one(conn, sql, (1,), prepare=prepare) == 2
        with pytest.raises(errors.ConfigurationLimitExceeded) as info:
            conn.execute(sql, (2,), prepare=prepare)
        assert info.value.sqlstate == "53400"
        assert one(conn, "select %s::int + 0", (7,), prepare=prepare) == 7    # the connection stays usable
    assert usage_requests(pooler) == {("carol", ""): 1}


def test_startup_option_sluice_model_alone_is_kept_and_attributes_nothing(sluice):
    pooler = limited_pooler(sluice, {"dave": "requests_per_minute=1"}, pool_mode="transaction")
    with pooler.connect(options="-c sluice.model=claude") as conn:
        assert one(conn, "SHOW sluice.model") == "claude"
        assert (one(conn, "SHOW sluice.user") or "") == ""
        for n in range(3):
            assert one(conn, f"select {n}") == n
        assert one(conn, tagged("select 'tagged'", ai_user="dave")) == "tagged"
        with pytest.raises(errors.ConfigurationLimitExceeded):
            conn.execute(tagged("select 'again'", ai_user="dave"))
    assert usage_requests(pooler) == {("dave", "claude"): 1}


def test_cache_lookup_made_late_is_answered_from_the_cache(sluice):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        for n in range(3):
            assert one(conn, "select %s::int", (n,)) == n
        lookup = tagged("select pg_backend_pid(), 'cached'", ai_cache="lookup")
        first = conn.execute(lookup).fetchone()
        assert conn.execute(lookup).fetchone() == first     # the same row: answered by pgsluice
    with pooler.connect(dbname="pgsluice") as console:
        cur = console.execute("SHOW CACHE")
        cols = [d.name for d in cur.description]
        stats = dict(zip(cols, cur.fetchone()))
    assert stats["hits"] == 1, stats
