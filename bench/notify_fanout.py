#!/usr/bin/env python3
# SPDX-License-Identifier: PostgreSQL
"""bench/notify_fanout.py - LISTEN/NOTIFY fan-out: 1 NOTIFY to N listeners.

Through pgsluice under transaction pooling (default_pool_size 2: the
listeners hold no server; pgsluice's one listening connection gets the
notification and writes it to every listening client) and directly to
PostgreSQL (N listening backends). Reported: the time from sending the NOTIFY
until the last listener has read its NotificationResponse, median and max of
BENCH_ROUNDS rounds. Method and results: docs/performance.md.

    PGSLUICE_BUILDDIR=build /usr/bin/python3 bench/notify_fanout.py

Knobs: BENCH_LISTENERS=1000, BENCH_ROUNDS=20. Uses the integration harness
(tests/integration/harness.py) for a throwaway PostgreSQL and pgsluice.
"""

import os
import selectors
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import harness  # noqa: E402
import pgwire  # noqa: E402

LISTENERS = int(os.environ.get("BENCH_LISTENERS", "1000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "20"))


def connect_all(host, port, user, password, n):
    sessions = []
    for _ in range(n):
        s = pgwire.login(host, port, user, "app", password=password, timeout=30)
        s.query("LISTEN fanout")
        s.sock.setblocking(False)
        sessions.append(s)
    return sessions


def one_round(sender, sessions, payload):
    sel = selectors.DefaultSelector()
    bufs = {}
    for s in sessions:
        sel.register(s.sock, selectors.EVENT_READ, s)
        bufs[s] = s._buf
        s._buf = b""
    left = set(sessions)
    t0 = time.perf_counter()
    sender.query(f"NOTIFY fanout, '{payload}'")
    last = t0
    deadline = t0 + 30
    while left:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{len(left)} listeners got nothing within 30 s")
        for key, _ in sel.select(timeout=1):
            s = key.data
            try:
                chunk = s.sock.recv(65536)
            except BlockingIOError:
                continue
            bufs[s] += chunk
            b = bufs[s]
            while len(b) >= 5:
                length = struct.unpack("!I", b[1:5])[0]
                if len(b) < 1 + length:
                    break
                if b[0:1] == b"A" and s in left:
                    left.discard(s)
                    last = time.perf_counter()
                b = b[1 + length:]
            bufs[s] = b
    sel.close()
    return (last - t0) * 1000.0


def measure(name, host, port, user, password, sender):
    print(f"{name}: logging in {LISTENERS} listeners...", file=sys.stderr)
    sessions = connect_all(host, port, user, password, LISTENERS)
    times = [one_round(sender, sessions, f"r{i}") for i in range(ROUNDS)]
    for s in sessions:
        s.sock.setblocking(True)
        s.close()
    return times


def main():
    pg = harness.PostgresServer()
    pg.init()
    try:
        with open(pg.datadir / "postgresql.conf", "a") as conf:
            conf.write(f"max_connections = {LISTENERS + 50}\n")
        pg.stop()
        pg.start()
        work = tempfile.mkdtemp(prefix="bench-notify-")
        os.chmod(work, 0o755)
        pooler = harness.Pooler(pg, work, overrides={
            "pool_mode": "transaction", "default_pool_size": 2, "max_client_conn": LISTENERS + 50,
            "auth_type": "trust", "log_connections": 0, "log_disconnections": 0})
        pooler.start()
        try:
            sender = pgwire.login(pooler.host, pooler.port, "app", "app", timeout=30)
            via = measure("pgsluice", pooler.host, pooler.port, "app", None, sender)
            sender.close()
        finally:
            pooler.stop()
        sender = pgwire.login(pg.host, pg.port, "trust_user", "app", timeout=30)
        direct = measure("direct", pg.host, pg.port, "trust_user", None, sender)
        sender.close()
    finally:
        pg.destroy()
    print(f"1 NOTIFY to {LISTENERS} listeners, {ROUNDS} rounds: ms until the last listener read it\n")
    print("| target | median ms | max ms |")
    print("|---|---:|---:|")
    for name, t in (("pgsluice (transaction pooling, pool_size 2)", via), ("PostgreSQL directly", direct)):
        print(f"| {name} | {statistics.median(t):.2f} | {max(t):.2f} |")


if __name__ == "__main__":
    main()
