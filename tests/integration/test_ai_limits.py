# SPDX-License-Identifier: PostgreSQL
"""Per-subject rate limits on attributed statements (docs/ai-middleware.md, docs/limits.md, docs/configuration.md, docs/errors.md).

A statement is attributed when it carries an ai_ tag (a sqlcommenter comment,
`/*ai_user='alice'*/`) or comes from a client that set sluice.user (SET, or
`options=-c sluice.user=...` at startup). Only attributed statements are
counted against the [limits] section of the ini file; everything else passes
as through a plain pooler. What these tests hold pgsluice to, as a user of a
PostgreSQL driver sees it:

- a subject over its limit gets ERROR 53400 with a DETAIL and a HINT that says
  when to retry, its connection stays usable, and other subjects are unaffected;
- the refusal behaves like a PostgreSQL error: inside a transaction block the
  block is failed (COMMIT rolls back), under the extended protocol the error
  comes at the refused Execute and the rest up to Sync is skipped;
- outside a transaction a refusal is answered without waiting for a server;
- sluice.user is kept by pgsluice for its client: it follows the client under
  transaction pooling and never reaches a pooled server;
- only roles in tag_trusted_roles may name another subject with ai_user, and a
  malformed ai_ tag value is an error (22023), not silence;
- limits resolve subject/model > subject > default, and SIGHUP applies a
  changed [limits] section without forgetting what was already counted.

The limits used here are small (1 to 3 requests per minute): a per-minute
limit of N refills one request every 60/N seconds, far longer than a test runs,
so every count below is exact.
"""

import re
import time
from urllib.parse import quote

import pytest
from harness import wait_for
from psycopg import errors

import harness
import pgwire

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own")

RETRY_HINT = re.compile(r"Retry after (\d+(?:\.\d)?) s\.")


# -- helpers -------------------------------------------------------------------------
def limited_pooler(sluice, limits, **overrides):
    """A pooler whose ini file has a [limits] section with the lines of `limits`."""
    pooler = sluice(start=False, **overrides)
    pooler.limits = dict(limits)
    pooler.start()
    return pooler


def tagged(sql, **tags):
    """sql with a sqlcommenter comment at its end: tagged("select 1", ai_user="alice")."""
    comment = ",".join(f"{key}='{quote(str(value), safe='')}'" for key, value in tags.items())
    return f"{sql} /*{comment}*/"


def one(conn, sql, params=None):
    """The single value of a one-row, one-column result."""
    return conn.execute(sql, params).fetchone()[0]


def refused(conn, sql, params=None, error=errors.ConfigurationLimitExceeded):
    """Run sql, expecting it to be refused with `error`; returns the exception."""
    with pytest.raises(error) as info:
        conn.execute(sql, params)
    return info.value


def retry_after(e):
    """The seconds named by a 53400 refusal's HINT."""
    m = RETRY_HINT.fullmatch(e.diag.message_hint or "")
    assert m, f"HINT {e.diag.message_hint!r} does not say when to retry"
    return float(m.group(1))


def assert_rate_refusal(e, subject, dimension, limit):
    assert e.sqlstate == "53400"
    assert e.diag.severity_nonlocalized == "ERROR"
    assert e.diag.message_primary == f'rate limit exceeded for "{subject}": {dimension} {limit}'




@pytest.fixture
def table(pg):
    """A fresh table t_ai(x int) in database app that role app may write; dropped afterwards."""
    pg.query("DROP TABLE IF EXISTS t_ai")
    pg.query("CREATE TABLE t_ai (x int)")
    pg.query("GRANT ALL ON t_ai TO app")
    yield "t_ai"
    pg.query("DROP TABLE IF EXISTS t_ai")


# -- refusal ---------------------------------------------------------------------------
def test_subject_over_requests_per_minute_gets_53400_with_retry_hint_and_keeps_its_connection(
        sluice):
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=2",
                                     "bob": "requests_per_minute=2"})
    with pooler.connect() as conn, pooler.connect() as other:
        assert one(conn, tagged("select 1", ai_user="alice")) == 1
        assert one(conn, tagged("select 2", ai_user="alice")) == 2

        e = refused(conn, tagged("select 3", ai_user="alice"))
        assert_rate_refusal(e, "alice", "requests_per_minute", 2)
        assert e.diag.message_detail == "2 requests in the last minute; the limit is 2."
        # requests_per_minute=2: 2 in any 60 s, counted in one-second slots (so at most 61 s)
        assert 0 < retry_after(e) <= 61.0

        # the connection is usable at once for what is not alice's
        assert one(conn, "select 'untagged'") == "untagged"
        assert one(conn, tagged("select 'bob'", ai_user="bob")) == "bob"
        assert one(other, tagged("select 'bob again'", ai_user="bob")) == "bob again"
        # and alice stays refused, on any connection
        refused(other, tagged("select 4", ai_user="alice"))


def test_refusal_inside_transaction_block_fails_it_and_commit_commits_nothing(sluice, pg, table):
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=1"}, pool_mode="transaction")
    with pooler.connect() as conn:
        assert one(conn, tagged("select 1", ai_user="alice")) == 1
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t_ai VALUES (1)")
        e = refused(conn, tagged("select 2", ai_user="alice"))
        assert_rate_refusal(e, "alice", "requests_per_minute", 1)
        # the block is failed exactly as by a PostgreSQL error
        refused(conn, "select 'more'", error=errors.InFailedSqlTransaction)
        assert conn.execute("COMMIT").statusmessage == "ROLLBACK"
        assert pg.query("SELECT count(*) FROM t_ai") == [(0,)]
        # and the connection goes on
        assert one(conn, "select 'after'") == "after"


def test_refused_statement_outside_transaction_takes_no_server(sluice):
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=1"}, pool_mode="transaction",
                            default_pool_size=1, query_wait_timeout=10)
    with pooler.connect() as conn, pooler.connect() as holder:
        assert one(conn, tagged("select 1", ai_user="alice")) == 1
        holder.execute("BEGIN")
        holder.execute("select 1")          # holds the only server until COMMIT
        started = time.monotonic()
        e = refused(conn, tagged("select 2", ai_user="alice"))
        elapsed = time.monotonic() - started
        assert_rate_refusal(e, "alice", "requests_per_minute", 1)
        assert elapsed < 1.0, f"the refusal waited {elapsed:.1f} s for a server"
        holder.execute("COMMIT")
        assert one(conn, "select 'after'") == "after"


def test_refused_parameterised_statement_outside_transaction_takes_no_server(sluice):
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=1"}, pool_mode="transaction",
                            default_pool_size=1, query_wait_timeout=2)
    with pooler.connect() as conn, pooler.connect() as holder:
        assert one(conn, tagged("select %s::int", ai_user="alice"), (1,)) == 1
        holder.execute("BEGIN")
        holder.execute("select 1")
        started = time.monotonic()
        try:
            e = refused(conn, tagged("select %s::int", ai_user="alice"), (2,))
        finally:
            holder.execute("COMMIT")
        assert_rate_refusal(e, "alice", "requests_per_minute", 1)
        assert time.monotonic() - started < 1.0


# -- extended protocol -------------------------------------------------------------------
def test_extended_protocol_refusal_comes_at_execute_and_next_query_works(sluice):
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=2"}, pool_mode="transaction")
    query = tagged("select %s::int", ai_user="alice")     # psycopg: Parse/Bind/Execute/Sync
    with pooler.connect() as conn:
        assert one(conn, query, (1,)) == 1
        assert one(conn, query, (2,)) == 2
        e = refused(conn, query, (3,))
        assert_rate_refusal(e, "alice", "requests_per_minute", 2)
        assert 0 < retry_after(e) <= 61.0
        assert one(conn, "select %s::int", (4,)) == 4
        assert one(conn, "select %s::text", ("five",)) == "five"


def test_named_prepared_statement_is_counted_at_every_execute(sluice):
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=3"}, pool_mode="transaction")
    query = tagged("select %s::int", ai_user="alice")
    with pooler.connect() as conn:
        for n in range(3):
            assert conn.execute(query, (n,), prepare=True).fetchone() == (n,)
        with pytest.raises(errors.ConfigurationLimitExceeded):
            conn.execute(query, (3,), prepare=True)
        assert conn.execute("select %s::int", (7,), prepare=True).fetchone() == (7,)


def test_refusal_in_pipeline_rolls_back_its_implicit_transaction_like_a_postgres_error(
        sluice, pg, table):
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=1"}, pool_mode="transaction")
    with pooler.connect() as conn:
        assert one(conn, tagged("select %s::int", ai_user="alice"), (1,)) == 1
        with pytest.raises(errors.ConfigurationLimitExceeded):
            with conn.pipeline():               # one Sync at the end
                conn.execute("INSERT INTO t_ai VALUES (%s)", (1,))
                conn.execute(tagged("select %s::int", ai_user="alice"), (2,))
                conn.execute("INSERT INTO t_ai VALUES (%s)", (3,))
        assert pg.query("SELECT count(*) FROM t_ai") == [(0,)]
        assert one(conn, "select %s::int", (4,)) == 4


# -- attribution without tags --------------------------------------------------------------
def test_set_sluice_user_follows_its_client_under_transaction_pooling_and_never_reaches_server(
        sluice):
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=2"}, pool_mode="transaction",
                            default_pool_size=1)
    with pooler.connect() as a, pooler.connect() as b:
        assert a.execute("SET sluice.user = 'alice'").statusmessage == "SET"
        pid = one(a, "select pg_backend_pid()")            # alice's 1st
        assert one(b, "select pg_backend_pid()") == pid    # one server for both clients
        for _ in range(5):
            assert one(b, "select 'b is not limited'") == "b is not limited"
        assert one(a, "select 'second'") == "second"       # alice's 2nd
        assert one(b, "select 'b again'") == "b again"

        e = refused(a, "select 'third'")                   # untagged, but attributed to alice
        assert_rate_refusal(e, "alice", "requests_per_minute", 2)

        # the SET never reached the server both clients share
        assert one(b, "select current_setting('sluice.user', true)") in (None, "")
        assert one(b, "select 'b still'") == "b still"


def test_reset_sluice_user_ends_attribution_and_unknown_sluice_setting_is_42704(sluice):
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=1"}, pool_mode="transaction")
    with pooler.connect() as conn:
        conn.execute("SET sluice.user = 'alice'")
        assert one(conn, "select 1") == 1
        refused(conn, "select 2")
        assert conn.execute("RESET sluice.user").statusmessage == "RESET"
        for n in range(3):
            assert one(conn, "select %s::int", (n,)) == n
        e = refused(conn, "SET sluice.foo = 'x'", error=errors.UndefinedObject)
        assert e.sqlstate == "42704"
        assert one(conn, "select 'usable'") == "usable"


def test_startup_option_sluice_user_attributes_every_statement(sluice):
    pooler = limited_pooler(sluice, {"bob": "requests_per_minute=1"}, pool_mode="transaction")
    with pooler.connect(options="-c sluice.user=bob") as conn, pooler.connect() as plain:
        assert one(conn, "select 1") == 1
        e = refused(conn, "select 2")
        assert_rate_refusal(e, "bob", "requests_per_minute", 1)
        for n in range(3):
            assert one(plain, "select %s::int", (n,)) == n


@pytest.mark.parametrize("spelling", ['"sluice.user"', 'sluice."user"'])
def test_set_sluice_user_in_quoted_spelling_postgres_accepts_is_kept_by_pgsluice(sluice, spelling):
    # PostgreSQL itself rejects SET sluice.user (USER is a reserved word): these are the
    # spellings an application that also runs against PostgreSQL directly has to use.
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=1"}, pool_mode="transaction",
                            default_pool_size=1)
    with pooler.connect() as a, pooler.connect() as b:
        a.execute(f"SET {spelling} = 'alice'")
        assert one(b, "select current_setting('sluice.user', true)") in (None, "")
        assert one(a, "select 1") == 1
        refused(a, "select 2")


# -- who may tag, and malformed tags ----------------------------------------------------------
def test_role_not_in_tag_trusted_roles_may_not_set_ai_user_but_may_tag_otherwise(sluice):
    pooler = sluice(tag_trusted_roles="trust_user")
    with pooler.connect() as conn:
        e = refused(conn, tagged("select 1", ai_user="alice"), error=errors.InsufficientPrivilege)
        assert e.sqlstate == "42501"
        assert e.diag.message_primary == 'permission denied to set ai_user as role "app"'
        assert one(conn, tagged("select 'model only'", ai_model="gpt-4o")) == "model only"
        assert one(conn, "select 'untagged'") == "untagged"
    with pooler.connect(user="trust_user") as trusted:
        assert one(trusted, tagged("select 'for alice'", ai_user="alice")) == "for alice"


def test_invalid_tag_value_is_22023_naming_the_key_and_connection_stays_usable(sluice):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        e = refused(conn, "select 1 /*ai_tokens_in='ten'*/", error=errors.InvalidParameterValue)
        assert e.sqlstate == "22023"
        assert e.diag.message_primary == 'invalid value for tag "ai_tokens_in": "ten"'
        assert one(conn, "select 'simple'") == "simple"

        e = refused(conn, "select %s::int /*ai_tokens_out='-3'*/", (1,),
                    error=errors.InvalidParameterValue)
        assert e.diag.message_primary == 'invalid value for tag "ai_tokens_out": "-3"'
        assert one(conn, "select %s::int", (2,)) == 2

        # valid values pass, URL-encoded or not
        assert one(conn, tagged("select 'ok'", ai_user="a b/c'd", ai_tokens_in=120,
                                ai_tokens_out=30)) == "ok"


# -- which limit applies --------------------------------------------------------------------
def test_default_limit_applies_to_every_subject(sluice):
    pooler = limited_pooler(sluice, {"default": "requests_per_minute=2"})
    with pooler.connect() as conn:
        for _ in range(2):
            assert one(conn, tagged("select 1", ai_user="zed")) == 1
        e = refused(conn, tagged("select 1", ai_user="zed"))
        assert_rate_refusal(e, "zed", "requests_per_minute", 2)
        assert one(conn, tagged("select 'yan'", ai_user="yan")) == "yan"


def test_subject_model_limit_is_more_specific_than_subject_limit(sluice):
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=100",
                                     "alice/gpt-4o": "requests_per_minute=1"})
    with pooler.connect() as conn, pooler.connect() as by_set:
        assert one(conn, tagged("select 1", ai_user="alice", ai_model="gpt-4o")) == 1
        e = refused(conn, tagged("select 2", ai_user="alice", ai_model="gpt-4o"))
        assert_rate_refusal(e, "alice", "requests_per_minute", 1)
        assert '"gpt-4o"' in e.diag.message_detail
        assert one(conn, tagged("select 3", ai_user="alice", ai_model="other")) == 3
        assert one(conn, tagged("select 4", ai_user="alice")) == 4

        # SET sluice.model selects the model of untagged statements the same way
        by_set.execute("SET sluice.user = 'alice'")
        assert one(by_set, "select 5") == 5
        by_set.execute("SET sluice.model = 'gpt-4o'")
        refused(by_set, "select 6")
        assert one(by_set, tagged("select 7", ai_model="other")) == 7


def test_untagged_statements_without_sluice_user_are_never_limited(sluice):
    pooler = limited_pooler(sluice, {"default": "requests_per_minute=1"}, pool_mode="transaction")
    with pooler.connect() as conn:
        for n in range(5):
            assert one(conn, "select %s::int", (n,)) == n
            assert one(conn, "select 'simple /* a comment, not a tag */'") == \
                "simple /* a comment, not a tag */"
        # the default is in force: an ai_ tag without ai_user is the login role's
        assert one(conn, tagged("select 1", ai_model="gpt-4o")) == 1
        e = refused(conn, tagged("select 2", ai_model="gpt-4o"))
        assert_rate_refusal(e, "app", "requests_per_minute", 1)
        assert one(conn, "select 'still free'") == "still free"


# -- reload -------------------------------------------------------------------------------------
def test_sighup_applies_changed_limits_and_keeps_what_was_counted(sluice):
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=2"})
    statement = tagged("select 1", ai_user="alice")
    with pooler.connect() as conn:
        for _ in range(2):
            assert one(conn, statement) == 1
        refused(conn, statement)

        pooler.limits["alice"] = "requests_per_minute=3"
        pooler.reload()

        def admitted():
            try:
                return one(conn, statement) == 1
            except errors.ConfigurationLimitExceeded:
                return False
        wait_for(admitted, 5, interval=0.1, what="alice admitted after the reload")
        # the two statements counted before the reload still count: 2 + 1 = 3
        e = refused(conn, statement)
        assert_rate_refusal(e, "alice", "requests_per_minute", 3)


def test_show_sluice_user_is_answered_by_pgsluice(sluice):
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=100"}, pool_mode="transaction")
    with pooler.connect() as conn:
        conn.execute('SET "sluice.user" = \'alice\'')
        assert conn.execute('SHOW "sluice.user"').fetchone() == ("alice",)
        conn.execute("RESET sluice.model")
        assert conn.execute("SHOW sluice.model").fetchone() == ("",)


def test_extended_refusal_in_a_transaction_sends_exactly_the_replies_postgres_would(sluice):
    """Parse/Bind/Describe/Execute/Sync refused inside BEGIN: the client gets its
    ParseComplete, BindComplete and RowDescription, then the error in place of the
    Execute's result, then ReadyForQuery 'E' - nothing of what pgsluice injected."""
    import struct
    pooler = limited_pooler(sluice, {"alice": "requests_per_minute=1"}, pool_mode="transaction")
    with pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw") as sess:
        sess.query("BEGIN")
        sql = tagged("select 1", ai_user="alice").encode() + b"\0"
        for attempt in range(2):
            sess.send(b"P", b"\0" + sql + struct.pack("!h", 0))
            sess.send(b"B", b"\0\0" + struct.pack("!hhh", 0, 0, 0))
            sess.send(b"D", b"P\0")
            sess.send(b"E", b"\0" + struct.pack("!i", 0))
            sess.send(b"S")
            types = []
            while True:
                t, body = sess.read()
                types.append(t)
                if t == "Z":
                    break
            status = body.decode()
            if attempt == 0:
                assert types == ["1", "2", "T", "D", "C", "Z"], types
                assert status == "T"
            else:
                assert types == ["1", "2", "T", "E", "Z"], types
                assert status == "E"           # the transaction failed, as PostgreSQL's own error would
