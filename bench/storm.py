#!/usr/bin/python3
# SPDX-License-Identifier: PostgreSQL
"""storm.py - connection storms through pgsluice and PgBouncer side by side
(BENCH_STORM=1 bench/run; issue 13, docs/operations.md).

Same throwaway PostgreSQL and pooler settings as bench.py (max_client_conn = 1000,
pool_mode = transaction, auth_type = md5), then for each pooler in turn:

  burst   BENCH_STORM_LOGINS (6000) logins, BENCH_STORM_INFLIGHT (1200) at a time:
          each connects, logs in (md5), runs SELECT 1 and says Terminate. Counted:
          logins that ran their query, refusals by SQLSTATE, other failures
          (timeouts after BENCH_STORM_TIMEOUT s, resets), wall time.
  after   one login right after the burst: how long it took (target: under 1 s).
  idle    BENCH_STORM_IDLE (2000) sockets that connect and say nothing (each gets
          2 s to connect), then one real login: its result and how long it took.
  fds     the pooler started again under `prlimit --nofile=64:64`, 200 sockets
          opened: its CPU time and log growth from then to 3 s later; then the sockets
          close and a login is tried until one works: how long that took.
  restart PostgreSQL stopped for 3 s while a client keeps logging in and running
          SELECT 1 (a new attempt 50 ms after each failure): the errors it got once
          PostgreSQL accepted connections again, and how long until a query worked.

The clients are one asyncio loop speaking the wire protocol itself (startup,
md5, simple Query), so 1,200 of them in flight cost the benchmark little; the
process's descriptor limit is raised to 4096 (bench.raise_fd_limit). Everything
is on loopback and every wait is bounded. Prints a markdown table on stdout.
"""

import asyncio
import hashlib
import os
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - the helpers of bench/bench.py
from bench import DBNAME, ROLE, Pooler, log, tail  # noqa: E402

PROTOCOL_V3 = 196608
COMMAND = ""


class Refused(Exception):
    def __init__(self, sqlstate, message):
        super().__init__(f"{sqlstate} {message}")
        self.sqlstate = sqlstate


async def read_message(reader):
    head = await reader.readexactly(5)
    kind, length = head[:1], struct.unpack("!I", head[1:])[0]
    return kind, await reader.readexactly(length - 4)


def error_fields(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


async def one_login(port, password, query=True):
    """Log in as ROLE to DBNAME with md5, run SELECT 1, hang up. Raises Refused (an
    ErrorResponse) or OSError / IncompleteReadError / TimeoutError."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        body = struct.pack("!I", PROTOCOL_V3)
        for key, value in (("user", ROLE), ("database", DBNAME)):
            body += key.encode() + b"\0" + value.encode() + b"\0"
        body += b"\0"
        writer.write(struct.pack("!I", len(body) + 4) + body)
        while True:
            kind, body = await read_message(reader)
            if kind == b"E":
                f = error_fields(body)
                raise Refused(f.get("C", "?????"), f.get("M", ""))
            if kind == b"R":
                code = struct.unpack("!I", body[:4])[0]
                if code == 5:
                    inner = hashlib.md5((password + ROLE).encode()).hexdigest()
                    outer = "md5" + hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                    msg = outer.encode() + b"\0"
                    writer.write(b"p" + struct.pack("!I", len(msg) + 4) + msg)
                elif code != 0:
                    raise Refused("-----", f"unexpected authentication request {code}")
            elif kind == b"Z":
                break
        if query:
            sql = b"SELECT 1\0"
            writer.write(b"Q" + struct.pack("!I", len(sql) + 4) + sql)
            while True:
                kind, body = await read_message(reader)
                if kind == b"E":
                    f = error_fields(body)
                    raise Refused(f.get("C", "?????"), f.get("M", ""))
                if kind == b"Z":
                    break
        writer.write(b"X\0\0\0\4")
        await writer.drain()
    finally:
        writer.close()


async def burst(port, password, logins, inflight, timeout):
    """logins attempts, inflight at a time; returns (ok, {failure: count}, seconds)."""
    counts = {"ok": 0}
    left = [logins]

    async def worker():
        while left[0] > 0:
            left[0] -= 1
            try:
                await asyncio.wait_for(one_login(port, password), timeout)
                counts["ok"] += 1
            except Refused as err:
                counts[err.sqlstate] = counts.get(err.sqlstate, 0) + 1
            except asyncio.TimeoutError:
                counts["timeout"] = counts.get("timeout", 0) + 1
            except (OSError, asyncio.IncompleteReadError):
                counts["reset"] = counts.get("reset", 0) + 1
    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return counts.pop("ok"), counts, time.monotonic() - started


async def timed_login(port, password, timeout=30):
    started = time.monotonic()
    try:
        await asyncio.wait_for(one_login(port, password), timeout)
        result = "ok"
    except Refused as err:
        result = err.sqlstate
    except asyncio.TimeoutError:
        result = f"timeout ({timeout} s)"
    except (OSError, asyncio.IncompleteReadError) as err:
        result = type(err).__name__
    return result, time.monotonic() - started


async def idle_then_login(port, password, n_idle):
    """n_idle silent sockets, then one real login; (sockets opened, result, seconds)."""
    socks = []

    async def open_one():
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
            socks.append(w)
        except (OSError, asyncio.TimeoutError):
            pass
    for start in range(0, n_idle, 200):     # in batches: the listen queue is 128 long
        await asyncio.gather(*(open_one() for _ in range(start, min(n_idle, start + 200))))
    await asyncio.sleep(0.5)
    result, seconds = await timed_login(port, password)
    for w in socks:
        w.close()
    return len(socks), result, seconds


FD_LIMIT = 64
FD_SOCKETS = 200


async def fd_exhaustion(pooler, password):
    """(CPU seconds and log bytes from opening the sockets to 3 s later, the login
    result and seconds to it once they are closed)."""
    pid = pooler.proc.pid      # prlimit execs the pooler: the same process
    cpu0, log0 = sum(bench.cpu_seconds(pid)), pooler.logfile.stat().st_size
    socks = []
    for _ in range(FD_SOCKETS):
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", pooler.port), 2)
            socks.append(w)
        except (OSError, asyncio.TimeoutError):
            pass
    await asyncio.sleep(3)
    cpu, grew = sum(bench.cpu_seconds(pid)) - cpu0, pooler.logfile.stat().st_size - log0
    for w in socks:
        w.close()
    started = time.monotonic()
    while time.monotonic() - started < 30:
        result, _ = await timed_login(pooler.port, password, timeout=5)
        if result == "ok":
            break
        await asyncio.sleep(0.05)
    return cpu, grew, result, time.monotonic() - started


def restart(pg, pooler, password):
    """(errors after PostgreSQL was back, seconds from its restart to a working query).
    PostgreSQL is stopped and started from this (the main) thread: bench.spawn ties
    it to the thread that started it (PR_SET_PDEATHSIG)."""
    asyncio.run(timed_login(pooler.port, password))      # the pool has a server
    pg.stop()
    state = {"back": None, "first_ok": None, "errors": {}}

    async def client():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            result, _ = await timed_login(pooler.port, password, timeout=30)
            back = state["back"]
            if result == "ok" and back is not None:
                state["first_ok"] = time.monotonic()
                return
            if result != "ok" and back is not None:
                state["errors"][result] = state["errors"].get(result, 0) + 1
            await asyncio.sleep(0.05)
    thread = threading.Thread(target=lambda: asyncio.run(client()), daemon=True)
    thread.start()
    time.sleep(3)
    pg.start()
    state["back"] = time.monotonic()
    thread.join(90)
    took = state["first_ok"] - state["back"] if state["first_ok"] else None
    return state["errors"], took


def measure(pooler, settings, logins, inflight, timeout, n_idle, pg):
    password = settings.password
    ok, failures, secs = asyncio.run(burst(pooler.port, password, logins, inflight, timeout))
    log(f"bench: {pooler.name}: {ok}/{logins} logins in {secs:.1f} s, failures {failures}")
    after, after_s = asyncio.run(timed_login(pooler.port, password))
    log(f"bench: {pooler.name}: a login after the burst: {after} in {after_s:.2f} s")
    time.sleep(1)
    opened, idle_result, idle_s = asyncio.run(idle_then_login(pooler.port, password, n_idle))
    log(f"bench: {pooler.name}: {opened} idle sockets, then a login: {idle_result} in {idle_s:.2f} s")
    time.sleep(1)
    errors, took = restart(pg, pooler, password)
    log(f"bench: {pooler.name}: PostgreSQL restart: errors after it was back {errors}, "
        f"first query {took if took is None else round(took, 2)} s after it")
    return {"ok": ok, "failures": failures, "secs": secs, "after": after, "after_s": after_s,
            "opened": opened, "idle": idle_result, "idle_s": idle_s,
            "restart_errors": errors, "restart_s": took, "alive": pooler.alive()}


def measure_fds(pooler, settings):
    cpu, grew, fd_result, fd_s = asyncio.run(fd_exhaustion(pooler, settings.password))
    log(f"bench: {pooler.name}: at {FD_LIMIT} fds: {cpu:.2f} s CPU and {grew} log bytes in 3 s; "
        f"then a login: {fd_result} after {fd_s:.2f} s")
    return {"fd_cpu": cpu, "fd_log": grew, "fd_result": fd_result, "fd_s": fd_s}


def report(settings, machine, logins, inflight, n_idle, results, elapsed):
    def failures(r):
        return ", ".join(f"{k}: {v}" for k, v in sorted(r["failures"].items())) or "none"
    lines = [
        "## Connection storm: pgsluice and PgBouncer side by side",
        "",
        f"Command: `{COMMAND}`",
        "",
        *(f"- {key}: {value}" for key, value in machine),
        "",
        f"Settings: max_client_conn={settings.max_client_conn}, pool_mode=transaction, "
        f"default_pool_size={settings.pool_size}, auth_type=md5; {logins} logins "
        f"(connect, md5 login, SELECT 1, Terminate), {inflight} in flight; then {n_idle} "
        f"idle sockets and one login. Total run time {elapsed / 60:.1f} min.",
        "",
        "| pooler | logins ok | failures | burst s | logins/s | login after burst | "
        "idle sockets opened | login with them open |",
        "|---|---:|---|---:|---:|---|---:|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['ok']}/{logins} | {failures(r)} | {r['secs']:.1f} | "
            f"{r['ok'] / r['secs']:.0f} | {r['after']} in {r['after_s']:.2f} s | "
            f"{r['opened']} | {r['idle']} in {r['idle_s']:.2f} s |"
            + ("" if r["alive"] else " (pooler died)"))
    lines += [
        "",
        f"PostgreSQL stopped for 3 s under a client that keeps trying; then the pooler "
        f"started under `prlimit --nofile={FD_LIMIT}:{FD_LIMIT}` with {FD_SOCKETS} sockets opened.",
        "",
        "| pooler | errors after PostgreSQL was back | first query after it | "
        "CPU at the fd limit (3 s) | log bytes meanwhile | login once fds are free |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        errs = ", ".join(f"{k}: {v}" for k, v in sorted(r["restart_errors"].items())) or "none"
        took = "never (60 s)" if r["restart_s"] is None else f"{r['restart_s']:.2f} s"
        lines.append(f"| {name} | {errs} | {took} | {r['fd_cpu']:.2f} s | {r['fd_log']} | "
                     f"{r['fd_result']} after {r['fd_s']:.2f} s |")
    return "\n".join(lines) + "\n"


def main():
    global COMMAND
    COMMAND = bench.user_command()
    os.environ.setdefault("BENCH_SCALE", "1")         # pgbench tables are not used here
    os.environ.setdefault("BENCH_AUTH", "md5")
    settings = bench.Settings()
    if settings.auth != "md5":
        sys.exit("bench: BENCH_STORM=1 logs in with md5 only: unset BENCH_AUTH")
    logins = bench.env_int("BENCH_STORM_LOGINS", 6000)
    inflight = bench.env_int("BENCH_STORM_INFLIGHT", 1200)
    timeout = bench.env_int("BENCH_STORM_TIMEOUT", 30)
    n_idle = bench.env_int("BENCH_STORM_IDLE", 2000)

    def body(account, tmp, logdir, started):
        pg = bench.start_postgres(settings, tmp, account,
                                  max_conn=4 * settings.pool_size + 20)
        poolers = {
            "pgbouncer": Pooler("pgbouncer", settings.pgbouncer, tmp / "pgbouncer", account,
                                settings, pg, settings.password),
            "pgsluice": Pooler("pgsluice", settings.pgsluice_copy, tmp / "pgsluice", None,
                               settings, pg, settings.password),
        }
        machine = bench.machine_description(settings, pg)
        results = {}
        limited = ["prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", "--"]
        for name, pooler in poolers.items():
            low = Pooler(name, pooler.binary, tmp / f"{name}-fds", pooler.account, settings, pg,
                         settings.password, wrapper=limited)
            for p, run in ((pooler, lambda p: measure(p, settings, logins, inflight, timeout,
                                                      n_idle, pg)),
                           (low, lambda p: measure_fds(p, settings))):
                p.start()
                log(f"bench: {name} on port {p.port}")
                try:
                    results.setdefault(name, {}).update(run(p))
                finally:
                    if not p.alive():
                        log(f"bench: {name} died:\n{tail(p.logfile, 20)}")
                        results[name]["alive"] = False
                    p.stop()
                time.sleep(2)
        text = report(settings, machine, logins, inflight, n_idle, results,
                      time.monotonic() - started)
        print(text, end="", flush=True)
        if settings.out:
            Path(settings.out).write_text(text)
        return 0

    return bench.run_in_workspace(settings, "pgsluice-storm-", body,
                                  {"pgsluice": settings.pgsluice, "PgBouncer": settings.pgbouncer})


if __name__ == "__main__":
    sys.exit(main())
