# SPDX-License-Identifier: PostgreSQL
"""The Node.js kit (clients/node, pgsluice-kit) against a running pgsluice.

Runs `node --test clients/node/test/` with DATABASE_URL and ADMIN_URL of a
pooler where the subject "limited" has a small requests_per_minute. Its pure
tests (tags, usage, retryAfter) run wherever node is installed; the live ones
need node-postgres (`pg`, on NODE_PATH), which CI does not install, and are
skipped inside node without it.
"""

import os
import re
import shutil
import subprocess

import pytest

import harness

KIT = harness.REPO / "clients" / "node"

pytestmark = [pytest.mark.skipif(harness.is_pgbouncer(), reason="pgsluice's own middleware"),
              pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")]


def test_node_kit(sluice):
    pooler = sluice(pool_mode="transaction", extra_ini="[limits]\nlimited = requests_per_minute=20")
    base = f"postgresql://app:{harness.PASSWORDS['app']}@127.0.0.1:{pooler.port}"
    out = subprocess.run(["node", "--test", "test/"], cwd=KIT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=120,
                         env=dict(os.environ, DATABASE_URL=f"{base}/app", ADMIN_URL=f"{base}/pgsluice"))
    assert out.returncode == 0, out.stdout
    passed = int(re.search(r"^# pass (\d+)", out.stdout, re.M).group(1))
    with_pg = subprocess.run(["node", "-e", "require('pg')"], cwd=KIT, env=dict(os.environ),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    assert passed == (6 if with_pg else 3), out.stdout
