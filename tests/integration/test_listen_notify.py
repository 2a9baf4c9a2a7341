# SPDX-License-Identifier: PostgreSQL
"""LISTEN/NOTIFY under transaction pooling (issue 16, item 1; docs/pooling.md).

pgsluice answers a client's LISTEN/UNLISTEN itself, runs the real LISTENs on
one listening connection per pool (application_name pgsluice-listen) and
delivers its notifications to the clients listening on each channel, between
their transactions. Session pooling relays LISTEN as before.
"""

import os
import shutil
import subprocess
import threading
import time
import urllib.request

import psycopg
import pytest

import harness
from test_client_node import KIT as KIT_NODE, node_modules  # noqa: F401 (fixture: npm ci of the kit)
import pgwire

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="pgsluice's own relay")

LISTEN_APP = "pgsluice-listen"


def tx_pooler(sluice, **overrides):
    settings = dict(pool_mode="transaction", default_pool_size=2)
    settings.update(overrides)
    return sluice(**settings)


class Collector:
    """A psycopg connection's notifications and notices, read by polling it with a query."""

    def __init__(self, conn):
        self.conn = conn
        self.notes = []
        self.notices = []
        conn.add_notify_handler(self.notes.append)
        # a Diagnostic is valid only during the callback: keep its fields
        conn.add_notice_handler(lambda d: self.notices.append(
            {"severity": d.severity, "sqlstate": d.sqlstate, "message": d.message_primary or ""}))

    def payloads(self, channel=None):
        return [n.payload for n in self.notes if channel is None or n.channel == channel]

    def wait(self, pred, timeout=10, what="notifications"):
        def poll():
            self.conn.execute("SELECT 1")
            return pred()
        return harness.wait_until(poll, timeout, what)


def listening_backends(pg):
    return pg.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    (LISTEN_APP,))[0][0]


def test_listener_gets_every_notify_while_running_transactions(sluice, pg):
    pooler = tx_pooler(sluice)
    with pooler.connect() as lc, pooler.connect() as nc, pooler.connect() as other:
        listener = Collector(lc)
        bystander = Collector(other)
        lc.execute("LISTEN jobs")
        for i in range(1000):
            nc.execute(f"NOTIFY jobs, '{i}'")
            if i % 10 == 0:
                # the listener's own transactions, on whatever server is free
                with lc.transaction():
                    assert lc.execute("SELECT %s::int", (i,)).fetchone()[0] == i
                other.execute("SELECT 1")
        listener.wait(lambda: len(listener.notes) >= 1000, what="1000 notifications")
        assert listener.payloads("jobs") == [str(i) for i in range(1000)]
        other.execute("SELECT 1")
        assert bystander.notes == []    # it never listened
        assert listening_backends(pg) == 1


def test_listen_takes_effect_at_commit_only(sluice):
    pooler = tx_pooler(sluice)
    with pooler.connect() as lc, pooler.connect() as nc:
        col = Collector(lc)
        lc.execute("LISTEN marker")
        with pytest.raises(psycopg.errors.ProgrammingError):
            # psycopg's rollback() of a block it opened; LISTEN inside is undone
            with lc.transaction():
                assert lc.execute("LISTEN rolled").statusmessage == "LISTEN"
                raise psycopg.errors.ProgrammingError("roll back")
        with lc.transaction():
            assert lc.execute("LISTEN committed").statusmessage == "LISTEN"
        nc.execute("NOTIFY rolled, 'r'")
        nc.execute("NOTIFY committed, 'c'")
        nc.execute("NOTIFY marker, 'm'")
        col.wait(lambda: "m" in col.payloads())
        assert col.payloads() == ["c", "m"]


def test_listen_in_aborted_transaction_fails_like_postgresql(sluice):
    pooler = tx_pooler(sluice)
    with pooler.connect(autocommit=False) as lc, pooler.connect() as nc:
        col = Collector(lc)
        with pytest.raises(psycopg.errors.DivisionByZero):
            lc.execute("SELECT 1/0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            lc.execute("LISTEN aborted")
        lc.rollback()
        lc.execute("LISTEN marker")
        lc.commit()
        nc.execute("NOTIFY aborted, 'a'")
        nc.execute("NOTIFY marker, 'm'")
        col.wait(lambda: "m" in col.payloads())
        assert col.payloads() == ["m"]


def test_unlisten_star_and_unlisten_stop_delivery(sluice):
    pooler = tx_pooler(sluice)
    with pooler.connect() as lc, pooler.connect() as nc:
        col = Collector(lc)
        for ch in ("a", "b", "c"):
            lc.execute(f"LISTEN {ch}")
        assert lc.execute("UNLISTEN a").statusmessage == "UNLISTEN"
        nc.execute("NOTIFY a, '1'; NOTIFY b, '2'; NOTIFY c, '3'")
        col.wait(lambda: len(col.notes) >= 2)
        assert [(n.channel, n.payload) for n in col.notes] == [("b", "2"), ("c", "3")]
        assert lc.execute("UNLISTEN *").statusmessage == "UNLISTEN"
        lc.execute("LISTEN marker")
        nc.execute("NOTIFY b, '4'; NOTIFY c, '5'; NOTIFY marker, 'm'")
        col.wait(lambda: "m" in col.payloads())
        assert col.payloads() == ["2", "3", "m"]


def test_listening_connection_closes_with_last_listener(sluice, pg):
    pooler = tx_pooler(sluice)
    with pooler.connect() as a, pooler.connect() as b:
        a.execute("LISTEN x")
        b.execute("LISTEN x")
        harness.wait_until(lambda: listening_backends(pg) == 1, 10, "one listening connection")
        a.execute("UNLISTEN *")
        assert listening_backends(pg) == 1      # b still listens
    # b's disconnect was its last channel
    harness.wait_until(lambda: listening_backends(pg) == 0, 10, "listening connection closed")


def test_channel_names_follow_identifier_rules(sluice):
    pooler = tx_pooler(sluice)
    long_name = "c" * 70
    with pooler.connect() as lc, pooler.connect() as nc:
        col = Collector(lc)
        lc.execute('LISTEN "MixedCase"')
        lc.execute("LISTEN Folded")
        lc.execute('LISTEN "with""quote"')
        lc.execute(f"LISTEN {long_name}")
        lc.execute("/* app='x' */ LISTEN commented -- trailing\n;")
        for ch, payload in (("MixedCase", "1"), ("mixedcase", "no"), ("folded", "2"), ("Folded", "no"),
                            ('with"quote', "3"), ("c" * 63, "4"), ("commented", "5")):
            nc.execute("SELECT pg_notify(%s, %s)", (ch, payload))
        nc.execute("NOTIFY marker, 'm'")
        lc.execute("LISTEN marker")
        nc.execute("NOTIFY marker, 'm'")
        col.wait(lambda: "m" in col.payloads())
        assert col.payloads() == ["1", "2", "3", "4", "5", "m"]
        assert {n.channel for n in col.notes} == {"MixedCase", "folded", 'with"quote', "c" * 63,
                                                  "commented", "marker"}


def test_listen_with_other_statements_is_refused(sluice):
    pooler = tx_pooler(sluice)
    with pooler.connect() as lc:
        # psycopg: the extended protocol
        with pytest.raises(psycopg.errors.FeatureNotSupported) as exc:
            lc.execute("LISTEN a; SELECT 1")
        assert "LISTEN and UNLISTEN must be sent alone" in str(exc.value)
        assert lc.execute("SELECT 1").fetchone()[0] == 1
    with pgwire.login(pooler.host, pooler.port, "app", "app", password=harness.APP_PASSWORD) as sess:
        with pytest.raises(pgwire.ServerError) as err:
            sess.query("LISTEN a; SELECT 1")
        assert err.value.fields["sqlstate"] == "0A000"
        assert sess.query("SELECT 2") == [["2"]]


def test_simple_protocol_listen(sluice):
    """node-postgres and psql send LISTEN as a simple Query."""
    pooler = tx_pooler(sluice)
    with pgwire.login(pooler.host, pooler.port, "app", "app", password=harness.APP_PASSWORD) as sess, \
            pooler.connect() as nc:
        sess.send(b"Q", b"LISTEN simple\0")
        msgs = sess.read_until_ready()
        assert msgs == [("C", b"LISTEN\0")]
        nc.execute("NOTIFY simple, 'hello'")
        t, body = sess.read(timeout=10)
        assert t == "A"
        assert body[4:] == b"simple\0hello\0"


def test_psycopg_notifies_generator(sluice):
    pooler = tx_pooler(sluice)
    got = []
    with pooler.connect() as lc, pooler.connect() as nc:
        lc.execute("LISTEN gen")

        def consume():
            for n in lc.notifies():
                got.append(n.payload)
                if len(got) == 3:
                    break
        th = threading.Thread(target=consume, daemon=True)
        th.start()
        for i in range(3):
            nc.execute("SELECT pg_notify('gen', %s)", (str(i),))
        th.join(10)
        assert got == ["0", "1", "2"]


def _rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.serial     # an RSS bound: alone (conftest.py)
def test_client_that_never_reads_is_bounded(sluice):
    mport = harness.free_port()
    pooler = tx_pooler(sluice, notify_queue_size=50, metrics_listen_addr="127.0.0.1",
                       metrics_listen_port=mport)
    sess = pgwire.login(pooler.host, pooler.port, "app", "app", password=harness.APP_PASSWORD)
    sess.send(b"Q", b"LISTEN flood\0")
    assert sess.read_until_ready() == [("C", b"LISTEN\0")]
    payload = "x" * 7000
    with pooler.connect() as nc:
        nc.execute("SELECT pg_notify('flood', 'warmup')")
        rss_before = _rss_kb(pooler.pid)
        # 6000 x 7 kB = 42 MB of notifications the client does not read, several
        # times what the kernel's socket buffers take
        t0 = time.monotonic()
        for _ in range(60):
            # distinct payloads: PostgreSQL folds identical ones of one transaction
            nc.execute("SELECT pg_notify('flood', %s || g) FROM generate_series(1, 100) g", (payload,))
        nc.execute("SELECT pg_notify('flood', 'last')")
        harness.wait_until(lambda: _metric(mport, "pgsluice_notifications_dropped_total") > 2000, 20,
                           "notifications dropped")
        rss_after = _rss_kb(pooler.pid)
        print(f"flood took {time.monotonic() - t0:.1f} s, RSS {rss_before} -> {rss_after} kB")
    if not harness.sanitized_build():   # ASan keeps freed memory in quarantine
        assert rss_after - rss_before < 8 * 1024, (rss_before, rss_after)   # bound: ~256 kB output + 50 held
    # now it reads: a bounded tail of notifications and the NOTICE saying how many were dropped
    notices, payloads = [], []
    deadline = time.monotonic() + 15
    while "last" not in payloads:
        assert time.monotonic() < deadline, (len(payloads), payloads[-3:], notices)
        try:
            t, body = sess.read(timeout=5)
        except TimeoutError:
            raise AssertionError((len(payloads), payloads[-3:], notices))
        if t == "N":
            notices.append(pgwire._parse_fields(body))
        elif t == "A":
            payloads.append(body[4:].split(b"\0")[1].decode()[-8:])
    assert len(payloads) < 4000
    print(f"read {len(payloads)} notifications")
    assert any(n["sqlstate"] == "01000" and n["message"].endswith("notifications were dropped") for n in notices)
    sess.close()


def test_listening_connection_killed(sluice, pg):
    pooler = tx_pooler(sluice)
    with pooler.connect() as lc, pooler.connect() as nc:
        col = Collector(lc)
        lc.execute("LISTEN survive")
        nc.execute("NOTIFY survive, 'before'")
        col.wait(lambda: "before" in col.payloads())
        killed = pg.query("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                          "WHERE application_name = %s", (LISTEN_APP,))[0][0]
        assert killed == 1
        col.wait(lambda: any(n["message"] == "notifications may have been missed" for n in col.notices),
                 what="the NOTICE")
        notice = [n for n in col.notices if n["message"] == "notifications may have been missed"][0]
        assert notice["sqlstate"] == "01000" and notice["severity"] == "WARNING"
        n = [0]

        def after_arrives():
            n[0] += 1
            nc.execute("SELECT pg_notify('survive', %s)", (f"after{n[0]}",))
            time.sleep(0.05)
            lc.execute("SELECT 1")
            return any(p.startswith("after") for p in col.payloads())
        harness.wait_until(after_arrives, 15, "a notification after the reconnect")


def test_session_pooling_relays_as_before(sluice, pg):
    pooler = sluice(pool_mode="session")
    with pooler.connect() as lc, pooler.connect() as nc:
        col = Collector(lc)
        lc.execute("LISTEN sess")
        nc.execute("NOTIFY sess, 's'")
        col.wait(lambda: "s" in col.payloads())
        assert listening_backends(pg) == 0   # the client's own server listens


NODE_SCRIPT = r"""
const { Client } = require('pg');
(async () => {
  const listener = new Client({ connectionString: process.env.DATABASE_URL });
  const sender = new Client({ connectionString: process.env.DATABASE_URL });
  await listener.connect(); await sender.connect();
  const got = [];
  const done = new Promise((resolve) => listener.on('notification', (m) => {
    got.push(m.channel + ':' + m.payload);
    if (got.length === 3) resolve();
  }));
  const res = await listener.query('LISTEN nodech');
  if (res.command !== 'LISTEN') throw new Error('tag ' + res.command);
  for (let i = 0; i < 3; i++) {
    await sender.query("SELECT pg_notify('nodech', $1)", [String(i)]);
    await listener.query('BEGIN'); await listener.query('SELECT 1'); await listener.query('COMMIT');
  }
  const timer = setTimeout(() => { console.log('timeout ' + JSON.stringify(got)); process.exit(2); }, 10000);
  await done; clearTimeout(timer);
  console.log(JSON.stringify(got));
  await listener.end(); await sender.end();
})().catch((e) => { console.log('error ' + e.message); process.exit(1); });
"""


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_node_postgres_notification_event(sluice, node_modules):  # noqa: F811
    pooler = tx_pooler(sluice)
    url = f"postgresql://app:{harness.PASSWORDS['app']}@127.0.0.1:{pooler.port}/app"
    out = subprocess.run(["node", "-e", NODE_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=60,
                         env=dict(os.environ, DATABASE_URL=url, NODE_PATH=str(KIT_NODE / "node_modules")))
    assert out.returncode == 0, out.stdout
    assert out.stdout.strip().splitlines()[-1] == '["nodech:0","nodech:1","nodech:2"]'


def test_listen_does_not_hang_when_listening_connection_cannot_log_in(sluice, pg):
    """auth_file holds only app's SCRAM secret: pool servers log in by SCRAM
    pass-through, the listening connection (libpq) has no password. LISTEN is
    answered at once, the failure is logged, nothing else breaks."""
    secret = pg.query("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")[0][0]
    assert secret.startswith("SCRAM-SHA-256$")
    pooler = tx_pooler(sluice, start=False)
    write = pooler.write_config

    def write_secret():
        text = write()
        pooler.userlist_path.write_text(f'"app" "{secret}"\n')
        return text
    pooler.write_config = write_secret
    pooler.start()
    with pooler.connect() as lc:
        t0 = time.monotonic()
        assert lc.execute("LISTEN nopw").statusmessage == "LISTEN"
        assert lc.execute("SELECT 1").fetchone()[0] == 1
        assert time.monotonic() - t0 < 20    # not held by the failing connection (the test timeout is 30 s)
        harness.wait_until(lambda: "listening connection" in pooler.log_text(200) and
                           "listen app/app" in pooler.log_text(200), 10, "the failure logged")


def test_listening_connection_logs_in_as_auth_user_for_a_role_without_a_plain_password(sluice, pg, monkeypatch):
    """A role known through auth_query has no password libpq could use (the
    pool's servers log in by SCRAM pass-through): the listening connection logs
    in as auth_user instead, whose plain password is in auth_file, and the
    role's clients get their notifications."""
    pg.query("DROP ROLE IF EXISTS ln_role")
    pg.query("DROP ROLE IF EXISTS ln_lookup")
    pg.query("CREATE ROLE ln_lookup LOGIN SUPERUSER PASSWORD 'ln_lookup_pw'")
    pg.query("CREATE ROLE ln_role LOGIN PASSWORD 'ln_pw'")
    pg.query("GRANT ALL ON DATABASE app TO ln_role")
    monkeypatch.setitem(harness.PASSWORDS, "ln_lookup", "ln_lookup_pw")
    pooler = tx_pooler(sluice, auth_type="scram-sha-256", auth_user="ln_lookup")
    with pooler.connect(user="ln_role", password="ln_pw") as lc, \
            pooler.connect(user="ln_role", password="ln_pw") as nc:
        assert lc.execute("SELECT current_user").fetchone()[0] == "ln_role"
        listener = Collector(lc)
        lc.execute("LISTEN ln_jobs")
        nc.execute("NOTIFY ln_jobs, 'one'")
        listener.wait(lambda: listener.payloads("ln_jobs") == ["one"], what="the notification")
        nc.execute("SELECT pg_notify('ln_jobs', 'two')")
        listener.wait(lambda: listener.payloads("ln_jobs") == ["one", "two"], what="the second notification")
        assert pg.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND usename = %s",
                        (LISTEN_APP, "ln_lookup"))[0][0] == 1
        assert [n["message"] for n in listener.notices] == []
    assert "listening as auth_user \"ln_lookup\"" in pooler.log_text(200)


def test_statement_pooling_relays_too(sluice, pg):
    pooler = sluice(pool_mode="statement", default_pool_size=1)
    with pooler.connect() as lc, pooler.connect() as nc:
        col = Collector(lc)
        assert lc.execute("LISTEN stmt").statusmessage == "LISTEN"
        for i in range(5):
            nc.execute("SELECT pg_notify('stmt', %s)", (str(i),))
        col.wait(lambda: len(col.notes) >= 5)
        assert col.payloads() == ["0", "1", "2", "3", "4"]
        assert listening_backends(pg) == 1
