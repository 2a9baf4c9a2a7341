# SPDX-License-Identifier: PostgreSQL
"""scripts/quickstart: the first ten minutes of a new user (README, "Two commands").

The script is run as a user runs it (with PGSLUICE_BIN, so it does not build
again, and SLUICE_QUICKSTART_DIR, so it does not touch the checkout's
.local/): it must print a DATABASE_URL, a metrics URL and the admin command;
the statements its hint shows must do what the hint says (a tagged one
recorded with a cost, a refused one with 53400); the pooler must not run as
root; the journal must be 0700 and .local/database_url 0600; PGSLUICE_PG_PORT
and .local/extra.ini must be honoured, and extra.ini never written.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

import harness

SCRIPT = harness.REPO / "scripts" / "quickstart"
START_TIMEOUT_S = 180     # initdb, PostgreSQL, --migrate on a loaded 2-core machine

pytestmark = [pytest.mark.skipif(harness.is_pgbouncer(), reason="runs pgsluice's own quickstart"),
              pytest.mark.serial]   # creates OS users, starts its own PostgreSQL: alone (conftest.py)


@pytest.fixture
def quickstart():
    local = Path(tempfile.mkdtemp(prefix="pgsluice-quickstart-", dir="/tmp"))
    os.chmod(local, 0o755)          # reachable by the postgres and pgsluice OS users
    extra = "[pgsluice]\n; mine\nmax_client_conn = 123\n"
    (local / "extra.ini").write_text(extra)
    ports = {"PGSLUICE_PORT": harness.free_port(), "PGSLUICE_PG_PORT": harness.free_port(),
             "PGSLUICE_METRICS_PORT": harness.free_port()}
    env = dict(os.environ, SLUICE_QUICKSTART_DIR=str(local), PGSLUICE_BIN=str(harness.pooler_binary()),
               **{k: str(v) for k, v in ports.items()})
    out = open(local / "quickstart.out", "w+")
    proc = subprocess.Popen([str(SCRIPT)], env=env, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    hung = None
    try:
        yield proc, local, out, ports, extra
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)     # Ctrl-C: the script stops pgsluice and PostgreSQL
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                # what it printed and the pooler's log, before the directory goes
                hung = printed(out) + "".join(
                    f"\n--- {log} ---\n" + harness.tail(log.read_text(errors="replace"))
                    for log in sorted(local.glob("**/*.log")))
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.close()
        shutil.rmtree(local, ignore_errors=True)
    assert hung is None, f"quickstart did not stop within 60 s of Ctrl-C:\n{hung}"


def printed(out):
    out.seek(0)
    return out.read()


def test_quickstart_prints_urls_serves_the_hint_and_runs_unprivileged(quickstart):
    proc, local, out, ports, extra = quickstart
    deadline = time.monotonic() + START_TIMEOUT_S
    while "DATABASE_URL=" not in printed(out) or not harness.port_accepts("127.0.0.1",
                                                                          ports["PGSLUICE_PORT"]):
        assert proc.poll() is None, f"quickstart exited with {proc.returncode}:\n{printed(out)}"
        assert time.monotonic() < deadline, f"quickstart did not start:\n{printed(out)}"
        time.sleep(0.2)
    text = printed(out)

    url = re.search(r"DATABASE_URL=(\S+)", text).group(1)
    assert f"127.0.0.1:{ports['PGSLUICE_PORT']}/app" in url, text
    assert f"127.0.0.1:{ports['PGSLUICE_PG_PORT']}" in text, "PGSLUICE_PG_PORT is honoured"
    metrics = re.search(r"metrics:\s+(http://\S+)", text).group(1)
    assert metrics == f"http://127.0.0.1:{ports['PGSLUICE_METRICS_PORT']}/metrics", text
    admin = re.search(r"""admin:\s+psql "([^"]+)" -c 'SHOW POOLS'""", text).group(1)
    assert admin.endswith("/pgsluice"), admin
    tagged = re.search(r"""tagged statement.*\n\s+psql "\$DATABASE_URL" -c "([^"]+)\"""", text).group(1)
    refused = re.search(r"""refused one.*\n\s+psql "\$DATABASE_URL" -c "([^"]+)\"""", text).group(1)

    def scrape():
        try:
            with urllib.request.urlopen(metrics, timeout=5) as resp:
                return resp.status == 200 and b"pgsluice_info" in resp.read()
        except OSError:
            return False      # the metrics listener opens after the pooler's port
    harness.wait_for(scrape, timeout=30, what="/metrics answering")

    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(tagged).fetchone() == (1,)
        with pytest.raises(psycopg.Error) as err:
            conn.execute(refused)
        assert err.value.sqlstate == "53400", err.value
        harness.wait_for(lambda: conn.execute("SELECT cost_cents FROM sluice.llm_usage").fetchall(),
                         timeout=30, what="the usage row")
        (cost,), = conn.execute("SELECT cost_cents FROM sluice.llm_usage").fetchall()
        assert cost is not None and cost > 0, "the starter price list prices gpt-4o"

    with psycopg.connect(admin, autocommit=True) as console:
        config = {r[0]: r[1] for r in console.execute("SHOW CONFIG").fetchall()}
        assert config["max_client_conn"] == "123", "extra.ini is included"

    assert (local / "extra.ini").read_text() == extra, "extra.ini is never written"
    assert (local / "database_url").stat().st_mode & 0o777 == 0o600
    assert (local / "pooler" / "journal").stat().st_mode & 0o777 == 0o700
    pid = int((local / "pooler" / "pgsluice.pid").read_text())
    uid = int(re.search(r"^Uid:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M).group(1))
    assert uid != 0, "pgsluice runs as an unprivileged user"

    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert not Path(f"/proc/{pid}").exists(), "Ctrl-C stops pgsluice"
    assert not harness.port_accepts("127.0.0.1", ports["PGSLUICE_PG_PORT"]), "and PostgreSQL"
