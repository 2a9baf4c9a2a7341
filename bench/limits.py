#!/usr/bin/python3
# SPDX-License-Identifier: PostgreSQL
"""limits.py - do the limits hold under concurrency? (BENCH_LIMITS=1 bench/run)

Issue 14's scenarios, one pgsluice instance, BENCH_CLIENTS (default 200) client
threads of one subject firing at once, each on its own psycopg connection. The
report prints, per scenario, the limit, what was admitted, and the bound
docs/limits.md promises, side by side; nothing is asserted.

  tokens_per_minute   tokens_per_minute=10000; every statement is an LLM call's
                      record of 100 tokens (ai_tokens_in) taking 20 ms; admitted
                      tokens in the worst 60 s window of the run.
                      Bound: 1.1 x limit + one call.
  cost budget         cost_cents_per_month=100; gpt-4o calls of 4000 input tokens
                      (1 cent each at 2.50 USD per million); clients fire until
                      refused; cents stored in sluice.llm_usage.
                      Bound: budget + one call.
  requests_per_minute requests_per_minute=100; clients fire SELECT 1 tagged
                      ai_user, retrying every 50 ms when refused; admitted
                      statements in the worst 60 s window.
                      Bound: the limit.

It uses the integration tests' harness (tests/integration/harness.py): a
throwaway PostgreSQL, the binary in PGSLUICE_BIN or PGSLUICE_BUILDDIR (default
build/pgsluice), the sluice schema migrated into a database of its own.

Knobs: BENCH_CLIENTS=200, BENCH_SECONDS=65 (length of the two per-minute runs;
the worst window is over the whole run), BENCH_SCENARIOS="tokens cost requests".
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

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "200"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "65"))
SCENARIOS = os.environ.get("BENCH_SCENARIOS", "tokens cost requests").split()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def worst_window(events, width=60.0):
    """Largest sum of amounts over any window of width seconds: events [(t, amount)]."""
    events = sorted(events)
    best = total = 0
    j = 0
    for t, amount in events:
        total += amount
        while events[j][0] <= t - width:
            total -= events[j][1]
            j += 1
        best = max(best, total)
    return best


def fire(pooler, stop_at, statement, pause_on_refusal=0.05, stop_on_refusal=False):
    """CLIENTS threads run statement() until stop_at (monotonic) or, with stop_on_refusal,
    their first refusal. Returns ([(t, 1)] per admitted statement, refusals)."""
    admitted, refused = [], [0]
    lock = threading.Lock()
    conns = [pooler.connect(dbname="usage", autocommit=True) for _ in range(CLIENTS)]
    barrier = threading.Barrier(CLIENTS)

    def run(conn):
        barrier.wait()
        while time.monotonic() < stop_at:
            try:
                conn.execute(statement())
                with lock:
                    admitted.append((time.monotonic(), 1))
            except psycopg.errors.ConfigurationLimitExceeded:
                with lock:
                    refused[0] += 1
                if stop_on_refusal:
                    return
                time.sleep(pause_on_refusal)

    threads = [threading.Thread(target=run, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    return admitted, refused[0]


def make_pooler(pg, workbase, limits):
    db = f"bench_{uuid.uuid4().hex[:10]}"
    pg.query(f"CREATE DATABASE {db} OWNER app", dbname="postgres")
    workdir = tempfile.mkdtemp(prefix="limits-", dir=workbase)
    os.chmod(workdir, 0o755)
    pooler = harness.Pooler(pg, workdir, overrides=dict(
        ai_database="usage", pool_mode="transaction", default_pool_size="40",
        max_client_conn=str(CLIENTS + 50), limits_refresh_interval="1"),
        databases={"usage": f"host={pg.host} port={pg.port} dbname={db} user=app"})
    pooler.limits = dict(limits)
    pooler.write_config()
    out = run_migrate(pooler)
    if out.returncode != 0:
        raise SystemExit(out.stdout)
    pg.query("INSERT INTO sluice.model_prices (model, input_usd_per_mtok, output_usd_per_mtok)"
             " VALUES ('gpt-4o', 2.50, 10.00)", dbname=db)
    pooler.start()
    return pooler, db


def scenario_tokens(pg, workbase):
    limit = 10000
    pooler, _ = make_pooler(pg, workbase, {"tess": f"tokens_per_minute={limit}"})
    try:
        stmt = "SELECT pg_sleep(0.02) /*ai_user='tess',ai_model='gpt-4o',ai_tokens_in='100'*/"
        admitted, refused = fire(pooler, time.monotonic() + SECONDS, lambda: stmt)
    finally:
        pooler.stop()
    got = 100 * worst_window(admitted)
    return ("tokens_per_minute", limit, got, 1.1 * limit + 100, f"{len(admitted)} calls admitted, {refused} refused")


def scenario_cost(pg, workbase):
    budget = 100
    pooler, db = make_pooler(pg, workbase, {"cleo": f"cost_cents_per_month={budget}"})
    try:
        stmt = "SELECT pg_sleep(0.02) /*ai_user='cleo',ai_model='gpt-4o',ai_tokens_in='4000'*/"
        admitted, refused = fire(pooler, time.monotonic() + 120, lambda: stmt, stop_on_refusal=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stored = pg.query("SELECT count(*), coalesce(sum(cost_cents), 0) FROM sluice.llm_usage", dbname=db)[0]
            if stored[0] >= len(admitted):
                break
            time.sleep(0.2)
    finally:
        pooler.stop()
    return ("cost_cents_per_month", budget, float(stored[1]), budget + 1.0,
            f"{len(admitted)} calls of 1 cent admitted, {refused} refused")


def scenario_requests(pg, workbase):
    limit = 100
    pooler, _ = make_pooler(pg, workbase, {"rita": f"requests_per_minute={limit}"})
    try:
        admitted, refused = fire(pooler, time.monotonic() + SECONDS, lambda: "SELECT 1 /*ai_user='rita'*/")
    finally:
        pooler.stop()
    return ("requests_per_minute", limit, worst_window(admitted), limit,
            f"{len(admitted)} admitted in {SECONDS:.0f} s, {refused} refused")


def main():
    workbase = tempfile.mkdtemp(prefix="pgsluice-bench-limits-")
    os.chmod(workbase, 0o755)
    pg = harness.PostgresServer()
    pg.init()
    rows = []
    try:
        for name in SCENARIOS:
            log(f"limits bench: {name}, {CLIENTS} clients")
            rows.append({"tokens": scenario_tokens, "cost": scenario_cost,
                         "requests": scenario_requests}[name](pg, workbase))
    finally:
        pg.destroy()
    print(f"# Limits under concurrency: one instance, {CLIENTS} clients ({harness.pooler_binary()})\n")
    print("| limit | value | admitted (worst 60 s window / total spent) | bound | admitted / limit | |")
    print("|---|---|---|---|---|---|")
    for dim, limit, got, bound, note in rows:
        flag = "" if got <= bound else " **over the bound**"
        print(f"| {dim} | {limit} | {got:g} | {bound:g} | {got / limit:.2f}x{flag} | {note} |")


if __name__ == "__main__":
    main()
