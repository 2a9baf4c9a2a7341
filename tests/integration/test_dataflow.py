# SPDX-License-Identifier: PostgreSQL
"""The data path's own buffers (src/iobuf.c, src/connio.c): a client that
reads slowly is not buffered without bound. (A client that hangs up while it
waits for a server: test_storm.py.)"""

import socket
import time

import pytest

import harness
import pgwire

MB = 1024 * 1024


def rss_bytes(pid):
    return harness.rss_bytes(pid)


@pytest.mark.serial     # an RSS bound: alone (conftest.py)
def test_slow_reader_does_not_grow_memory_while_server_streams_500_mb(sluice):
    pooler = sluice(pool_mode="transaction")
    sess = pgwire.login(pooler.host, pooler.port, "app", "app", password="app_pw", timeout=60)
    sess.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    pid = pooler.proc.pid
    before = rss_bytes(pid)
    rows, width = 500_000, 1000          # 500 MB of DataRows
    sess.send(b"Q", f"select repeat('x', {width}) from generate_series(1, {rows})\0".encode())
    # Read nothing for a while: the server keeps producing, pgsluice must stop reading it.
    peak = before
    for _ in range(20):
        time.sleep(0.1)
        peak = max(peak, rss_bytes(pid))
    # Then read it all, slowly at first, sampling pgsluice's memory.
    total = 0
    buf = bytearray(1024 * 1024)
    deadline = time.monotonic() + 240
    tail = b""
    sess.sock.settimeout(30)
    while time.monotonic() < deadline:
        n = sess.sock.recv_into(buf)
        assert n > 0, "pgsluice closed the connection"
        total += n
        tail = (tail + bytes(buf[:n]))[-64:]
        if total < 8 * MB:
            time.sleep(0.01)               # a slow start: the output stays full
        if total % (16 * MB) < n:
            peak = max(peak, rss_bytes(pid))
        if tail.endswith(b"Z\x00\x00\x00\x05I"):
            break
    assert total >= rows * width, total
    assert b"SELECT 500000" in tail or total > rows * width
    # 500 MB went through; pgsluice held at most a few relay windows of it.
    assert peak - before < 48 * MB, f"RSS grew by {(peak - before) / MB:.1f} MB"
    assert sess.query("select 1")
    sess.close()
