#!/usr/bin/python3
# SPDX-License-Identifier: PostgreSQL
"""analytics.py - how fast the documented usage questions answer (BENCH_ANALYTICS=1 bench/run).

A throwaway PostgreSQL (tests/integration/harness.py), the sluice schema migrated with the
pgsluice binary under test (PGSLUICE_BIN or PGSLUICE_BUILDDIR, default build/pgsluice),
monthly partitions of sluice.llm_usage for the last 13 months, then BENCH_ROWS rows
(default 2,000,000; issue 14 asks for 10,000,000) spread over the last 365 days,
BENCH_SUBJECTS subjects (default 100) and 3 models, made with generate_series. sluice.usage_daily is filled the way
migration 0008 fills it (sluice.rebuild_usage_daily), which the writer then keeps current.

The report shows, per query, the median of BENCH_ROUNDS (5) runs in milliseconds: every
```sql block of "### Questions to ask" in docs/ai-middleware.md (they read the roll-up),
and the same questions asked of the raw rows, as the docs did before.
"""

import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
os.environ.setdefault("PGSLUICE_BUILDDIR", str(ROOT / "build"))

import harness  # noqa: E402
from test_migrate import run_migrate  # noqa: E402

ROWS = int(os.environ.get("BENCH_ROWS", "2000000"))
SUBJECTS = int(os.environ.get("BENCH_SUBJECTS", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CHUNK = 1000000

RAW = {
    "monthly cost per subject, 12 months (raw rows)": """
        SELECT date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS month, subject,
               count(*), sum(input_tokens + output_tokens), round(sum(cost_cents) / 100, 2)
        FROM sluice.llm_usage
        WHERE created_at >= (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '11 months')
                            AT TIME ZONE 'UTC'
        GROUP BY 1, 2""",
    "cost per day, 30 days (raw rows)": """
        SELECT (created_at AT TIME ZONE 'UTC')::date, count(*), sum(input_tokens + output_tokens),
               round(sum(cost_cents) / 100, 2), count(*) FILTER (WHERE cached)
        FROM sluice.llm_usage
        WHERE created_at >= now() - interval '30 days'
        GROUP BY 1""",
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def doc_queries():
    text = (ROOT / "docs" / "ai-middleware.md").read_text()
    m = re.search(r"^### Questions to ask\n(.*?)(?=^#{1,3} |\Z)", text, re.S | re.M)
    out = []
    for sql in re.findall(r"```sql\n(.*?)```", m.group(1), re.S):
        before = m.group(1)[:m.group(1).index("```sql\n" + sql)].rsplit("```\n", 1)[-1]
        paragraph = before.strip().split("\n\n")[-1]
        title = " ".join(paragraph.split())[:60]
        out.append((title.rstrip(":") + " (sluice.usage_daily)", sql))
    return out


def timed(conn, sql):
    times = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        conn.execute(sql).fetchall()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main():
    workbase = tempfile.mkdtemp(prefix="pgsluice-bench-analytics-")
    os.chmod(workbase, 0o755)
    pg = harness.PostgresServer()
    pg.init()
    try:
        db = f"bench_{uuid.uuid4().hex[:10]}"
        pg.query(f"CREATE DATABASE {db} OWNER app", dbname="postgres")
        workdir = tempfile.mkdtemp(prefix="analytics-", dir=workbase)
        os.chmod(workdir, 0o755)
        pooler = harness.Pooler(pg, workdir, overrides=dict(ai_database="usage"),
                                databases={"usage": f"host={pg.host} port={pg.port} dbname={db} user=app"})
        pooler.write_config()
        out = run_migrate(pooler)
        if out.returncode != 0:
            raise SystemExit(out.stdout)
        with pg.connect(dbname=db) as conn:
            for i in range(1, 13):     # the months before this one (ensure_usage_partitions made the rest)
                conn.execute(f"""
                    DO $$
                    DECLARE m timestamp := date_trunc('month', now() AT TIME ZONE 'UTC') - interval '{i} months';
                    BEGIN
                        EXECUTE format('CREATE TABLE IF NOT EXISTS sluice.%I PARTITION OF sluice.llm_usage '
                                       'FOR VALUES FROM (%L) TO (%L)',
                                       'llm_usage_y' || to_char(m, 'YYYY') || 'm' || to_char(m, 'MM'),
                                       to_char(m, 'YYYY-MM-DD') || ' 00:00:00+00',
                                       to_char(m + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00');
                    END $$""")
            conn.execute("INSERT INTO sluice.model_prices VALUES ('gpt-4o', 2.50, 10.00), ('gpt-4o-mini', 0.15, 0.60)")
            t0 = time.monotonic()
            for lo in range(1, ROWS + 1, CHUNK):
                hi = min(lo + CHUNK - 1, ROWS)
                log(f"analytics bench: rows {lo}..{hi} of {ROWS}")
                conn.execute(f"""
                    INSERT INTO sluice.llm_usage (id, created_at, subject, db_user, database, model,
                        input_tokens, output_tokens, cost_cents, llm_latency_ms, statement_ms, cached, instance)
                    SELECT gen_random_uuid(), now() - (g % 365) * interval '1 day' - (g % 86400) * interval '1 second',
                           'user-' || (g % {SUBJECTS}), 'app', 'app', (ARRAY['gpt-4o', 'gpt-4o-mini', 'local-llm'])[1 + g % 3],
                           100 + g % 900, 10 + g % 300, CASE WHEN g % 3 = 2 THEN NULL ELSE (g % 100) / 100.0 END,
                           CASE WHEN g % 5 = 0 THEN NULL ELSE 200 + g % 2000 END, 1 + (g % 50) / 10.0,
                           g % 5 = 0, 'bench'
                    FROM generate_series({lo}, {hi}) g""")
            load_s = time.monotonic() - t0
            conn.execute("VACUUM ANALYZE sluice.llm_usage")
            t0 = time.monotonic()
            daily = conn.execute("SELECT sluice.rebuild_usage_daily('-infinity', 'infinity')").fetchone()[0]
            backfill_s = time.monotonic() - t0
            conn.execute("VACUUM ANALYZE sluice.usage_daily")
            rows = [(title, timed(conn, sql)) for title, sql in doc_queries()]
            rows += [(title, timed(conn, sql)) for title, sql in RAW.items()]
    finally:
        pg.destroy()
    print(f"# Usage analytics: {ROWS:,} rows of sluice.llm_usage ({SUBJECTS} subjects, 3 models, 365 days), "
          f"{daily:,} rows of sluice.usage_daily\n")
    print(f"Loading the rows took {load_s:.0f} s; filling the roll-up (migration 0008's backfill) {backfill_s:.1f} s.\n")
    print(f"| query | median of {ROUNDS} (ms) |")
    print("|---|---|")
    for title, ms in rows:
        print(f"| {title} | {ms:.1f} |")


if __name__ == "__main__":
    main()
