# SPDX-License-Identifier: PostgreSQL
"""server_fast_close under session pooling (issue 12 item 8, docs/configuration.md).

PgBouncer 1.25: with server_fast_close = 1 a server marked for closing, by
RECONNECT or by a reload that changed its database entry, is closed at the
end of the current transaction instead of when its client leaves; the client
is disconnected too. Without it the session keeps its server.
"""

import psycopg
import pytest

import harness


def console(pooler):
    return psycopg.connect(pooler.dsn(dbname="pgsluice", password="app_pw"), autocommit=True,
                           cursor_factory=psycopg.ClientCursor)


def backend_alive(pg, pid):
    return bool(pg.query("select 1 from pg_stat_activity where pid = %s", (pid,)))


@pytest.mark.parametrize("fast_close", [1, 0])
def test_reconnect_closes_a_session_server_after_its_transaction_with_server_fast_close(sluice, pg, fast_close):
    pooler = sluice(server_fast_close=fast_close)
    with pooler.connect(password="app_pw") as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        with console(pooler) as admin:
            admin.execute("RECONNECT app")
        # the transaction under way (here: the next one) completes
        assert conn.execute("select 1").fetchone() == (1,)
        if fast_close:
            harness.wait_for(lambda: not backend_alive(pg, pid), 10, what="the old server closed")
            with pytest.raises(psycopg.OperationalError):
                conn.execute("select 1")
        else:
            assert conn.execute("select pg_backend_pid()").fetchone()[0] == pid
    if not fast_close:
        # without it the server is closed when the client leaves
        harness.wait_for(lambda: not backend_alive(pg, pid), 10, what="the old server closed at session end")
