#!/usr/bin/python3
# SPDX-License-Identifier: PostgreSQL
"""limits_leases.py - per-minute limits across three instances (BENCH_LEASES=1 bench/run)

Issue 14, item 3: three pgsluice instances share one PostgreSQL; BENCH_CLIENTS (default
60) client threads, spread evenly over the instances, fire statements of one subject for
BENCH_SECONDS (default 60: the first minute). For each limit and limits_sync_interval the
report prints what was admitted in the whole run (which lies inside one minute), the
limit, and the bound docs/limits.md promises, side by side, with leases
(limits_lease_instances=3) and without (0: counters shared through sluice.rate_counters
only). Nothing is asserted.

  requests_per_minute  requests_per_minute=100; SELECT 1 tagged ai_user; a refused client
                       retries after 20 ms. Bound with leases: limit + 3 x slice (slice 8).
  tokens_per_minute    tokens_per_minute=10000; LLM-call records of 100 tokens
                       (ai_tokens_in) taking 20 ms. Bound: limit + 3 x slice (slice 833).

Knobs: BENCH_CLIENTS=60, BENCH_SECONDS=60, BENCH_SYNC="1 10", BENCH_DIMS="requests tokens",
BENCH_LEASES_MODES="3 0" (limits_lease_instances values).
"""

import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
os.environ.setdefault("PGSLUICE_BUILDDIR", str(ROOT / "build"))

import psycopg  # noqa: E402

import harness  # noqa: E402
from test_migrate import run_migrate  # noqa: E402

INSTANCES = 3
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "60"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "60"))
SYNCS = os.environ.get("BENCH_SYNC", "1 10").split()
DIMS = os.environ.get("BENCH_DIMS", "requests tokens").split()
MODES = [int(m) for m in os.environ.get("BENCH_LEASES_MODES", "3 0").split()]

SCENARIOS = {
    "requests": ("requests_per_minute", 100, "SELECT 1 /*ai_user='rita'*/", 1),
    "tokens": ("tokens_per_minute", 10000,
               "SELECT pg_sleep(0.02) /*ai_user='tess',ai_model='gpt-4o',ai_tokens_in='100'*/", 100),
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fire(poolers, stop_at, statement):
    admitted, refused = [0] * len(poolers), [0]
    lock = threading.Lock()
    conns = [poolers[i % len(poolers)].connect(dbname="usage", autocommit=True) for i in range(CLIENTS)]
    barrier = threading.Barrier(CLIENTS)

    def run(i):
        barrier.wait()
        while time.monotonic() < stop_at:
            try:
                conns[i].execute(statement)
                with lock:
                    admitted[i % len(poolers)] += 1
            except psycopg.errors.ConfigurationLimitExceeded:
                with lock:
                    refused[0] += 1
                time.sleep(0.02)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    return admitted, refused[0]


def run_one(pg, workbase, dim, limit, statement, sync, lease_instances):
    db = f"bench_{uuid.uuid4().hex[:10]}"
    pg.query(f"CREATE DATABASE {db} OWNER app", dbname="postgres")
    poolers = []
    try:
        for i in range(INSTANCES):
            workdir = tempfile.mkdtemp(prefix="leases-", dir=workbase)
            os.chmod(workdir, 0o755)
            p = harness.Pooler(pg, workdir, overrides=dict(
                ai_database="usage", pool_mode="transaction", default_pool_size="20",
                max_client_conn=str(CLIENTS + 50), limits_refresh_interval="1",
                limits_sync_interval=sync, limits_lease_instances=str(lease_instances)),
                databases={"usage": f"host={pg.host} port={pg.port} dbname={db} user=app"})
            p.limits = {statement.split("ai_user='")[1].split("'")[0]: f"{dim}={limit}"}
            p.write_config()
            if i == 0:
                out = run_migrate(p)
                if out.returncode != 0:
                    raise SystemExit(out.stdout)
            p.start()
            poolers.append(p)
        time.sleep(1.0)    # side channels connected and caught up
        return fire(poolers, time.monotonic() + SECONDS, statement)
    finally:
        for p in poolers:
            p.stop()


def main():
    workbase = tempfile.mkdtemp(prefix="pgsluice-bench-leases-")
    os.chmod(workbase, 0o755)
    pg = harness.PostgresServer()
    pg.init()
    rows = []
    try:
        for name in DIMS:
            dim, limit, statement, unit = SCENARIOS[name]
            for mode in MODES:
                for sync in SYNCS:
                    log(f"leases bench: {dim}={limit}, limits_lease_instances={mode}, "
                        f"limits_sync_interval={sync}, {CLIENTS} clients, {SECONDS:.0f} s")
                    admitted, refused = run_one(pg, workbase, dim, limit, statement, sync, mode)
                    slice_ = max(1, limit // (4 * INSTANCES)) if mode else 0
                    rows.append((dim, limit, mode, sync, unit * sum(admitted),
                                 [unit * a for a in admitted], limit + INSTANCES * slice_ if mode else None,
                                 refused))
    finally:
        pg.destroy()
    print(f"# Per-minute limits across {INSTANCES} instances, {CLIENTS} clients, first {SECONDS:.0f} s "
          f"({harness.pooler_binary()})\n")
    print("| limit | value | limits_lease_instances | limits_sync_interval | admitted | per instance |"
          " bound | admitted / limit | refused |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dim, limit, mode, sync, got, per, bound, refused in rows:
        b = f"{bound}" if bound is not None else "-"
        flag = " **over the bound**" if bound is not None and got > bound else ""
        print(f"| {dim} | {limit} | {mode} | {sync} s | {got} | {per} | {b} | {got / limit:.2f}x{flag} | {refused} |")


if __name__ == "__main__":
    main()
