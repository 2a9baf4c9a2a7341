#!/usr/bin/python3
"""memory.py - resident memory of pgsluice and PgBouncer side by side with many
clients (BENCH_MEMORY=1 bench/run; issue 13 item 8, docs/operations.md).

Same throwaway PostgreSQL and pooler settings as bench.py (pool_mode =
transaction, auth_type = md5, default_pool_size = BENCH_POOL_SIZE), with
max_client_conn raised to fit; then for each pooler in turn, VmRSS from
/proc/<pid>/status:

  start   after one login (the pool has its first server)
  idle    with BENCH_MEMORY_IDLE (10000) clients logged in and idle (in
          batches of 200; each connects, logs in and waits): RSS and the
          growth per idle client
  active  with BENCH_MEMORY_ACTIVE (1000) clients logged in, each sending
          SELECT 1 in a loop for BENCH_SECONDS (10): the highest RSS sampled
          every 0.2 s, and the queries answered

The clients are one asyncio loop speaking the wire protocol (bench/storm.py's
md5 login), so 10,000 of them cost the benchmark little. Each needs a socket
here and one in the pooler: the descriptor limit is raised to the hard limit,
and when BENCH_MEMORY_IDLE does not fit under it, the largest count that does
is used and the report says so. Loopback only; every wait is bounded.
"""

import asyncio
import os
import resource
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - the helpers of bench/bench.py
from bench import DBNAME, ROLE, Pooler, log, tail  # noqa: E402
from storm import PROTOCOL_V3, Refused, error_fields, read_message  # noqa: E402

import hashlib  # noqa: E402

COMMAND = ""
FD_SPARE = 200          # descriptors kept free for PostgreSQL links, logs, the listener


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def login(port, password):
    """A logged-in md5 session: (reader, writer) after ReadyForQuery."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = struct.pack("!I", PROTOCOL_V3)
    for key, value in (("user", ROLE), ("database", DBNAME)):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    writer.write(struct.pack("!I", len(body) + 4) + body)
    while True:
        kind, body = await read_message(reader)
        if kind == b"E":
            f = error_fields(body)
            writer.close()
            raise Refused(f.get("C", "?????"), f.get("M", ""))
        if kind == b"R" and struct.unpack("!I", body[:4])[0] == 5:
            inner = hashlib.md5((password + ROLE).encode()).hexdigest()
            outer = "md5" + hashlib.md5(inner.encode() + body[4:8]).hexdigest()
            msg = outer.encode() + b"\0"
            writer.write(b"p" + struct.pack("!I", len(msg) + 4) + msg)
        elif kind == b"Z":
            return reader, writer


async def select_1(reader, writer):
    sql = b"SELECT 1\0"
    writer.write(b"Q" + struct.pack("!I", len(sql) + 4) + sql)
    while True:
        kind, body = await read_message(reader)
        if kind == b"E":
            f = error_fields(body)
            raise Refused(f.get("C", "?????"), f.get("M", ""))
        if kind == b"Z":
            return


async def open_sessions(port, password, n, timeout=30):
    """Up to n logged-in sessions, 200 at a time; (sessions, failures by kind)."""
    sessions, failures = [], {}

    async def one():
        try:
            sessions.append(await asyncio.wait_for(login(port, password), timeout))
        except Refused as err:
            failures[err.sqlstate] = failures.get(err.sqlstate, 0) + 1
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as err:
            failures[type(err).__name__] = failures.get(type(err).__name__, 0) + 1
    for start in range(0, n, 200):
        await asyncio.gather(*(one() for _ in range(start, min(n, start + 200))))
    return sessions, failures


def close_sessions(sessions):
    for _, writer in sessions:
        try:
            writer.write(b"X\0\0\0\4")
            writer.close()
        except (OSError, RuntimeError):
            pass


async def idle_phase(pooler, password, n):
    pid = pooler.proc.pid
    first, _ = await open_sessions(pooler.port, password, 1)
    await select_1(*first[0])                     # the pool has a server
    await asyncio.sleep(0.5)
    start = rss_kib(pid)
    sessions, failures = await open_sessions(pooler.port, password, n)
    await asyncio.sleep(2)
    idle = rss_kib(pid)
    close_sessions(sessions + first)
    await asyncio.sleep(1)
    return {"start": start, "idle": idle, "idle_n": len(sessions), "idle_failures": failures}


async def active_phase(pooler, password, n, seconds):
    pid = pooler.proc.pid
    sessions, failures = await open_sessions(pooler.port, password, n)
    answered = [0]
    errors = {}
    deadline = time.monotonic() + seconds

    async def loop(reader, writer):
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(select_1(reader, writer), 30)
                answered[0] += 1
            except Refused as err:
                errors[err.sqlstate] = errors.get(err.sqlstate, 0) + 1
                return
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as err:
                errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
                return

    peak = [0]

    async def sample():
        while time.monotonic() < deadline:
            peak[0] = max(peak[0], rss_kib(pid))
            await asyncio.sleep(0.2)
    await asyncio.gather(sample(), *(loop(r, w) for r, w in sessions))
    close_sessions(sessions)
    await asyncio.sleep(1)
    failures.update(errors)
    return {"active_peak": peak[0], "active_n": len(sessions), "answered": answered[0],
            "active_failures": failures}


def fitting_clients(wanted):
    """The client count this process can hold sockets for (limit raised to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft == resource.RLIM_INFINITY:
        return wanted, None
    return min(wanted, soft - FD_SPARE), soft


def report(settings, machine, wanted_idle, n_idle, fd_limit, n_active, seconds, results, elapsed):
    def fails(d):
        return ", ".join(f"{k}: {v}" for k, v in sorted(d.items())) or "none"
    lines = [
        "## Memory: pgsluice and PgBouncer side by side",
        "",
        f"Command: `{COMMAND}`",
        "",
        *(f"- {key}: {value}" for key, value in machine),
        "",
        f"Settings: pool_mode=transaction, default_pool_size={settings.pool_size}, "
        f"auth_type=md5, max_client_conn={settings.max_client_conn}. RSS is VmRSS of the "
        f"pooler process. Total run time {elapsed / 60:.1f} min.",
    ]
    if n_idle < wanted_idle:
        lines += ["", f"Only {n_idle} idle clients: {wanted_idle} sockets here plus the "
                      f"pooler's do not fit under this machine's descriptor limit ({fd_limit})."]
    lines += [
        "",
        "| pooler | RSS at start | idle clients | RSS with them | per idle client | "
        "active clients | peak RSS with them | SELECT 1 answered | failures |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        per = (r["idle"] - r["start"]) * 1024 / max(r["idle_n"], 1)
        lines.append(
            f"| {name} | {r['start'] / 1024:.1f} MiB | {r['idle_n']} | {r['idle'] / 1024:.1f} MiB | "
            f"{per:,.0f} B | {r['active_n']} | {r['active_peak'] / 1024:.1f} MiB | "
            f"{r['answered']} in {seconds} s | "
            f"{fails({**r['idle_failures'], **r['active_failures']})} |"
            + ("" if r.get("alive", True) else " (pooler died)"))
    return "\n".join(lines) + "\n"


def main():
    global COMMAND
    COMMAND = bench.user_command()
    os.environ.setdefault("BENCH_SCALE", "1")
    os.environ.setdefault("BENCH_AUTH", "md5")
    settings = bench.Settings()
    if settings.auth != "md5":
        sys.exit("bench: BENCH_MEMORY=1 logs in with md5 only: unset BENCH_AUTH")
    wanted_idle = bench.env_int("BENCH_MEMORY_IDLE", 10000)
    n_active = bench.env_int("BENCH_MEMORY_ACTIVE", 1000)
    n_idle, fd_limit = fitting_clients(wanted_idle)
    if n_idle < wanted_idle:
        log(f"bench: {wanted_idle} idle clients do not fit under the descriptor limit "
            f"{fd_limit}: measuring {n_idle}")
    n_active = min(n_active, n_idle)
    settings.max_client_conn = n_idle + 100
    seconds = settings.seconds

    def body(account, tmp, logdir, started):
        pg = bench.start_postgres(settings, tmp, account, max_conn=4 * settings.pool_size + 20)
        poolers = {
            "pgbouncer": Pooler("pgbouncer", settings.pgbouncer, tmp / "pgbouncer", account,
                                settings, pg, settings.password),
            "pgsluice": Pooler("pgsluice", settings.pgsluice_copy, tmp / "pgsluice", None,
                               settings, pg, settings.password),
        }
        machine = bench.machine_description(settings, pg)
        results = {}
        for name, pooler in poolers.items():
            pooler.start()
            log(f"bench: {name} on port {pooler.port}")
            try:
                r = asyncio.run(idle_phase(pooler, settings.password, n_idle))
                log(f"bench: {name}: RSS {r['start']} KiB at start, {r['idle']} KiB with "
                    f"{r['idle_n']} idle clients (failures {r['idle_failures']})")
                r.update(asyncio.run(active_phase(pooler, settings.password, n_active, seconds)))
                log(f"bench: {name}: peak RSS {r['active_peak']} KiB with {r['active_n']} active "
                    f"clients, {r['answered']} SELECT 1 (failures {r['active_failures']})")
                r["alive"] = pooler.alive()
                results[name] = r
            finally:
                if not pooler.alive():
                    log(f"bench: {name} died:\n{tail(pooler.logfile, 20)}")
                pooler.stop()
            time.sleep(2)
        text = report(settings, machine, wanted_idle, n_idle, fd_limit, n_active, seconds,
                      results, time.monotonic() - started)
        print(text, end="", flush=True)
        if settings.out:
            Path(settings.out).write_text(text)
        return 0

    return bench.run_in_workspace(settings, "pgsluice-memory-", body,
                                  {"pgsluice": settings.pgsluice, "PgBouncer": settings.pgbouncer})


if __name__ == "__main__":
    sys.exit(main())
