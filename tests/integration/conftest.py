# SPDX-License-Identifier: PostgreSQL
"""conftest.py - fixtures for the integration suite: a real PostgreSQL (`pg`) and
pooler processes under test (`sluice`). See harness.py for how both are run.

Environment:
  PGSLUICE_BIN        binary under test (default <PGSLUICE_BUILDDIR>/pgsluice or <repo>/pgsluice);
                      a binary named "pgbouncer" gets a [pgbouncer] section
  PGSLUICE_BUILDDIR   build directory holding pgsluice (scripts/test sets it)
  SLUICE_TEST_VERBOSE=1   start the pooler with -v
  SLUICE_TEST_KEEP=1      keep the temporary directories (paths are printed)
  SLUICE_TEST_TIMEOUT=N   seconds one test may run (default 30); a pooler that never
                          answers fails the test instead of hanging the suite, and
                          after 3 such timeouts the session stops

Parallel runs (pytest-xdist, `-n N`): every worker is its own pytest session, so it
starts its own PostgreSQL (the session fixture `pg`) and its own temporary
directories; ports come from harness.free_port(). Tests marked `serial` (they
install into the system, measure RSS or time, or load the whole machine) must
not share it: scripts/test runs `-m "not serial" -n N` and then `-m serial`
without workers; a parallel run that selects one fails it (see
pytest_runtest_setup).
"""

import os
import re
import signal
import tempfile

import pytest

import harness

TEST_TIMEOUT_S = float(os.environ.get("SLUICE_TEST_TIMEOUT", "30"))
MAX_TIMEOUTS = 3


class RunTimeout(Exception):
    """A test ran longer than SLUICE_TEST_TIMEOUT (the pooler probably stopped answering)."""


def _raise_timeout(signum, frame):
    raise RunTimeout(f"test did not finish within {TEST_TIMEOUT_S:g} s "
                      "(SLUICE_TEST_TIMEOUT); the pooler probably stopped answering")


def _terminate(signum, frame):
    # `timeout` (scripts/test) or CI cancelling: unwind through the fixtures so
    # PostgreSQL and the poolers are stopped instead of left behind.
    raise KeyboardInterrupt(f"got signal {signum}")


def pytest_configure(config):
    config._sluice_timeouts = 0
    config.addinivalue_line(
        "markers", "serial: runs alone (no pytest-xdist workers beside it): it installs into "
        "the system, measures RSS or time, or loads the whole machine")
    signal.signal(signal.SIGTERM, _terminate)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Bound every test's run time with SIGALRM (no pytest-timeout on Debian's list)."""
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT_S)
    try:
        outcome = yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    excinfo = outcome.excinfo
    if excinfo is not None and issubclass(excinfo[0], RunTimeout):
        item.config._sluice_timeouts += 1
        if item.config._sluice_timeouts >= MAX_TIMEOUTS:
            item.session.shouldstop = (f"{MAX_TIMEOUTS} tests timed out; stopping "
                                       "(the pooler does not answer)")


def _xdist_workers(config):
    """Number of pytest-xdist workers of this run (0: not parallel)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "2"))
    numprocesses = getattr(config.option, "numprocesses", None)
    return numprocesses or 0


def pytest_runtest_setup(item):
    """A parallel run (-n N) must not run a `serial` test beside others: it fails, loudly,
    instead of measuring or installing next to other workers (select it out with
    -m "not serial" and run -m serial apart, as scripts/test does)."""
    if item.get_closest_marker("serial") and _xdist_workers(item.config) > 1:
        pytest.fail("marked serial: run it without -n (scripts/test runs -m serial after "
                    "the parallel pass)", pytrace=False)


def pytest_report_header(config):
    return [f"pooler under test: {harness.pooler_binary()}",
            f"postgresql: {harness.find_pg_bindir()}"]


def pytest_sessionstart(session):
    binary = harness.pooler_binary()
    if not binary.exists():
        pytest.exit(f"pooler binary {binary} not found: build it first (scripts/test does), "
                    "or point PGSLUICE_BUILDDIR / PGSLUICE_BIN at it", returncode=3)


def _keep():
    return os.environ.get("SLUICE_TEST_KEEP", "") not in ("", "0")


@pytest.fixture(scope="session")
def workbase():
    """A directory for the poolers' files, traversable by PostgreSQL's OS user."""
    path = tempfile.mkdtemp(prefix="pgsluice-test-")
    os.chmod(path, 0o755)
    yield path
    if _keep():
        print(f"\nkept pooler directories in {path}")
    else:
        import shutil
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg():
    """The session's PostgreSQL server (see harness.PostgresServer).

    A test that stops it must start it again (use try/finally).
    """
    server = harness.PostgresServer()
    try:
        server.init()
    except Exception:
        server.destroy(keep=True)
        raise
    yield server
    if _keep():
        print(f"\nkept PostgreSQL cluster in {server.basedir}")
    server.destroy(keep=_keep())


@pytest.fixture
def sluice(request, pg, workbase):
    """Factory: sluice(**overrides, databases=None, extra_ini="", start=True) -> harness.Pooler.

    Every pooler made is stopped with SIGINT after the test (Pooler.stop); the test fails
    when one crashed, hung, or left a sanitizer report.
    """
    made = []
    request.node._sluice_poolers = made
    safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:40]  # unix socket paths are short

    def make(databases=None, extra_ini="", start=True, verbose=None, **overrides):
        if not pg.running:
            pg.start()
        # A fresh directory per pooler: parametrized tests whose names share the
        # first 40 characters must not share a journal or a pidfile.
        workdir = tempfile.mkdtemp(prefix=f"{safe_name}-{len(made)}-", dir=workbase)
        os.chmod(workdir, 0o755)     # as workbase: PostgreSQL's OS user reads files here
        pooler = harness.Pooler(pg, workdir, overrides=overrides, databases=databases,
                                extra_ini=extra_ini, verbose=verbose)
        made.append(pooler)
        if start:
            pooler.start()
        else:
            pooler.write_config()
        return pooler

    yield make

    problems = []
    for pooler in made:
        problems += pooler.stop()
    if made and pg.running:
        pg.end_leftover_backends()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the poolers' logs to a failed test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for n, pooler in enumerate(getattr(item, "_sluice_poolers", [])):
            report.sections.append((f"pooler {n} log ({pooler.workdir})", pooler.log_text()))
