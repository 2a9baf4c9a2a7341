# SPDX-License-Identifier: PostgreSQL
"""Limits, bad input, cancels, server outages and reloads: one client's trouble never
stops the others (bad input gets a clear error, never a crash)."""

import threading
import time

import psycopg
import pytest
from harness import wait_for

import pgwire




def test_client_beyond_max_client_conn_is_53300(sluice):
    pooler = sluice(max_client_conn=3, default_pool_size=3)
    conns = [pooler.connect() for _ in range(3)]
    try:
        err = pgwire.login_error(pooler.host, pooler.port, "app", "app", password="app_pw")
        assert err.sqlstate == "53300", err
        for conn in conns:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        for conn in conns:
            conn.close()

    def newcomer_gets_in():
        try:
            with pooler.connect() as conn:
                return conn.execute("select 1").fetchone() == (1,)
        except psycopg.OperationalError:
            return False
    wait_for(newcomer_gets_in, 5, interval=0.2, what="a new client served after others left")


# PgBouncer-compatible minimum is unknown to the harness; 2048 stays clear of any
# sane lower bound (the config may reject values below 1024) and of the startup
# packet, which is checked against max_packet_size too in PgBouncer.
MAX_PACKET_SIZE = 2048


def test_oversize_packet_is_08P01_and_others_keep_working(sluice):
    pooler = sluice(max_packet_size=MAX_PACKET_SIZE)
    oversize = "select '" + "x" * (MAX_PACKET_SIZE + 1000) + "'"
    with pooler.connect() as bystander:
        assert bystander.execute("select 1").fetchone() == (1,)

        with pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw") as sess:
            with pytest.raises(pgwire.ServerError) as caught:
                sess.query(oversize)
            assert caught.value.sqlstate == "08P01", caught.value
            assert caught.value.severity == "FATAL"
            assert sess.is_closed_by_peer(), "connection left open after an oversize packet"

        # libpq reports a FATAL error followed by a close as a lost connection
        # without its SQLSTATE (PostgreSQL's own FATAL errors look the same), so
        # a psycopg client sees OperationalError carrying the pooler's message.
        conn = pooler.connect()
        try:
            with pytest.raises(psycopg.OperationalError):
                conn.execute(oversize)
        finally:
            conn.close()

        assert bystander.execute("select 2").fetchone() == (2,)
    with pooler.connect() as newcomer:
        assert newcomer.execute("select 3").fetchone() == (3,)


def test_query_just_under_max_packet_size_passes(sluice):
    pooler = sluice(max_packet_size=MAX_PACKET_SIZE)
    with pooler.connect() as conn:
        text = "y" * (MAX_PACKET_SIZE - 200)
        assert conn.execute("select length('" + text + "')").fetchone() == (len(text),)


def test_cancel_stops_running_query_with_57014(sluice):
    pooler = sluice()
    with pooler.connect() as conn:
        canceller = threading.Timer(0.5, conn.cancel)
        started = time.monotonic()
        canceller.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled) as caught:
                conn.execute("select pg_sleep(10)")
        finally:
            canceller.cancel()
        assert caught.value.sqlstate == "57014"
        assert time.monotonic() - started < 2.5
        # The session survives the cancel.
        assert conn.execute("select 1").fetchone() == (1,)


def _first_error(pooler, timeout):
    """Log in and run a query; the ServerError (login or query) or None when it works."""
    try:
        with pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw",
                          timeout=timeout) as sess:
            sess.query("select 1")
    except pgwire.ServerError as err:
        return err
    return None


def test_postgres_restart_is_survived(pg, sluice):
    # PgBouncer's rule: a client waits while the login is retried, up to query_wait_timeout
    pooler = sluice(server_login_retry=1, query_wait_timeout=2)
    with pooler.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)

    pg.stop()
    try:
        started = time.monotonic()
        err = _first_error(pooler, timeout=5)
        elapsed = time.monotonic() - started
        assert err is not None, "query succeeded while PostgreSQL was down"
        assert elapsed < 5
        assert (err.sqlstate, err.message) == ("53300", "query_wait_timeout"), err
    finally:
        pg.start()

    def query_works():
        try:
            with pooler.connect() as conn:
                return conn.execute("select 1").fetchone() == (1,)
        except psycopg.Error:
            return False
    wait_for(query_works, 10, interval=0.25, what="a query after PostgreSQL restarted")


class TransactionHolder(threading.Thread):
    """A client that opens a transaction and keeps it open until released."""

    def __init__(self, pooler):
        super().__init__(daemon=True)
        self.pooler = pooler
        self.served = threading.Event()
        self.release = threading.Event()
        self.error = None

    def run(self):
        try:
            with self.pooler.connect(connect_timeout=20) as conn:
                conn.execute("begin")
                conn.execute("select 1")
                self.served.set()
                self.release.wait(30)
                conn.execute("commit")
        except Exception as exc:  # reported by the test
            self.error = exc
            self.served.set()


def test_reload_raises_default_pool_size_for_waiting_client(pg, sluice):
    wait_for(lambda: pg.pooler_backends() == 0, 5, what="no leftover server connections")
    pooler = sluice(default_pool_size=2, reserve_pool_size=0, min_pool_size=0)
    holders = [TransactionHolder(pooler) for _ in range(3)]
    try:
        for holder in holders[:2]:
            holder.start()
        for holder in holders[:2]:
            assert holder.served.wait(10), "client within default_pool_size not served"
            assert holder.error is None, holder.error
        holders[2].start()
        time.sleep(1.0)
        assert not holders[2].served.is_set(), \
            f"third client served beyond default_pool_size=2 (error: {holders[2].error})"
        assert pg.pooler_backends() <= 2

        pooler.reload(default_pool_size=3)
        assert holders[2].served.wait(8), "waiting client not served after reload"
        assert holders[2].error is None, holders[2].error
        assert pg.pooler_backends() == 3
    finally:
        for holder in holders:
            holder.release.set()
        for holder in holders:
            if holder.ident is not None:
                holder.join(10)
