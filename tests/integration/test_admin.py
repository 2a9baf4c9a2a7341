# SPDX-License-Identifier: PostgreSQL
"""The admin console and /metrics (docs/admin.md).

An operator coming from PgBouncer connects to the virtual database
`pgsluice` (or `pgbouncer`) and finds PgBouncer's SHOW commands with
PgBouncer's column names, and its control commands (PAUSE, RESUME, KILL,
RECONNECT, WAIT_CLOSE, RELOAD, SET, SHUTDOWN); Prometheus scrapes
/metrics without an exporter. What these tests hold pgsluice to:

- every SHOW answers with the documented columns, in order;
- admin_users may run everything, stats_users only SHOW (others 42501 at
  login), unknown commands are syntax errors (42601), and the console speaks
  the simple query protocol only (08P01 for the extended one);
- PAUSE holds new transactions until RESUME, KILL drops a database's
  connections, RELOAD and SET change the running configuration;
- /metrics is valid Prometheus text whose counters move with traffic.

Console sessions use psycopg.ClientCursor, so that every query goes with the
simple protocol (psycopg uses the extended one for parameters and prepared
statements), as PgBouncer's console requires too.
"""

import math
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import psycopg
import pytest
from harness import wait_for

import harness
import pgwire

APP_PASSWORD = "app_pw"

# The columns of each SHOW, in order (PgBouncer's names where the concept is the same).
SOCKET_COLUMNS = ["type", "user", "database", "replication", "state", "addr", "port",
                  "local_addr", "local_port", "connect_time", "request_time", "wait", "wait_us",
                  "close_needed", "ptr", "link", "remote_pid", "tls", "application_name",
                  "prepared_statements", "id"]
STATS_FIELDS = ["server_assignment_count", "xact_count", "query_count", "bytes_received",
                "bytes_sent", "xact_time", "query_time", "wait_time", "client_parse_count",
                "server_parse_count", "bind_count"]
TOTAL_NAMES = ["total_server_assignment_count", "total_xact_count", "total_query_count",
               "total_received", "total_sent", "total_xact_time", "total_query_time",
               "total_wait_time", "total_client_parse_count", "total_server_parse_count",
               "total_bind_count"]
AVG_NAMES = ["avg_server_assignment_count", "avg_xact_count", "avg_query_count", "avg_recv",
             "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time",
             "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count"]
SHOW_COLUMNS = {
    "POOLS": ["database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req",
              "cl_waiting_cancel_req", "sv_active", "sv_active_cancel", "sv_being_canceled",
              "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode",
              "load_balance_hosts"],
    "CLIENTS": SOCKET_COLUMNS,
    "SERVERS": SOCKET_COLUMNS,
    "STATS": ["database"] + TOTAL_NAMES + AVG_NAMES,
    "STATS_TOTALS": ["database"] + STATS_FIELDS,
    # PgBouncer keeps avg_ on the last three columns of SHOW STATS_AVERAGES
    "STATS_AVERAGES": ["database"] + STATS_FIELDS[:8] + ["avg_" + f for f in STATS_FIELDS[8:]],
    "DATABASES": ["name", "host", "port", "database", "force_user", "pool_size", "min_pool_size",
                  "reserve_pool_size", "server_lifetime", "pool_mode", "load_balance_hosts",
                  "max_connections", "current_connections", "max_client_connections",
                  "current_client_connections", "paused", "disabled"],
    "USERS": ["name", "pool_size", "reserve_pool_size", "pool_mode", "max_user_connections",
              "current_connections", "max_user_client_connections", "current_client_connections"],
    "CONFIG": ["key", "value", "default", "changeable"],
    "LISTS": ["list", "items"],
    "MEM": ["name", "size", "used", "free", "memtotal"],
    "VERSION": ["version"],
    "STATE": ["key", "value"],
    "LIMITS": ["subject", "model", "limit_name", "limit_value", "used", "remaining", "reset_at"],
    "USAGE": ["subject", "model", "requests", "refusals", "input_tokens", "output_tokens",
              "cost_cents", "rejected"],
    "CACHE": ["entries", "bytes", "hits", "misses", "evictions", "hit_rate"],
}


# -- helpers -------------------------------------------------------------------------
def console(pooler, user="app", dbname="pgsluice", password=None):
    """A console session: autocommit, simple query protocol (ClientCursor)."""
    return psycopg.connect(pooler.dsn(user=user, dbname=dbname, password=password),
                           autocommit=True, cursor_factory=psycopg.ClientCursor)


def show(conn, what):
    """Rows of SHOW what as dicts keyed by column name."""
    cur = conn.execute(f"SHOW {what}")
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def pool_row(conn, database="app", user="app"):
    rows = [r for r in show(conn, "POOLS") if r["database"] == database and r["user"] == user]
    assert len(rows) == 1, rows
    return rows[0]




class Background(threading.Thread):
    """Runs fn in a thread; .result / .error once done."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn = fn
        self.result = None
        self.error = None
        self.done = threading.Event()
        self.start()

    def run(self):
        try:
            self.result = self.fn()
        except BaseException as exc:   # reported by the test
            self.error = exc
        finally:
            self.done.set()

    def finished(self, timeout):
        return self.done.wait(timeout)


def no_leftover_backends(pg):
    wait_for(lambda: pg.pooler_backends() == 0, 10, interval=0.1,
             what="no leftover server connections of role app")


# -- Prometheus text format ------------------------------------------------------------
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"\s*(,|$)')


def parse_prometheus(text):
    """Parse text exposition format 0.0.4 strictly enough to catch mistakes.

    Returns {family: {"type": ..., "samples": {(name, frozenset(labels)): value}}}.
    Fails on a malformed line, a sample before its family's TYPE, a sample whose
    name does not belong to the family, a duplicate sample, a counter not ending in
    _total, or a histogram whose buckets are not cumulative.
    """
    families = {}
    current = None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                assert METRIC_NAME.match(parts[2]), f"line {n}: bad metric name {parts[2]!r}"
                fam = families.setdefault(parts[2], {"type": "untyped", "samples": {}})
                if parts[1] == "TYPE":
                    assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
                    assert not fam["samples"], f"line {n}: TYPE after samples"
                    fam["type"] = parts[3]
                current = parts[2]
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$", line)
        assert m, f"line {n}: malformed sample {line!r}"
        name, label_text, value = m.group(1), m.group(3) or "", m.group(4)
        labels = {}
        pos = 0
        while pos < len(label_text):
            lm = LABEL.match(label_text, pos)
            assert lm, f"line {n}: malformed labels {label_text!r}"
            assert lm.group(1) not in labels, f"line {n}: label {lm.group(1)} twice"
            labels[lm.group(1)] = lm.group(2)
            pos = lm.end()
        number = float(value)   # raises on garbage; +Inf/NaN are valid
        assert current is not None, f"line {n}: sample before any TYPE"
        fam = families[current]
        base = current
        suffixes = {"histogram": ("_bucket", "_sum", "_count"),
                    "summary": ("_sum", "_count", "")}.get(fam["type"], ("",))
        assert any(name == base + s for s in suffixes), \
            f"line {n}: sample {name} outside its family {base}"
        key = (name, frozenset(labels.items()))
        assert key not in fam["samples"], f"line {n}: duplicate sample {line!r}"
        fam["samples"][key] = number
    for name, fam in families.items():
        if fam["type"] == "counter":
            assert name.endswith("_total"), f"counter {name} does not end in _total"
            assert all(v >= 0 for v in fam["samples"].values()), name
        if fam["type"] == "histogram":
            series = {}
            for (sample, labels), value in fam["samples"].items():
                if sample.endswith("_bucket"):
                    rest = frozenset((k, v) for k, v in labels if k != "le")
                    le = dict(labels)["le"]
                    series.setdefault(rest, []).append((math.inf if le == "+Inf" else float(le), value))
            for rest, buckets in series.items():
                buckets.sort()
                values = [v for _, v in buckets]
                assert values == sorted(values), f"{name}: buckets not cumulative"
                assert buckets[-1][0] == math.inf, f"{name}: no +Inf bucket"
                count = fam["samples"][(name + "_count", rest)]
                assert count == values[-1], f"{name}: _count differs from the +Inf bucket"
    return families


def scrape(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse_prometheus(resp.read().decode())


def value(families, family, sample=None, **labels):
    samples = families[family]["samples"]
    return samples[(sample or family, frozenset(labels.items()))]


# -- SHOW --------------------------------------------------------------------------------
@pytest.mark.parametrize("what", sorted(SHOW_COLUMNS))
def test_each_show_returns_the_documented_columns(sluice, what):
    pooler = sluice()
    with pooler.connect() as client:          # so that pools, clients and servers exist
        client.execute("select 1")
        with console(pooler) as conn:
            cur = conn.execute(f"SHOW {what}")
            assert [d.name for d in cur.description] == SHOW_COLUMNS[what]
            cur.fetchall()


def test_pgbouncer_is_an_alias_of_the_console_and_psql_works(pg, sluice):
    pooler = sluice()
    out = subprocess.run([str(pg.bindir / "psql"), "-X",
                          pooler.dsn(dbname="pgbouncer"), "-Atc", "SHOW VERSION"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("pgsluice ")


def test_show_help_sends_the_command_list_as_a_notice(sluice):
    pooler = sluice()
    with pgwire.login(pooler.host, pooler.port, "app", "pgsluice", password=APP_PASSWORD) as sess:
        sess.query("SHOW HELP")
        assert sess.notices and "PAUSE" in sess.notices[-1]["detail"]
        assert sess.notices[-1]["message"] == "Console usage"


def test_show_config_prints_values_defaults_and_whether_changeable(sluice):
    pooler = sluice(default_pool_size=7)
    with console(pooler) as conn:
        config = {r["key"]: r for r in show(conn, "CONFIG")}
    assert config["default_pool_size"] == {"key": "default_pool_size", "value": "7",
                                           "default": "20", "changeable": "yes"}
    assert config["listen_port"]["value"] == str(pooler.port)
    assert config["listen_port"]["changeable"] == "no"
    assert config["metrics_listen_addr"]["value"] == ""
    assert config["metrics_listen_port"]["default"] == "9127"


def test_show_pools_clients_and_servers_describe_a_linked_session(sluice):
    pooler = sluice(pool_mode="session")
    with pooler.connect(application_name="reporter") as client, console(pooler) as conn:
        backend_pid = client.execute("select pg_backend_pid()").fetchone()[0]
        pool = pool_row(conn)
        assert (pool["cl_active"], pool["cl_waiting"], pool["sv_active"], pool["sv_login"]) == (1, 0, 1, 0)
        assert pool["pool_mode"] == "session" and pool["maxwait"] == 0
        clients = [r for r in show(conn, "CLIENTS") if r["database"] == "app"]
        servers = show(conn, "SERVERS")
        assert len(clients) == 1 and len(servers) == 1
        c, s = clients[0], servers[0]
        assert (c["type"], c["user"], c["state"], c["application_name"]) == ("C", "app", "active", "reporter")
        assert (s["type"], s["user"], s["database"], s["state"]) == ("S", "app", "app", "active")
        assert c["link"] == s["ptr"] and s["link"] == c["ptr"]
        assert s["remote_pid"] == backend_pid
        assert s["port"] == pooler.pg.port and s["addr"] == "127.0.0.1"
        assert c["addr"] == "127.0.0.1" and c["local_port"] == pooler.port
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", c["connect_time"])
        # the console session itself is listed, on its own database
        assert [r["database"] for r in show(conn, "CLIENTS") if r["database"] != "app"] == ["pgsluice"]


def test_show_databases_users_lists_state_and_mem_describe_the_config(sluice):
    pooler = sluice(max_db_connections=9, databases={"small": "host=127.0.0.1 port=5432 pool_size=3"})
    with pooler.connect() as client, console(pooler) as conn:
        client.execute("select 1")
        dbs = {r["name"]: r for r in show(conn, "DATABASES")}
        assert dbs["small"]["pool_size"] == 3 and dbs["app"]["pool_size"] == 20
        assert dbs["scramdb"]["force_user"] == "app" and dbs["app"]["force_user"] is None
        assert dbs["app"]["max_connections"] == 9 and dbs["app"]["current_connections"] == 1
        assert dbs["app"]["current_client_connections"] == 1 and dbs["app"]["paused"] == 0
        users = {r["name"]: r for r in show(conn, "USERS")}
        assert users["app"]["current_connections"] == 1 and users["app"]["current_client_connections"] == 1
        lists = {r["list"]: r["items"] for r in show(conn, "LISTS")}
        assert lists["pools"] == 1 and lists["used_servers"] == 1 and lists["used_clients"] == 2
        assert lists["databases"] == len(pooler.database_entries())
        assert {r["key"]: r["value"] for r in show(conn, "STATE")} == \
            {"active": "yes", "paused": "no", "suspended": "no"}
        mem = {r["name"]: r for r in show(conn, "MEM")}
        assert mem["client"]["used"] == 2 and mem["client"]["memtotal"] == 2 * mem["client"]["size"]


def test_show_stats_counts_queries_transactions_and_bytes_per_database(sluice):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as client:
        for _ in range(5):
            client.execute("select 1")
        with client.transaction():
            client.execute("select 2")
            client.execute("select 3")
    with console(pooler) as conn:
        stats = {r["database"]: r for r in show(conn, "STATS")}["app"]
        totals = {r["database"]: r for r in show(conn, "STATS_TOTALS")}["app"]
    # psycopg: 5 autocommit statements, then BEGIN, 2 statements, COMMIT
    assert stats["total_query_count"] == 9
    assert stats["total_xact_count"] == 6
    assert stats["total_server_assignment_count"] >= 6
    assert stats["total_received"] > 0 and stats["total_sent"] > 0
    assert stats["total_xact_time"] > 0 and stats["total_query_time"] > 0
    assert totals["query_count"] == 9 and totals["bytes_sent"] == stats["total_sent"]


# -- access --------------------------------------------------------------------------
def test_user_in_neither_admin_nor_stats_users_is_refused_at_login_with_42501(sluice):
    pooler = sluice(admin_users="app", stats_users="md5_user")
    err = pgwire.login_error(pooler.host, pooler.port, "pw_user", "pgsluice", password="pw_pw")
    assert err.sqlstate == "42501" and err.severity == "FATAL"
    assert "admin console" in err.message


def test_wrong_password_for_the_console_fails_authentication(sluice):
    pooler = sluice()
    err = pgwire.login_error(pooler.host, pooler.port, "app", "pgsluice", password="wrong")
    assert err.sqlstate == "28P01"


def test_stats_user_may_show_but_control_commands_get_42501(sluice):
    pooler = sluice(admin_users="app", stats_users="md5_user")
    with console(pooler, user="md5_user") as conn:
        assert show(conn, "VERSION")
        for command in ("PAUSE", "RESUME", "KILL app", "RELOAD", "SET default_pool_size = 5", "SHUTDOWN"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as exc:
                conn.execute(command)
            assert "permission denied" in str(exc.value)
        assert show(conn, "STATE")[0]["value"] == "yes"    # still active: nothing was paused


def test_with_auth_type_any_every_user_may_show_but_only_admin_users_control(sluice):
    pooler = sluice(auth_type="any", admin_users="app")
    with console(pooler, user="pw_user", password="") as conn:
        assert show(conn, "VERSION")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("PAUSE")
    with console(pooler, user="app", password="") as conn:
        conn.execute("PAUSE")
        conn.execute("RESUME")


def test_unknown_command_is_a_syntax_error_naming_it(sluice):
    pooler = sluice()
    with console(pooler) as conn:
        with pytest.raises(psycopg.errors.SyntaxError) as exc:
            conn.execute("FROBNICATE app")
        assert '"FROBNICATE"' in str(exc.value)
        with pytest.raises(psycopg.errors.SyntaxError) as exc:
            conn.execute("SHOW nonsense")
        assert '"nonsense"' in str(exc.value)
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("SHOW POOLS; SHOW STATS")
        assert show(conn, "VERSION")      # the session goes on


def test_extended_protocol_gets_08p01_and_the_session_goes_on(sluice):
    pooler = sluice()
    with psycopg.connect(pooler.dsn(dbname="pgsluice"), autocommit=True) as conn:   # default cursor
        with pytest.raises(psycopg.errors.ProtocolViolation) as exc:
            conn.execute("SHOW POOLS", prepare=True)    # Parse, Bind, Execute, Sync
        assert "simple query protocol" in str(exc.value)
        cur = psycopg.ClientCursor(conn)
        cur.execute("SHOW VERSION")
        assert cur.fetchone()[0].startswith("pgsluice")


# -- control ---------------------------------------------------------------------------
def test_pause_holds_new_transactions_and_resume_releases_them(pg, sluice):
    no_leftover_backends(pg)
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as client, console(pooler) as conn:
        client.execute("select 1")
        conn.execute("PAUSE")           # returns once the idle server is closed
        assert pool_row(conn)["sv_idle"] == 0
        assert {r["key"]: r["value"] for r in show(conn, "STATE")}["paused"] == "yes"
        wait_for(lambda: pg.pooler_backends() == 0, 5, what="servers closed by PAUSE")
        held = Background(lambda: client.execute("select 42").fetchone()[0])
        assert not held.finished(1.0), "a transaction ran while paused"
        assert pool_row(conn)["cl_waiting"] == 1
        conn.execute("RESUME")
        assert held.finished(5) and held.error is None and held.result == 42


def test_pause_waits_for_a_transaction_in_progress(sluice):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect(autocommit=False) as client, console(pooler) as conn:
        client.execute("select 1")      # a transaction is open, holding its server
        pause = Background(lambda: conn.execute("PAUSE"))
        assert not pause.finished(1.0), "PAUSE returned while a server was in use"
        client.commit()
        assert pause.finished(5) and pause.error is None
        conn.execute("RESUME")


def test_pause_of_one_database_leaves_the_others_running(sluice):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect(dbname="app") as app, pooler.connect(dbname="scramdb") as other, \
            console(pooler) as conn:
        conn.execute("PAUSE app")
        assert other.execute("select 1").fetchone()[0] == 1
        held = Background(lambda: app.execute("select 2").fetchone()[0])
        assert not held.finished(1.0)
        dbs = {r["name"]: r["paused"] for r in show(conn, "DATABASES")}
        assert dbs["app"] == 1 and dbs["scramdb"] == 0
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            conn.execute("RESUME scramdb")
        conn.execute("RESUME app")
        assert held.finished(5) and held.result == 2


def test_sigusr1_pauses_and_sigusr2_resumes(sluice):
    pooler = sluice(pool_mode="transaction")
    with pooler.connect() as client, console(pooler) as conn:
        client.execute("select 1")
        pooler.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: {r["key"]: r["value"] for r in show(conn, "STATE")}["paused"] == "yes", 5,
                 what="paused by SIGUSR1")
        held = Background(lambda: client.execute("select 7").fetchone()[0])
        assert not held.finished(1.0)
        pooler.proc.send_signal(signal.SIGUSR2)
        assert held.finished(5) and held.result == 7


def test_reload_applies_a_changed_pool_size(pg, sluice):
    no_leftover_backends(pg)
    pooler = sluice(pool_mode="transaction", databases={"app": f"host=127.0.0.1 port={pg.port} dbname=app pool_size=1"})
    with pooler.connect(autocommit=False) as a, pooler.connect(autocommit=False) as b, \
            console(pooler) as conn:
        a.execute("select 1")                       # holds the only server
        blocked = Background(lambda: b.execute("select 2").fetchone()[0])
        assert not blocked.finished(1.0), "a second server was opened with pool_size=1"
        pooler.databases["app"] = f"host=127.0.0.1 port={pg.port} dbname=app pool_size=2"
        pooler.write_config()
        conn.execute("RELOAD")
        assert blocked.finished(5) and blocked.result == 2
        assert {r["name"]: r for r in show(conn, "DATABASES")}["app"]["pool_size"] == 2
        assert pg.pooler_backends() == 2
        a.rollback()
        b.rollback()


def test_kill_drops_a_databases_connections_until_resume(pg, sluice):
    no_leftover_backends(pg)
    pooler = sluice(pool_mode="session")
    with pooler.connect() as a, pooler.connect() as b, pooler.connect(dbname="scramdb") as other, \
            console(pooler) as conn:
        for c in (a, b, other):
            c.execute("select 1")
        assert pg.pooler_backends() == 3
        conn.execute("KILL app")
        for c in (a, b):
            with pytest.raises(psycopg.OperationalError) as exc:
                c.execute("select 1")
            assert "administrator command" in str(exc.value)
        assert other.execute("select 1").fetchone()[0] == 1       # other databases keep theirs
        wait_for(lambda: pg.pooler_backends() == 1, 5, what="the killed database's servers closed")
        assert {r["name"]: r["paused"] for r in show(conn, "DATABASES")}["app"] == 1
        def newcomer_query():
            with pooler.connect() as late:
                return late.execute("select 5").fetchone()[0]

        newcomer = Background(newcomer_query)
        assert not newcomer.finished(1.0), "a killed database served a client before RESUME"
        conn.execute("RESUME app")
        assert newcomer.finished(5) and newcomer.result == 5


def test_kill_client_drops_only_that_client(sluice):
    pooler = sluice()
    with pooler.connect(application_name="victim") as victim, pooler.connect() as bystander, \
            console(pooler) as conn:
        victim.execute("select 1")
        bystander.execute("select 1")
        target = [r for r in show(conn, "CLIENTS") if r["application_name"] == "victim"][0]
        conn.execute(f"KILL_CLIENT {target['id']}")
        with pytest.raises(psycopg.OperationalError):
            victim.execute("select 1")
        assert bystander.execute("select 1").fetchone()[0] == 1
        with pytest.raises(psycopg.errors.ProtocolViolation, match="client not found"):   # PgBouncer's
            conn.execute(f"KILL_CLIENT {target['id']}")


def test_reconnect_marks_servers_and_wait_close_waits_for_them(sluice):
    pooler = sluice(pool_mode="session")
    with console(pooler) as conn:
        client = pooler.connect()
        client.execute("select 1")
        conn.execute("RECONNECT app")
        assert [s["close_needed"] for s in show(conn, "SERVERS")] == [1]
        waiting = Background(lambda: conn.execute("WAIT_CLOSE app"))
        assert not waiting.finished(1.0), "WAIT_CLOSE returned while a marked server was open"
        client.close()                          # session pooling: released at disconnect, then closed
        assert waiting.finished(5) and waiting.error is None
        assert show(conn, "SERVERS") == []


def test_set_changes_reloadable_keys_and_refuses_the_rest(sluice):
    pooler = sluice()
    with console(pooler) as conn:
        conn.execute("SET default_pool_size = 7")
        conn.execute("SET server_check_query = 'select 2'")
        config = {r["key"]: r["value"] for r in show(conn, "CONFIG")}
        assert config["default_pool_size"] == "7" and config["server_check_query"] == "select 2"
        with pytest.raises(psycopg.errors.CantChangeRuntimeParam):
            conn.execute("SET listen_port = 7000")
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("SET no_such_key = 1")
        with pytest.raises(psycopg.errors.ProtocolViolation, match="SET failed") as exc:   # PgBouncer's
            conn.execute("SET default_pool_size = lots")
        assert "default_pool_size" in str(exc.value)
        conn.execute("SET client_encoding = 'UTF8'")   # drivers do this; accepted and ignored
    with pooler.connect() as client:
        client.execute("select 1")
    with console(pooler) as conn:
        assert {r["name"]: r for r in show(conn, "DATABASES")}["app"]["pool_size"] == 7


def test_shutdown_stops_the_process(sluice):
    pooler = sluice()
    with console(pooler) as conn:
        try:
            conn.execute("SHUTDOWN")
        except psycopg.OperationalError:
            pass    # the answer may be lost with the connection
    assert pooler.proc.wait(timeout=10) == 0
    # stopped on purpose: not a crash for the fixture to report
    pooler._stopped = True
    pooler._stderr.close()


# -- the AI middleware -------------------------------------------------------------------
def test_show_limits_usage_and_cache_report_the_middleware(sluice):
    pooler = sluice(pool_mode="transaction",
                    extra_ini="[limits]\nalice = requests_per_minute=2")
    with pooler.connect() as client:
        client.execute("SET sluice.user = 'alice'")
        client.execute("select 1")
        client.execute("select 2")
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
            client.execute("select 3")
    with console(pooler) as conn:
        limits = [r for r in show(conn, "LIMITS") if r["subject"] == "alice"]
        assert len(limits) == 1
        row = limits[0]
        assert (row["model"], row["limit_name"], row["limit_value"]) == ("", "requests_per_minute", 2)
        # the per-minute bucket drains continuously: a little below 2 a moment later
        assert 1.9 <= row["used"] <= 2 and 0 <= row["remaining"] <= 0.1
        assert row["reset_at"].endswith("UTC")
        usage = [r for r in show(conn, "USAGE") if r["subject"] == "alice"]
        assert usage == [{"subject": "alice", "model": "", "requests": 2, "refusals": 1,
                          "input_tokens": 0, "output_tokens": 0, "cost_cents": 0, "rejected": 0}]
        assert show(conn, "CACHE") == [{"entries": 0, "bytes": 0, "hits": 0, "misses": 0,
                                         "evictions": 0, "hit_rate": 0}]
        conn.execute("CACHE FLUSH")


# -- /metrics ------------------------------------------------------------------------------
def test_metrics_parse_as_prometheus_text_and_counters_move_with_traffic(sluice):
    port = harness.free_port()
    pooler = sluice(pool_mode="transaction", metrics_listen_addr="127.0.0.1", metrics_listen_port=port,
                    extra_ini="[limits]\nbob = requests_per_minute=1")
    with pooler.connect() as client:
        client.execute("select 1")
        before = scrape(port)
        for i in range(5):
            client.execute("select %s", (i,))
        client.execute("SET sluice.user = 'bob'")
        client.execute("select 1")
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
            client.execute("select 1")
        after = scrape(port)
        db = {"database": "app"}
        assert value(after, "pgsluice_queries_total", **db) >= value(before, "pgsluice_queries_total", **db) + 6
        assert value(after, "pgsluice_transactions_total", **db) > value(before, "pgsluice_transactions_total", **db)
        for family in ("pgsluice_received_bytes_total", "pgsluice_sent_bytes_total",
                       "pgsluice_server_assignments_total", "pgsluice_query_seconds_total"):
            assert value(after, family, **db) > value(before, family, **db), family
        assert value(after, "pgsluice_client_wait_seconds", "pgsluice_client_wait_seconds_count", **db) > \
            value(before, "pgsluice_client_wait_seconds", "pgsluice_client_wait_seconds_count", **db)
        assert value(after, "pgsluice_ai_refusals_total", reason="requests_per_minute") == 1
        assert value(after, "pgsluice_ai_statements_total", model="") == 1
        pool = {"database": "app", "user": "app"}
        assert value(after, "pgsluice_pool_clients", state="active", **pool) == 1
        assert value(after, "pgsluice_pool_servers", state="idle", **pool) == 1
        assert value(after, "pgsluice_client_connections", state="active") == 1
        assert value(after, "pgsluice_ai_cache_hits_total") == 0
        assert after["pgsluice_info"]["type"] == "gauge"
    with pytest.raises(urllib.error.HTTPError) as exc:
        scrape(port, "/nothing")
    assert exc.value.code == 404


def test_metrics_listener_is_off_unless_configured(sluice):
    pooler = sluice()
    with console(pooler) as conn:
        config = {r["key"]: r["value"] for r in show(conn, "CONFIG")}
    assert config["metrics_listen_addr"] == "" and config["metrics_listen_port"] == "9127"
    assert "serving metrics" not in pooler.log_text(lines=None)
