# SPDX-License-Identifier: PostgreSQL
"""Leased per-minute limits across instances (docs/limits.md, "Leases across instances").

Three pgsluice instances share one PostgreSQL with limits_lease_instances = 3: each admits
a subject's statements only from slices of its requests_per_minute / tokens_per_minute
leased from sluice.rate_leases. Sixty clients (twenty per instance) fire at once with
bounded loops; the tests count what was admitted and assert the documented bound
(limit + 3 x one slice), never a timing. The last test stops PostgreSQL mid-run: each
instance admits no more than it held, and its log and /metrics say it fails closed.
"""

import re
import threading
import time
import urllib.request

import psycopg
import pytest
from harness import wait_until

import harness
from test_ai_usage import usage_pooler
from test_migrate import fresh_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own")

INSTANCES = 3
CLIENTS_PER_INSTANCE = 20


def slice_of(limit):
    """docs/limits.md: a slice is max(1, limit / (4 x limits_lease_instances))."""
    return max(1, limit // (4 * INSTANCES))


def instances(sluice, pg, db, limits, sync_interval="1", **extra):
    poolers = []
    for i in range(INSTANCES):
        p = usage_pooler(sluice, pg, db, migrate=(i == 0), limits_lease_instances=str(INSTANCES),
                         limits_sync_interval=sync_interval, default_pool_size="20",
                         max_client_conn="100", **extra)
        p.limits = dict(limits)
        p.start()
        poolers.append(p)
    return poolers


def fire(poolers, attempts, statement, pause=0.02):
    """CLIENTS_PER_INSTANCE threads per pooler, all starting together, each running
    statement attempts times (pausing after a refusal). Returns (admitted per pooler,
    refusals, other errors per pooler)."""
    n = len(poolers) * CLIENTS_PER_INSTANCE
    admitted = [0] * len(poolers)
    others = [0] * len(poolers)
    refusals = []
    lock = threading.Lock()
    conns = [poolers[i % len(poolers)].connect(dbname="usage", autocommit=True) for i in range(n)]
    barrier = threading.Barrier(n)
    failures = []

    def run(i):
        which = i % len(poolers)
        try:
            barrier.wait(timeout=60)
            for _ in range(attempts):
                try:
                    conns[i].execute(statement)
                    with lock:
                        admitted[which] += 1
                except psycopg.errors.ConfigurationLimitExceeded as e:
                    with lock:
                        refusals.append(e)
                    time.sleep(pause)
                except psycopg.OperationalError:
                    with lock:
                        others[which] += 1     # admitted, but no server to run it: closed
                    conns[i] = poolers[which].connect(dbname="usage", autocommit=True)
        except Exception as e:   # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    for c in conns:
        try:
            c.close()
        except psycopg.Error:
            pass
    assert not failures, failures
    return admitted, refusals, others


def stop_all(poolers):
    for p in poolers:
        assert p.stop() == [], p.log_text()


@pytest.mark.parametrize("sync_interval", ["1", "10"])
def test_requests_per_minute_across_three_instances_within_limit_plus_slices(sluice, pg, fresh_db,
                                                                              sync_interval):
    """requests_per_minute=60 (slice 5), 60 clients x 10 attempts (600 offered) inside one
    minute: at most 60 + 3 x 5 admitted whatever limits_sync_interval is."""
    limit = 60
    poolers = instances(sluice, pg, fresh_db, {"lena": f"requests_per_minute={limit}"}, sync_interval)
    try:
        admitted, refusals, others = fire(poolers, 10, "SELECT 1 /*ai_user='lena'*/")
    finally:
        stop_all(poolers)
    total = sum(admitted)
    print(f"sync {sync_interval} s: admitted per instance {admitted}, total {total}, limit {limit}")
    assert not any(others)
    assert total <= limit + INSTANCES * slice_of(limit), admitted
    assert total >= limit // 2, admitted            # a limit, not an outage
    assert refusals and all("requests_per_minute 60" in e.diag.message_primary for e in refusals)
    rows = pg.query("SELECT count(*) FROM sluice.rate_leases"
                    " WHERE subject = 'lena' AND model = '' AND dimension = 'requests_per_minute'",
                    dbname=fresh_db)
    assert rows[0][0] == 1      # the instances leased from one row


def test_tokens_per_minute_across_three_instances_within_limit_plus_slices(sluice, pg, fresh_db):
    """tokens_per_minute=6000 (slice 500), 60 clients x 4 calls of 100 tokens (24000
    offered): at most 6000 + 3 x 500 tokens admitted, and refusals name tokens_per_minute."""
    limit = 6000
    poolers = instances(sluice, pg, fresh_db, {"tomas": f"tokens_per_minute={limit}"})
    stmt = "SELECT pg_sleep(0.02) /*ai_user='tomas',ai_model='gpt-4o',ai_tokens_in='100',ai_tokens_out='0'*/"
    try:
        admitted, refusals, others = fire(poolers, 4, stmt)
    finally:
        stop_all(poolers)
    tokens = 100 * sum(admitted)
    print(f"admitted calls per instance {admitted}, {tokens} tokens, limit {limit}")
    assert not any(others)
    assert tokens <= limit + INSTANCES * slice_of(limit), admitted
    assert tokens >= limit // 2, admitted
    assert refusals and all("tokens_per_minute 6000" in e.diag.message_primary for e in refusals)


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def metric(text, name, labels=""):
    m = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def admitted_total(text):
    return sum(float(v) for v in re.findall(r"^pgsluice_ai_statements_total\{[^}]*\} (\S+)$", text, re.M))


def test_postgresql_stopped_instances_admit_only_what_they_held(sluice, pg, fresh_db):
    """requests_per_minute=120 (slice 10). The clients fire until every instance holds
    slices; PostgreSQL is stopped; they fire again. Each instance admits at most what it
    held when PostgreSQL went away, logs that it fails closed once, shows
    pgsluice_ai_limit_leases_fail_closed 1, and says so again once PostgreSQL is back."""
    limit = 120
    ports = [harness.free_port() for _ in range(INSTANCES)]
    poolers = []
    try:
        for i in range(INSTANCES):
            p = usage_pooler(sluice, pg, fresh_db, migrate=(i == 0), limits_lease_instances=str(INSTANCES),
                             default_pool_size="20", max_client_conn="100", query_wait_timeout="2",
                             metrics_listen_addr="127.0.0.1", metrics_listen_port=str(ports[i]))
            p.limits = {"olga": f"requests_per_minute={limit}"}
            p.start()
            poolers.append(p)
        stmt = "SELECT 1 /*ai_user='olga'*/"
        fire(poolers, 2, stmt)
        wait_until(lambda: all(metric(metrics(port), "pgsluice_ai_limit_leased",
                                      '{dimension="requests_per_minute"}') > 0 for port in ports),
                   10, "every instance to hold a slice")
        pg.stop()
        try:
            wait_until(lambda: all(metric(metrics(port), "pgsluice_ai_limit_leases_fail_closed") == 1
                                   for port in ports), 15, "every instance to fail closed")
            # what each holds once it lost PostgreSQL (a lease may land between the
            # first firing and the stop: it counts, it was granted)
            before = [metrics(port) for port in ports]
            held = [metric(t, "pgsluice_ai_limit_leased", '{dimension="requests_per_minute"}') for t in before]
            count0 = [admitted_total(t) for t in before]
            admitted, refusals, others = fire(poolers, 5, stmt)
            after = [admitted_total(metrics(port)) for port in ports]
            print(f"held {held}, admitted while PostgreSQL was stopped {[a - b for a, b in zip(after, count0)]}, "
                  f"failed for want of a server {others}, refused {len(refusals)}")
            for i in range(INSTANCES):
                assert after[i] - count0[i] <= held[i], (held, count0, after)
                assert others[i] <= held[i], (held, others)
                assert admitted[i] == 0      # nothing admitted reached a server
            assert refusals
            for p in poolers:
                log = p.logfile.read_text(errors="replace")
                assert log.count("admitting only from leased allowances (fail closed)") == 1, log
        finally:
            pg.start()
        wait_until(lambda: all(metric(metrics(port), "pgsluice_ai_limit_leases_fail_closed") == 0
                               for port in ports), 30, "every instance to lease again")
        for p in poolers:
            assert p.logfile.read_text(errors="replace").count("reachable again: leasing resumed") == 1
    finally:
        stop_all(poolers)
