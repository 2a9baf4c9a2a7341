# SPDX-License-Identifier: PostgreSQL
"""Budget alerts and status at the database layer (docs/ai-middleware.md, "Budget alerts and status").

pgsluice announces on channel sluice_budget when a subject's tokens_per_day or
cost_cents_per_month reaches each of budget_alert_thresholds (default 80,100), once per
period, with a JSON payload, and keeps sluice.budget_status current. The tests LISTEN on a
connection straight to PostgreSQL, as an alerting service would.
"""

import json
import threading
import time

import psycopg
import pytest
from harness import wait_until

import harness
from test_ai_usage import connect, usage_pooler, wait_for_rows
from test_migrate import fresh_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own")


class Listener:
    """LISTEN sluice_budget on a direct connection; notifications are collected as they
    arrive while poll() runs a query (psycopg 3.1 has no notifies() timeout)."""

    def __init__(self, pg, dbname):
        self.conn = pg.connect(dbname=dbname)
        self.got = []
        self.conn.add_notify_handler(lambda n: self.got.append((n.channel, json.loads(n.payload))))
        self.conn.execute("LISTEN sluice_budget")

    def poll(self):
        self.conn.execute("SELECT 1")
        return self.got

    def wait_for(self, n, timeout=15):
        wait_until(lambda: len(self.poll()) >= n, timeout, f"{n} sluice_budget notifications")
        return self.got

    def close(self):
        self.conn.close()


def call(conn, subject, tokens_in=4000, model="gpt-4o"):
    """One gpt-4o call's record: 4000 input tokens cost 1 cent at 2.50 USD per million."""
    conn.execute(f"SELECT 1 /*ai_user='{subject}',ai_model='{model}',ai_tokens_in='{tokens_in}'*/")


def test_thresholds_notify_once_per_period_with_json_payload(sluice, pg, fresh_db):
    """cost_cents_per_month=10 and calls of 1 cent: the 8th call reaches 80 %, the 10th
    100 %; one notification each, also after a second instance starts and seeds the same
    spend; the 11th call is refused."""
    pooler = usage_pooler(sluice, pg, fresh_db)
    pooler.limits = {"bea": "cost_cents_per_month=10"}
    pooler.start()
    listener = Listener(pg, fresh_db)
    try:
        with connect(pooler) as conn:
            for _ in range(7):
                call(conn, "bea")
            time.sleep(0.6)                          # three sync ticks: nothing yet
            assert listener.poll() == []
            call(conn, "bea")                        # 8 cents: 80 %
            got = listener.wait_for(1)
            channel, payload = got[0]
            assert channel == "sluice_budget"
            assert payload["subject"] == "bea"
            assert payload["model"] is None          # the subject-wide budget
            assert payload["dimension"] == "cost_cents_per_month"
            assert float(payload["threshold_pct"]) == 80
            assert float(payload["limit"]) == 10
            assert float(payload["used"]) == 8
            assert payload["period_start"].endswith("-01T00:00:00+00:00")
            assert payload["resets_at"].endswith("-01T00:00:00+00:00")
            call(conn, "bea")
            call(conn, "bea")                        # 10 cents: 100 %
            got = listener.wait_for(2)
            assert [float(p["threshold_pct"]) for _, p in got] == [80, 100]
            with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
                call(conn, "bea")
        wait_for_rows(pg, fresh_db, 10)
        # another instance seeds the same month's spend: it reaches both thresholds
        # again, but sluice.budget_alerts keeps each to one announcement per period
        other = usage_pooler(sluice, pg, fresh_db, migrate=False)
        other.limits = {"bea": "cost_cents_per_month=10"}
        other.start()
        with connect(other) as conn, pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
            call(conn, "bea")
        time.sleep(1.5)
        assert len(listener.poll()) == 2
        assert pg.query("SELECT threshold_pct::int FROM sluice.budget_alerts WHERE subject = 'bea' "
                        "ORDER BY 1", dbname=fresh_db) == [(80,), (100,)]
    finally:
        listener.close()


def test_budget_status_shows_limit_used_reserved_remaining(sluice, pg, fresh_db):
    """sluice.budget_status: after 3 one-cent calls of a 10 cent budget, used 3 and
    remaining 7; while a statement holding ai_cost_estimate='2' runs, reserved 2 and
    remaining 5; after it ends, reserved 0 again."""
    pooler = usage_pooler(sluice, pg, fresh_db)
    pooler.limits = {"cy": "cost_cents_per_month=10 tokens_per_day=100000"}
    pooler.start()

    def status():
        return pg.query("SELECT dimension, \"limit\"::float8, used::float8, reserved::float8, "
                        "remaining::float8, resets_at > now() FROM sluice.budget_status "
                        "WHERE subject = 'cy' AND model IS NULL ORDER BY dimension", dbname=fresh_db)

    with connect(pooler) as conn:
        for _ in range(3):
            call(conn, "cy")
    wait_until(lambda: status() == [("cost_cents_per_month", 10.0, 3.0, 0.0, 7.0, True),
                                    ("tokens_per_day", 100000.0, 12000.0, 0.0, 88000.0, True)],
               15, "budget_status after 3 calls")
    done = threading.Event()

    def hold():
        with connect(pooler) as conn:
            try:
                conn.execute("SELECT pg_sleep(30) /*ai_user='cy',ai_cost_estimate='2',ai_tokens_estimate='500'*/")
            except psycopg.errors.QueryCanceled:
                done.set()

    with connect(pooler) as ctl:
        t = threading.Thread(target=hold)
        t.start()
        try:
            wait_until(lambda: status()[0][3:5] == (2.0, 5.0), 15, "the reservation in budget_status")
            assert status()[1][3] == 500.0
        finally:
            pg.query("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%'",
                     dbname="postgres")
            t.join(30)
        assert done.is_set()
        assert ctl.execute("SELECT 1").fetchone() == (1,)
    wait_until(lambda: status()[0][3] == 0.0, 15, "the reservation given back")
    assert status()[0][2] == 3.0          # the cancelled statement charged nothing


def test_budget_alert_thresholds_setting(sluice, pg, fresh_db):
    """budget_alert_thresholds = 50: one notification at half the tokens_per_day budget;
    an invalid list is refused when the configuration is read."""
    pooler = usage_pooler(sluice, pg, fresh_db, budget_alert_thresholds="50")
    pooler.limits = {"dee/gpt-4o": "tokens_per_day=10000"}
    pooler.start()
    listener = Listener(pg, fresh_db)
    try:
        with connect(pooler) as conn:
            call(conn, "dee", tokens_in=4000)
            time.sleep(0.6)
            assert listener.poll() == []
            call(conn, "dee", tokens_in=1000)           # 5000 of 10000
            (_, payload), = listener.wait_for(1)
            assert payload["model"] == "gpt-4o"
            assert payload["dimension"] == "tokens_per_day"
            assert float(payload["threshold_pct"]) == 50
            assert payload["resets_at"].endswith("T00:00:00+00:00")
            call(conn, "dee", tokens_in=4999)
            time.sleep(0.6)
            assert len(listener.poll()) == 1
    finally:
        listener.close()
    bad = sluice(start=False, budget_alert_thresholds="80%")
    out = harness.run_binary([bad.ini_path], cwd=bad.workdir)
    assert out.returncode != 0
    assert ('invalid value "80%" for key "budget_alert_thresholds": invalid budget alert threshold "80%": '
            "expected a percentage above 0 and at most 1000") in out.stdout
