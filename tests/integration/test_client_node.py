# SPDX-License-Identifier: PostgreSQL
"""The Node.js kit (clients/node, pgsluice-kit) against a running pgsluice.

Runs `npm ci` (pg, knex and drizzle-orm at the versions of package-lock.json, from the
npm registry) and then `node --test clients/node/test/` with DATABASE_URL, ADMIN_URL and
PGSLUICE_INI of a pooler where the subject "limited" has a small requests_per_minute: the
pure tests (tags, usage, retryAfter) and the live ones (node-postgres, knex, drizzle-orm:
rows, usage in SHOW USAGE, a 53400 waited out) all run; none may be skipped.
"""

import fcntl
import os
import re
import shutil
import subprocess

import pytest

import harness

KIT = harness.REPO / "clients" / "node"

pytestmark = [pytest.mark.skipif(harness.is_pgbouncer(), reason="pgsluice's own middleware"),
              pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")]


PURE_TESTS = 4        # run without a pooler or node_modules
LIVE_TESTS = 7        # node-postgres 3, knex 2, drizzle 2


@pytest.fixture(scope="module")
def node_modules():
    """clients/node/node_modules as package-lock.json pins it (npm ci, once per run)."""
    if not shutil.which("npm"):
        pytest.fail("node is installed but npm is not: the Node kit's tests need npm ci")
    lock = KIT / "package-lock.json"
    stamp = KIT / "node_modules" / ".package-lock.json"
    # pytest-xdist workers share the checkout: one runs npm ci (which first deletes
    # node_modules) while the others wait on the kit directory's lock, then find the
    # stamp up to date.
    guard = os.open(KIT, os.O_RDONLY)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
            out = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=KIT, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, timeout=300)
            assert out.returncode == 0, out.stdout
    finally:
        os.close(guard)


def test_node_kit(sluice, node_modules):
    pooler = sluice(pool_mode="transaction", extra_ini="[limits]\nlimited = requests_per_minute=20")
    base = f"postgresql://app:{harness.PASSWORDS['app']}@127.0.0.1:{pooler.port}"
    # one test file at a time: they share the pooler and the subject "limited"
    out = subprocess.run(["node", "--test", "--test-concurrency=1", "test/"], cwd=KIT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=300,
                         env=dict(os.environ, DATABASE_URL=f"{base}/app", ADMIN_URL=f"{base}/pgsluice",
                                  PGSLUICE_INI=str(pooler.ini_path)))
    assert out.returncode == 0, out.stdout
    passed = int(re.search(r"^# pass (\d+)", out.stdout, re.M).group(1))
    skipped = int(re.search(r"^# skipped (\d+)", out.stdout, re.M).group(1))
    assert (passed, skipped) == (PURE_TESTS + LIVE_TESTS, 0), out.stdout
