# SPDX-License-Identifier: PostgreSQL
"""Rolling restart with so_reuseport (issue 12 item 4, docs/migrating-from-pgbouncer.md).

PgBouncer's replacement for its deprecated online restart (-R): start a
second process on the same port with `so_reuseport = 1`, then SIGTERM the
first. The first closes its TCP listener at once, so the kernel hands every
new connection to the second, and it keeps serving its own clients until
they disconnect: a transaction open across the takeover commits.
"""

import signal
import threading

from harness import wait_for


def test_a_second_process_takes_the_port_while_the_first_drains(sluice, pg):
    pg.query("drop table if exists rolling_restart")
    pg.query("create table rolling_restart (v int)")
    pg.query("alter table rolling_restart owner to app")
    old = sluice(so_reuseport=1)
    with old.connect() as before:
        # connected before the takeover, and in a transaction across it
        before.execute("begin")
        before.execute("insert into rolling_restart values (1)")
        old_pid = before.execute("select pg_backend_pid()").fetchone()[0]

        new = sluice(start=False, so_reuseport=1)
        new.port = old.port               # the same TCP port; each keeps its own unix_socket_dir
        new.start()
        wait_for(lambda: " started, process " in new.log_text(), 10, what="the second process listening")

        stopped = {}
        stopper = threading.Thread(target=lambda: stopped.update(problems=old.stop(signal.SIGTERM)))
        stopper.start()
        wait_for(lambda: "got SIGTERM" in old.log_text(), 10, what="the first process draining")

        # every new connection now reaches the second process
        for i in range(5):
            with new.connect(application_name=f"after{i}") as after:
                after.execute("insert into rolling_restart values (%s)", (10 + i,))
        assert old.logfile.read_text().count("login attempt") == 1     # "before" only
        assert new.logfile.read_text().count("login attempt") == 5
        assert stopper.is_alive(), "the first process must wait for its client"

        before.execute("insert into rolling_restart values (2)")
        assert before.execute("select pg_backend_pid()").fetchone()[0] == old_pid
        before.execute("commit")

    stopper.join(timeout=20)
    assert not stopper.is_alive(), "the first process did not exit once its client left"
    assert stopped["problems"] == []
    assert old.proc.returncode == 0
    rows = [r[0] for r in pg.query("select v from rolling_restart order by v")]
    assert rows == [1, 2, 10, 11, 12, 13, 14]
    with new.connect() as conn:                # the second process still serves
        assert conn.execute("select count(*) from rolling_restart").fetchone() == (7,)
