# SPDX-License-Identifier: PostgreSQL
"""Peering: [peers] and peer_id (issue 12 item 4, docs/migrating-from-pgbouncer.md).

Two processes share a TCP port with so_reuseport; a CancelRequest travels on
a connection of its own, so the kernel may hand it to the process that does
not have the query. With `peer_id` and `[peers]` (PgBouncer's), the key
pgsluice gives a client names its process, and the other one passes the
request on: the query is cancelled either way.
"""

import socket
import struct

import pgwire
from harness import wait_for

CANCEL_REQUEST_CODE = 80877102


def peered_pair(sluice):
    """Two poolers on one TCP port, peer ids 1 and 2, each with its own unix socket dir."""
    first = sluice(start=False, so_reuseport=1, peer_id=1)
    second = sluice(start=False, so_reuseport=1, peer_id=2)
    second.port = first.port
    peers = f"\n[peers]\n1 = host={first.workdir} port={first.port}\n2 = host={second.workdir} port={first.port}\n"
    first.extra_ini = second.extra_ini = peers
    first.start()
    second.start()     # returns at once: the shared TCP port already accepts (first's)
    wait_for(lambda: second.logfile.exists() and " started, process " in second.logfile.read_text(), 10,
             what="the second process listening")
    return first, second


def send_cancel(pooler, pid, key):
    """A CancelRequest over pooler's own unix socket (so it reaches that process, not its peer)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(f"{pooler.workdir}/.s.PGSQL.{pooler.port}")
        sock.sendall(struct.pack("!IIII", 16, CANCEL_REQUEST_CODE, pid & 0xffffffff, key & 0xffffffff))
        try:
            sock.recv(1)          # the pooler closes it, as PostgreSQL does
        except OSError:
            pass


def peer_of(pid):
    """The peer id in the 2nd and 3rd byte of the key, low byte first (PgBouncer's layout)."""
    return ((pid >> 16) & 0xff) | (((pid >> 8) & 0x3f) << 8)


def test_a_cancel_sent_to_the_other_process_cancels_the_query(sluice):
    first, second = peered_pair(sluice)
    with pgwire.login(str(first.workdir), first.port, "app", "app", password="app_pw", timeout=20) as sess:
        pid, key = sess.backend_key
        assert peer_of(pid) == 1 and key & 3 == 3
        sess.send(b"Q", b"select pg_sleep(15)\0")
        wait_for(lambda: "pg_sleep" in str(first.pg.query(
            "select query from pg_stat_activity where state = 'active'")), 10, what="the query running")
        send_cancel(second, pid, key)
        sess.timeout = 10
        try:
            sess.read_until_ready()
            raise AssertionError("pg_sleep(15) was not cancelled")
        except pgwire.ServerError as err:
            assert (err.sqlstate, err.message) == ("57014", "canceling statement due to user request")
        assert sess.query("select 1") == [["1"]]      # the session goes on
    with second.connect(dbname="pgsluice", host=str(second.workdir)) as admin:
        import psycopg
        rows = psycopg.ClientCursor(admin).execute("SHOW PEERS").fetchall()
    # every entry, the process's own included (PgBouncer's test_peering_default_port)
    assert sorted(rows) == [(1, str(first.workdir), first.port, 20), (2, str(second.workdir), first.port, 20)]


def test_a_cancel_sent_to_its_own_process_still_works_with_peering(sluice):
    first, _second = peered_pair(sluice)
    with pgwire.login(str(first.workdir), first.port, "app", "app", password="app_pw", timeout=20) as sess:
        pid, key = sess.backend_key
        sess.send(b"Q", b"select pg_sleep(15)\0")
        wait_for(lambda: "pg_sleep" in str(first.pg.query(
            "select query from pg_stat_activity where state = 'active'")), 10, what="the query running")
        send_cancel(first, pid, key)
        sess.timeout = 10
        try:
            sess.read_until_ready()
            raise AssertionError("pg_sleep(15) was not cancelled")
        except pgwire.ServerError as err:
            assert err.sqlstate == "57014"


def test_a_loop_in_peers_ends_after_three_forwards(sluice):
    # peer 1 is (wrongly) this very process: each pass spends one forward
    looped = sluice(start=False, peer_id=2)
    looped.extra_ini = f"\n[peers]\n1 = host={looped.workdir} port={looped.port}\n"
    looped.start()
    send_cancel(looped, 1 << 16, 0b11)
    wait_for(lambda: "was forwarded too often" in looped.logfile.read_text(), 10,
             what="the forward budget to run out")
    with looped.connect() as conn:                     # still serving
        assert conn.execute("select 1").fetchone() == (1,)
