# SPDX-License-Identifier: PostgreSQL
"""Admin console parity with PgBouncer 1.25 (issue 12 item 6, docs/admin.md).

A monitoring script written for PgBouncer runs every SHOW its doc/usage.md
lists and reads the columns by name and type. These tests hold pgsluice to
PgBouncer's names, order and types (int4 where PgBouncer sends int4,
numeric for the SHOW STATS counters, text elsewhere) for every SHOW, and to
what the new ones show: SHOW TOTALS sums SHOW STATS, SHOW SOCKETS lists the
console, clients and servers with one id counter, SHOW FDS lists the
listening, client and server descriptors to admin_users only.
"""

import psycopg
import pytest

import pgwire

T, I4, I8, N, B = 25, 23, 20, 1700, 17

SOCKET = [("type", T), ("user", T), ("database", T), ("replication", T), ("state", T),
          ("addr", T), ("port", I4), ("local_addr", T), ("local_port", I4),
          ("connect_time", T), ("request_time", T), ("wait", I4), ("wait_us", I4),
          ("close_needed", I4), ("ptr", T), ("link", T), ("remote_pid", I4), ("tls", T),
          ("application_name", T), ("prepared_statements", I4), ("id", I4)]
SOCKET_DEBUG = SOCKET + [(name, I4) for name in ("recv_pos", "pkt_pos", "pkt_remain", "send_pos",
                                                 "send_remain", "pkt_avail", "send_avail")]
STATS = ["server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
         "xact_time", "query_time", "wait_time", "client_parse_count", "server_parse_count",
         "bind_count"]
TOTAL = ["total_server_assignment_count", "total_xact_count", "total_query_count",
         "total_received", "total_sent", "total_xact_time", "total_query_time", "total_wait_time",
         "total_client_parse_count", "total_server_parse_count", "total_bind_count"]
AVG = ["avg_server_assignment_count", "avg_xact_count", "avg_query_count", "avg_recv", "avg_sent",
       "avg_xact_time", "avg_query_time", "avg_wait_time", "avg_client_parse_count",
       "avg_server_parse_count", "avg_bind_count"]

# PgBouncer 1.25's columns and types (its src/admin.c and src/stats.c RowDescriptions).
PGBOUNCER_COLUMNS = {
    "POOLS": [("database", T), ("user", T)] + [(n, I4) for n in (
        "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active",
        "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
        "maxwait", "maxwait_us")] + [("pool_mode", T), ("load_balance_hosts", T)],
    "CLIENTS": SOCKET,
    "SERVERS": SOCKET,
    "SOCKETS": SOCKET_DEBUG,
    "ACTIVE_SOCKETS": SOCKET_DEBUG,
    "DATABASES": [("name", T), ("host", T), ("port", I4), ("database", T), ("force_user", T),
                  ("pool_size", I4), ("min_pool_size", I4), ("reserve_pool_size", I4),
                  ("server_lifetime", I4), ("pool_mode", T), ("load_balance_hosts", T),
                  ("max_connections", I4), ("current_connections", I4),
                  ("max_client_connections", I4), ("current_client_connections", I4),
                  ("paused", I4), ("disabled", I4)],
    "USERS": [("name", T), ("pool_size", T), ("reserve_pool_size", T), ("pool_mode", T),
              ("max_user_connections", I4), ("current_connections", I4),
              ("max_user_client_connections", I4), ("current_client_connections", I4)],
    "STATS": [("database", T)] + [(n, N) for n in TOTAL + AVG],
    "STATS_TOTALS": [("database", T)] + [(n, N) for n in STATS],
    "STATS_AVERAGES": [("database", T)] + [(n, N) for n in STATS[:8]]
                      + [("avg_" + n, N) for n in STATS[8:]],
    "TOTALS": [("name", T), ("value", N)],
    "LISTS": [("list", T), ("items", I4)],
    "MEM": [("name", T), ("size", I4), ("used", I4), ("free", I4), ("memtotal", I4)],
    "CONFIG": [("key", T), ("value", T), ("default", T), ("changeable", T)],
    "VERSION": [("version", T)],
    "STATE": [("key", T), ("value", T)],
    "FDS": [("fd", I4), ("task", T), ("user", T), ("database", T), ("addr", T), ("port", I4),
            ("cancel", I8), ("link", I4), ("client_encoding", T), ("std_strings", T),
            ("datestyle", T), ("timezone", T), ("password", T), ("scram_client_key", B),
            ("scram_server_key", B)],
    "DNS_HOSTS": [("hostname", T), ("ttl", I8), ("addrs", T)],
    "DNS_ZONES": [("zonename", T), ("serial", I8), ("count", I4)],
    "PEERS": [("peer_id", I4), ("host", T), ("port", I4), ("pool_size", I4)],
    "PEER_POOLS": [("peer_id", I4), ("cl_active_cancel_req", I4), ("cl_waiting_cancel_req", I4),
                   ("sv_active_cancel", I4), ("sv_login", I4)],
}


def console(pooler, user="app", dbname="pgbouncer"):
    return psycopg.connect(pooler.dsn(user=user, dbname=dbname), autocommit=True,
                           cursor_factory=psycopg.ClientCursor)


def show(conn, what):
    cur = conn.execute(f"SHOW {what}")
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


@pytest.mark.parametrize("what", sorted(PGBOUNCER_COLUMNS))
def test_every_show_has_pgbouncers_columns_and_types(sluice, what):
    pooler = sluice()
    with pooler.connect() as client, console(pooler) as conn:
        client.execute("select 1")           # so that pools, clients and servers exist
        cur = conn.execute(f"SHOW {what}")
        assert [(d.name, d.type_code) for d in cur.description] == PGBOUNCER_COLUMNS[what]
        cur.fetchall()


def test_show_totals_sums_show_stats_over_the_databases(sluice):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as a, pooler.connect(dbname="scramdb") as b:
        for _ in range(3):
            a.execute("select 1")
        with b.transaction():
            b.execute("select 1")
            b.execute("select 2")
    with console(pooler) as conn:
        stats = {r["database"]: r for r in show(conn, "STATS")}
        totals = {name: value for name, value in conn.execute("SHOW TOTALS").fetchall()}
    assert stats["app"]["total_query_count"] == 3 and stats["scramdb"]["total_query_count"] == 4
    assert totals["total_query_count"] == 7
    assert totals["total_xact_count"] == stats["app"]["total_xact_count"] + \
        stats["scramdb"]["total_xact_count"] == 4
    assert totals["total_client_bytes"] == sum(s["total_received"] for s in stats.values()) > 0
    assert totals["total_server_bytes"] == sum(s["total_sent"] for s in stats.values()) > 0
    assert list(totals) == [f"{kind}_{name}" for kind in ("total", "avg") for name in (
        "server_assignment_count", "xact_count", "query_count", "client_bytes", "server_bytes",
        "xact_time", "query_time", "wait_time", "ps_client_parse_count", "ps_server_parse_count",
        "ps_bind_count")]


def test_show_sockets_lists_console_client_and_server_with_one_id_counter(sluice):
    """As PgBouncer's test_socket_id: a new session client and its server take the next two ids."""
    pooler = sluice()
    with console(pooler) as conn:
        [me] = show(conn, "SOCKETS")
        last = me["id"]
        for _ in range(2):
            with pooler.connect() as client:
                client.execute("select 1")
                rows = show(conn, "SOCKETS")
                states = sorted((r["type"], r["state"]) for r in rows)
                assert states == [("C", "cl_active"), ("C", "cl_active"), ("S", "sv_active")]
                assert all(r["recv_pos"] == 0 and r["send_avail"] == 0 for r in rows)
                [client_id] = [r["id"] for r in rows if r["type"] == "C" and r["id"] != me["id"]]
                [server] = show(conn, "SERVERS")
                # one counter: the server's id follows its client's, and both follow the last ones
                assert client_id > last and server["id"] == client_id + 1
                last = server["id"]
            # the pool closes the session's server with the client (server_lifetime aside)
            conn.execute("RECONNECT")


def test_show_active_sockets_lists_only_linked_and_waiting_connections(sluice):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as idle, pooler.connect() as busy, console(pooler) as conn:
        idle.execute("select 1")
        busy.execute("begin")
        busy.execute("select 1")
        rows = show(conn, "ACTIVE_SOCKETS")
        assert sorted((r["type"], r["state"]) for r in rows) == [("C", "cl_active"), ("S", "sv_active")]
        client_row = next(r for r in rows if r["type"] == "C")
        server_row = next(r for r in rows if r["type"] == "S")
        assert client_row["link"] == server_row["ptr"] and server_row["link"] == client_row["ptr"]
        busy.execute("commit")
        assert show(conn, "ACTIVE_SOCKETS") == []
        assert len(show(conn, "SOCKETS")) == 4     # both clients, the server, the console


def test_show_fds_lists_listeners_clients_and_servers_to_admin_users_only(sluice):
    pooler = sluice(stats_users="pw_user")
    with pooler.connect() as client, console(pooler) as conn:
        client.execute("select 1")
        rows = show(conn, "FDS")
        pooler_rows = [r for r in rows if r["task"] == "pooler"]
        assert {(r["addr"], r["port"]) for r in pooler_rows} == {("127.0.0.1", pooler.port),
                                                                  ("unix", 0)}
        [server] = [r for r in rows if r["task"] == "server"]
        clients = [r for r in rows if r["task"] == "client"]
        [linked] = [r for r in clients if r["link"] == server["fd"]]
        assert server["link"] == linked["fd"] and linked["database"] == "app"
        assert linked["client_encoding"] == "UTF8" and linked["password"] is None
        assert server["cancel"] != 0 and server["user"] == "app"
    with console(pooler, user="pw_user") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="SHOW FDS"):
            conn.execute("SHOW FDS")
        assert conn.execute("SHOW SOCKETS").fetchall()   # the other SHOWs stay open to stats_users


def test_dns_and_peer_shows_answer_empty_result_sets(sluice):
    pooler = sluice()
    with console(pooler) as conn:
        for what in ("DNS_HOSTS", "DNS_ZONES", "PEERS", "PEER_POOLS"):
            assert conn.execute(f"SHOW {what}").fetchall() == []


def test_show_users_sends_pool_sizes_as_pgbouncer_text(sluice):
    """PgBouncer's test_show_user: pool_size is right-aligned text, "" when not set."""
    pooler = sluice(extra_ini="\n[users]\ntest1 = pool_size=1 reserve_pool_size=1\ntest2 = pool_mode=session\n")
    with console(pooler) as conn:
        users = {r["name"]: r for r in show(conn, "USERS")}
    assert [users[u]["pool_size"].strip() for u in ("test1", "test2")] == ["1", ""]
    assert [users[u]["reserve_pool_size"].strip() for u in ("test1", "test2")] == ["1", ""]


def test_show_help_lists_the_new_commands(sluice):
    pooler = sluice()
    with pgwire.login(pooler.host, pooler.port, "app", "pgbouncer", password="app_pw") as sess:
        sess.query("SHOW HELP")
        text = sess.notices[-1]["detail"]
    for word in ("FDS", "SOCKETS", "ACTIVE_SOCKETS", "DNS_HOSTS", "DNS_ZONES", "PEERS", "PEER_POOLS",
                 "TOTALS"):
        assert word in text
