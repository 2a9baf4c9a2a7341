# SPDX-License-Identifier: PostgreSQL
"""systemd's notify protocol (contrib/pgsluice.service, Type=notify-reload).

pgsluice built with libsystemd sends READY=1 once it accepts connections,
RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a SIGHUP reload, and
STOPPING=1 on shutdown. The test plays systemd: a datagram socket named by
NOTIFY_SOCKET, as sd_notify(3) describes.
"""

import os
import signal
import socket
import subprocess
import time

import pytest

import harness


def linked_with_libsystemd():
    out = subprocess.run(["ldd", str(harness.pooler_binary())], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    return "libsystemd" in out.stdout


pytestmark = pytest.mark.skipif(not linked_with_libsystemd(),
                                reason="pgsluice built without libsystemd (configure --with-systemd)")


def receive_until(sock, wanted, timeout=10):
    """Datagrams received until one holds the line wanted; returns them all."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            break
        got.append(msg)
        if wanted in msg.splitlines():
            return got
    raise AssertionError(f"no {wanted} within {timeout} s; received {got}")


def test_ready_reloading_stopping(sluice, tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o777)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    try:
        pooler = sluice()
        receive_until(sock, "READY=1")
        with pooler.connect() as conn:
            assert conn.execute("select 1").fetchone() == (1,)

        before = time.clock_gettime(time.CLOCK_MONOTONIC)
        pooler.reload(default_pool_size=7)
        got = receive_until(sock, "READY=1")
        reloading = [m for m in got if "RELOADING=1" in m.splitlines()]
        assert reloading, got
        fields = dict(line.split("=", 1) for line in reloading[0].splitlines() if "=" in line)
        # MONOTONIC_USEC is CLOCK_MONOTONIC, which systemd compares with its own
        assert abs(int(fields["MONOTONIC_USEC"]) / 1e6 - before) < 60, fields

        assert pooler.stop(signal.SIGTERM) == []
        receive_until(sock, "STOPPING=1")   # queued in the socket while it stopped
    finally:
        sock.close()
