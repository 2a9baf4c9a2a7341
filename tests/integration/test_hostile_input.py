# SPDX-License-Identifier: PostgreSQL
"""Malformed input from clients gets a clear error instead of silence or a wrong one
(issue 13 item 6; docs/errors.md, docs/ai-middleware.md).

- A sqlcommenter comment that names an ai_ key but cannot be parsed (a raw quote inside
  a value, an unterminated quote, a key without "=") refuses the statement with 22023,
  over the simple and the extended protocol; before, the statement ran unattributed,
  outside its limits. A malformed comment without ai_ keys is still ignored.
- A PasswordMessage longer than 8192 bytes is refused as too long (08P01), not as
  "got message type 112".
"""

import struct

import psycopg
import pytest
from psycopg import errors

import harness
import pgwire

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own")

QUOTE_DETAIL = "A quote inside a quoted value is written \\' or %27."
SHAPE_DETAIL = "A sqlcommenter comment is a list of key='value' items separated by commas."

# (statement, primary message, DETAIL)
MALFORMED = [
    ("select 'o''brien' /*ai_user='o'brien',ai_model='gpt-4o'*/",
     'invalid sqlcommenter comment: unexpected text after the quoted value of key "ai_user"',
     QUOTE_DETAIL),
    ("select 1 /*ai_user='alice*/",
     'invalid sqlcommenter comment: unterminated quoted value of key "ai_user"', QUOTE_DETAIL),
    ("select 1 /*ai_user='alice',ai_model*/",
     'invalid sqlcommenter comment: missing "=" after key "ai_model"', SHAPE_DETAIL),
]


def refused(conn, sql, params=None):
    with pytest.raises(errors.InvalidParameterValue) as info:
        conn.execute(sql, params)
    return info.value


@pytest.mark.parametrize("sql,message,detail", MALFORMED, ids=["raw-quote", "unterminated", "missing-equals"])
def test_malformed_ai_comment_is_refused_over_simple_query(sluice, sql, message, detail):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        e = refused(conn, sql)
        assert e.sqlstate == "22023"
        assert e.diag.message_primary == message
        assert e.diag.message_detail == detail
        # the connection stays usable, and a transaction is failed as by any error
        assert conn.execute("select 'next'").fetchone()[0] == "next"
        with pytest.raises(errors.InFailedSqlTransaction):
            with conn.transaction():
                with pytest.raises(errors.InvalidParameterValue):
                    conn.execute(sql)
                conn.execute("select 1")


@pytest.mark.parametrize("sql,message,detail", MALFORMED, ids=["raw-quote", "unterminated", "missing-equals"])
def test_malformed_ai_comment_is_refused_over_extended_protocol(sluice, sql, message, detail):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        # Parse/Bind/Execute in one batch (psycopg with parameters)
        e = refused(conn, sql.replace("select ", "select %s::int, ", 1), (7,))
        assert (e.sqlstate, e.diag.message_primary, e.diag.message_detail) == ("22023", message, detail)
        assert conn.execute("select %s::int", (8,)).fetchone()[0] == 8
    # a Parse alone (a named statement), refused by the server in order
    with pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw") as sess:
        sess.send(b"P", b"stmt1\0" + sql.encode() + b"\0" + struct.pack("!H", 0))
        sess.send(b"S")
        with pytest.raises(pgwire.ServerError) as info:
            sess.read_until_ready()
        err = info.value
        assert (err.sqlstate, err.message, err.fields.get("detail")) == ("22023", message, detail)
        assert sess.query("select 'after'") == [["after"]]


def test_malformed_comment_without_ai_key_is_ignored(sluice):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as conn:
        assert conn.execute("select 'ran' /*app='it's',route='/x*/").fetchone()[0] == "ran"
        assert conn.execute("select %s::text /*framework*/", ("ran too",)).fetchone()[0] == "ran too"


def test_password_message_over_8192_bytes_is_refused_as_too_long(sluice):
    pooler = sluice(auth_type="plain")
    with pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw") as sess:
        assert sess.query("select 1") == [["1"]]     # a normal password works
    err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="x" * 9000)
    assert err.sqlstate == "08P01"
    assert err.message == "password packet too long"
    assert "8192" in err.fields.get("detail", "")
    # at the limit the password is merely wrong
    err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="x" * 8000)
    assert err.sqlstate == "28P01"
