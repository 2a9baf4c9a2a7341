# SPDX-License-Identifier: PostgreSQL
"""PgBouncer's -q and -d (issue 12 item 6, PgBouncer's usage.md "Command line switches").

`-q` writes nothing to stderr, the configuration's own warnings included
(they go to the logfile), as an init script expects; `-d` needs a pidfile and
a logfile *or* syslog, so `syslog = 1` without a logfile daemonizes.
"""

import os
import signal
import subprocess

import harness
from harness import wait_for


def test_quiet_writes_nothing_to_stderr_and_the_warnings_to_the_logfile(sluice):
    pooler = sluice(start=False, extra_ini="pkt_buf = 4096")
    pooler.command = lambda *extra: [str(pooler.binary), "-q", str(pooler.ini_path)]
    pooler.start()
    with pooler.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    line = pooler.line_of("pkt_buf")
    assert f':{line}: PgBouncer key "pkt_buf" is not supported by pgsluice and is ignored' in \
        pooler.logfile.read_text()
    assert pooler.stderr_path.read_text() == ""


def test_daemon_with_syslog_and_no_logfile_starts_in_the_background(sluice):
    pooler = sluice(start=False, logfile=None, syslog=1)
    out = harness.run_binary(["-d", pooler.ini_path], cwd=pooler.workdir)
    assert out.returncode == 0, out.stdout
    assert out.stdout == ""                   # -d: nothing on stderr either
    wait_for(lambda: pooler.pidfile.exists() and pooler.pidfile.read_text().strip(), 10, what="the pidfile")
    pid = int(pooler.pidfile.read_text())
    try:
        wait_for(lambda: harness.port_accepts(pooler.host, pooler.port), 10, what="the daemon listening")
        with pooler.connect() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        os.kill(pid, signal.SIGINT)
    wait_for(lambda: not pooler.pidfile.exists(), 20, what="the daemon to exit")


def test_daemon_without_logfile_or_syslog_refuses_to_start(sluice):
    pooler = sluice(start=False, logfile=None)
    out = harness.run_binary(["-d", pooler.ini_path], cwd=pooler.workdir)
    assert out.returncode == 1
    assert "-d needs pidfile, and logfile or syslog, in the configuration" in out.stdout
