# SPDX-License-Identifier: PostgreSQL
"""The monitoring kit in contrib/ and the pgbouncer_exporter mapping of docs/admin.md.

Alert rules and dashboard panels that name a metric pgsluice does not serve
stay silent or empty forever, and nobody notices until the outage. So every
pgsluice_* name they (and the mapping table) use is looked up in what a
running pgsluice serves on /metrics, and their structure is checked the way
Prometheus and Grafana read it. `promtool check rules` runs too when
Debian's prometheus package is installed (it is not in CI: 96 MB).
"""

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

import harness

ROOT = harness.REPO
RULES = ROOT / "contrib" / "prometheus" / "pgsluice-alerts.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "pgsluice-dashboard.json"

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="pgsluice's own metrics")


@pytest.fixture(scope="module")
def served(pg, workbase):
    """The metric names a running pgsluice serves: families and their samples' names."""
    if not pg.running:
        pg.start()
    port = harness.free_port()
    pooler = harness.Pooler(pg, Path(workbase) / "monitoring", overrides={
        "metrics_listen_addr": "127.0.0.1", "metrics_listen_port": port})
    pooler.start()
    try:
        with pooler.connect() as conn:     # so that pools exist and their families have samples
            conn.execute("select 1")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
    finally:
        problems = pooler.stop()
    assert problems == [], problems
    names = set(re.findall(r"^# TYPE (\w+) ", text, re.M))
    names |= set(re.findall(r"^(pgsluice_\w+)[{ ]", text, re.M))
    assert "pgsluice_info" in names, text
    return names


def metric_names(expr):
    return set(re.findall(r"\bpgsluice_\w+", expr))


def balanced(expr):
    depth = {"(": 0, "{": 0, "[": 0}
    pairs = {")": "(", "}": "{", "]": "["}
    for ch in re.sub(r'"[^"]*"', "", expr):
        if ch in depth:
            depth[ch] += 1
        elif ch in pairs:
            depth[pairs[ch]] -= 1
            if depth[pairs[ch]] < 0:
                return False
    return all(v == 0 for v in depth.values())


def rules():
    doc = yaml.safe_load(RULES.read_text())
    return [r for group in doc["groups"] for r in group["rules"]]


def dashboard_exprs():
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_alert_rules_are_well_formed():
    seen = set()
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"Pgsluice[A-Za-z]+", rule["alert"]) and rule["alert"] not in seen, rule
        seen.add(rule["alert"])
        assert balanced(rule["expr"]), rule["expr"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule
        assert rule["annotations"]["summary"], rule
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
    assert len(seen) >= 5


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian: prometheus) is not installed")
def test_promtool_accepts_the_alert_rules():
    out = subprocess.run(["promtool", "check", "rules", str(RULES)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    assert out.returncode == 0, out.stdout


def test_alert_rules_use_only_metrics_pgsluice_serves(served):
    for rule in rules():
        unknown = metric_names(rule["expr"]) - served
        assert not unknown, f"{rule['alert']}: {unknown} not served on /metrics"


def test_dashboard_is_grafana_json_using_only_metrics_pgsluice_serves(served):
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    variables = {v["name"] for v in dash["templating"]["list"]}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 8, ids
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert balanced(expr), expr
            used = set(re.findall(r"\$(\w+)", expr)) - {"__rate_interval", "__interval", "__range"}
            assert used <= variables, (panel["title"], used - variables)
            unknown = metric_names(expr) - served
            assert not unknown, f"panel {panel['title']!r}: {unknown} not served on /metrics"


def test_pgbouncer_exporter_mapping_names_served_metrics(served):
    text = (ROOT / "docs" / "admin.md").read_text()
    section = text.split("### Coming from pgbouncer_exporter", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(pgbouncer_\w+)` \| (.+) \|$", section, re.M)
    assert len(rows) >= 15, section
    for exporter_name, ours in rows:
        names = metric_names(ours)
        if exporter_name == "pgbouncer_up":
            continue          # Prometheus' own "up"
        assert names, (exporter_name, ours)
        assert names <= served, (exporter_name, names - served)
