#!/usr/bin/python3
# SPDX-License-Identifier: PostgreSQL
"""targets.py - issue 18's targets for the data path, measured in one run against
PgBouncer and direct PostgreSQL (BENCH_TARGETS=1 bench/run).

Same throwaway PostgreSQL and pooler settings as bench.py (whose helpers this
imports, with usage.py's and cache.py's), max_client_conn raised to
BENCH_MANY_CLIENTS + 100 in both poolers, PostgreSQL's max_connections only as
large as the largest direct run and the two pools need. Six measurements, in
this order, then one table with a MET / NOT MET verdict per target:

  idle RSS   each pooler fresh, one login and query (its first server
             connection), VmRSS; then BENCH_MANY_CLIENTS psycopg connections
             logged in and left idle, VmRSS again: (RSS_N - RSS_0) / N
  tps        pgbench -S -M simple at BENCH_CLIENTS plus BENCH_MANY_CLIENTS, direct
             (not at BENCH_MANY_CLIENTS: max_connections is not raised for it),
             PgBouncer and pgsluice in turn, BENCH_ROUNDS rounds, medians; with
             each pooler's CPU time (user + system, /proc/PID/stat) over the
             run divided by the transactions it processed (not a target: it
             says where the time goes)
  syscalls   strace -c -f attached to each (warmed) pooler for pgbench -S -M
             simple -c 1 -t N1, then -t N2: (calls(N2) - calls(N1)) / (N2 - N1)
  Ir/tx      valgrind --tool=callgrind on each pooler, pgbench -S in every mode
             at 1, 50 and BENCH_MANY_CLIENTS clients with -t N1/c and N2/c per
             client: (Ir(N2) - Ir(N1)) / (N2 - N1), start-up, logins and
             shutdown cancelled out
  middleware callgrind on pgsluice with ai_database, a usage journal and the
             cache, 1 client, simple and extended: usage.py's untagged, user
             and tokens scripts, cache.py's lookup untagged (an ordinary
             forward) and tagged /*ai_cache,ai_user,ai_model*/ (a hit that
             makes a usage record); for reference, the same lookup tagged
             /*ai_cache*/ alone on pgsluice without ai_database (a bare hit:
             no limits to check, no usage record), the floor under the hit
             target
  hit CPU    the forward and the hit again, not under callgrind, on one warmed
             pgsluice at BENCH_CLIENTS' first count, interleaved rounds, medians:
             CPU time per transaction of pgsluice and of PostgreSQL's whole
             cluster, the shipping of the hit's usage rows included (not a
             target: what a hit saves where the work is)

BENCH_TARGET_PARTS (default idle,tps,syscalls,ir,mw,hitcpu) runs only the named
measurements; the others print as "skipped" (NOT MEASURED) in the table.
N1, N2 are BENCH_CALLGRIND_TX (default 2000 6000). Counted runs use fixed -t
counts, never -T: strace and valgrind slow the pooler down, and the counts do
not depend on time. The report (markdown) goes to stdout, progress to stderr.
The method and the latest results: docs/performance.md, "Issue 18 targets".
"""

import importlib.util
import os
import re
import signal
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - the helpers of bench/bench.py
import cache  # noqa: E402
import usage  # noqa: E402
from bench import DBNAME, ROLE, ROOT, ConnectAllowance, Pooler, Run, log, tail  # noqa: E402

COMMAND = ""     # the command as the user typed it, for the report (bench.user_command)
CG_MODES = ("simple", "extended", "prepared")
MW_MODES = ("simple", "extended")
PARTS = ("idle", "tps", "syscalls", "ir", "mw", "hitcpu")
SKIPPED = "skipped"
HIT_TAG = " /*ai_cache='lookup',ai_user='bench-user',ai_model='gpt-4o'*/"
# The middleware scripts, in the order they run; "bare hit" runs on pgsluice without
# ai_database (cache.CachePooler), the others on MiddlewarePooler.
MW_LABELS = ("untagged", "user", "tokens", "forward", "hit", "bare hit")
# The forward and the hit again, timed at BENCH_CLIENTS' first count: what they cost the
# pooler and PostgreSQL together (CPU time, not instructions: PostgreSQL is not under
# callgrind). A reading waits until both are quiet (less than QUIET_CPU_S of CPU time in
# a second, at most QUIET_WAIT_S): the usage rows a hit run made are shipped after it.
CPU_LABELS = ("forward", "hit")
QUIET_CPU_S = 0.02
QUIET_WAIT_S = 120

# The limits: (key, text of the target, limit, "max" or "min").
IR_RATIO_FEW = 0.8          # pooler Ir/tx vs PgBouncer's, at 1 and 50 clients
IR_RATIO_MANY = 1.0         # at BENCH_MANY_CLIENTS
SYSCALLS_MAX = 6
TPS_RATIO_MIN = 1.0
USER_TAG_MAX = 1500
USAGE_RECORD_MAX = 6000
HIT_RATIO_MAX = 0.6
IDLE_BYTES_MAX = 1024


class MiddlewarePooler(usage.SluicePooler):
    """pgsluice with ai_database, a usage journal and a long cache TTL."""

    def write_config(self):
        super().write_config()
        cache.add_cache_settings(self.ini)


# -- measurements ------------------------------------------------------------------
def rss_kb(pid):
    try:
        m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def idle_rss(settings, pooler, many):
    """Bytes of pooler RSS per idle logged-in client, or a FAIL text."""
    import psycopg
    kw = dict(host="127.0.0.1", port=pooler.port, user=ROLE, password=settings.password,
              dbname=DBNAME, sslmode="disable", connect_timeout=20, autocommit=True)
    with psycopg.connect(**kw) as conn:       # the first server connection, the pool
        conn.execute("SELECT 1").fetchall()
    time.sleep(1)
    before = rss_kb(pooler.proc.pid)
    conns = []
    try:
        for i in range(many):
            conns.append(psycopg.connect(**kw))
            if (i + 1) % 250 == 0:
                log(f"idle RSS: {pooler.name}: {i + 1} clients connected")
        time.sleep(2)
        after = rss_kb(pooler.proc.pid)
    except psycopg.Error as e:
        return f"FAIL ({len(conns)} connected: {str(e).strip()[:120]})", before, None
    finally:
        for c in conns:
            c.close()
    if before is None or after is None:
        return "FAIL (no VmRSS)", before, after
    return (after - before) * 1024 / many, before, after


def cpu_us_per_tx(before, after, transactions):
    """Each element of the CPU-seconds tuple after - before, in us per transaction."""
    return tuple((b - a) * 1e6 / transactions for a, b in zip(before, after))


def median_pair(pairs):
    """The element-wise medians of a list of 2-tuples."""
    return tuple(statistics.median(p[i] for p in pairs) for i in (0, 1))


def pooler_cpu(pooler):
    """bench.cpu_seconds of pooler's process; None for direct (no pooler) or one gone."""
    try:
        return bench.cpu_seconds(pooler.proc.pid) if pooler is not None else None
    except OSError:
        return None


def strace_calls(settings, pooler, mode, transactions, logdir, label):
    """System calls of a running pooler (all its threads) while pgbench -c 1 -t
    transactions runs, or a FAIL text."""
    out = pooler.workdir / f"strace.{label}.txt"
    pid = pooler.proc.pid
    tracer = bench.spawn(["strace", "-c", "-f", "-o", out, "-p", pid],
                         pooler.workdir / "strace.stderr")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:           # start counting only once attached
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:          # the pooler is gone
            break
        m = re.search(r"^TracerPid:\s+(\d+)", status, re.M)
        if m and int(m.group(1)) != 0:
            break
        time.sleep(0.05)
    else:
        bench.stop_child(tracer)
        return "FAIL (strace did not attach)"
    if not pooler.alive():
        bench.stop_child(tracer)
        return "FAIL (pooler exited)"
    run = Run(f"{pooler.name}-strace-{label}", mode, 1, transactions)
    bench.pgbench(settings, pooler.port, mode, 1, run, transactions=transactions, logdir=logdir)
    tracer.send_signal(signal.SIGINT)            # detach and write the summary
    try:
        tracer.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    bench.stop_child(tracer)
    if not run.ok or run.processed != transactions:
        return run.failure() if not run.ok else f"FAIL ({run.processed} processed)"
    try:
        text = out.read_text()
    except OSError:
        return "FAIL (no strace output)"
    m = re.search(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?total\s*$", text, re.M)
    return int(m.group(1)) if m else "FAIL (no total in strace output)"


def per_tx(a, b, n):
    """(b - a) / n, or the first FAIL text."""
    for v in (a, b):
        if isinstance(v, str) or v is None:
            return v or "FAIL"
    return (b - a) / n


def callgrind_per_tx(settings, name, binary, workdir, account, pg, mode, clients, logdir):
    """Instructions per transaction of one pooler at clients clients, or a FAIL text."""
    n1, n2 = settings.callgrind_tx
    t1, t2 = max(1, n1 // clients), max(2, n2 // clients)
    irs = []
    for t in (t1, t2):
        log(f"callgrind: {name} {mode} -c {clients} -t {t}")
        ir, err = bench.callgrind_ir(settings, name, binary, workdir, account, pg, mode, t,
                                     logdir, clients=clients)
        if ir is None:
            log(f"callgrind: {name} {mode} -c {clients}: {err}")
            return err
        irs.append(ir)
    value = (irs[1] - irs[0]) / ((t2 - t1) * clients)
    log(f"callgrind: {name} {mode} -c {clients}: {value:.0f} instructions per transaction")
    return value


def middleware_ir(settings, tmp, pg, script, mode, logdir, label):
    """pgsluice's instructions per transaction of one custom script, 1 client; label
    "bare hit" runs pgsluice without ai_database."""
    n1, n2 = settings.callgrind_tx
    slug = label.replace(" ", "-")
    pooler_class = cache.CachePooler if label == "bare hit" else MiddlewarePooler
    irs = []
    for n in (n1, n2):
        workdir = tmp / f"callgrind-mw-{slug}-{mode}-{n}"
        out = workdir / "callgrind.out"
        wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        p = pooler_class("pgsluice", settings.pgsluice_copy, workdir, None, settings, pg,
                         settings.password, wrapper)
        log(f"callgrind: middleware {label} {mode} -t {n}")
        p.start(timeout=bench.CALLGRIND_START_TIMEOUT_S)
        run = Run(f"mw-{slug}", mode, 1, n)
        try:
            usage.pgbench_script(settings, p.port, mode, 1, run, script, transactions=n,
                                 logdir=logdir)
        finally:
            p.stop(timeout=60)
        if not run.ok or run.processed != n:
            return run.failure() if not run.ok else f"FAIL ({run.processed} processed)"
        m = re.search(r"^(?:totals|summary):\s+(\d+)", out.read_text(errors="replace"), re.M) \
            if out.exists() else None
        if not m:
            return "FAIL (no callgrind total)"
        irs.append(int(m.group(1)))
    value = (irs[1] - irs[0]) / (n2 - n1)
    log(f"callgrind: middleware {label} {mode}: {value:.0f} instructions per transaction")
    return value


def cached_check(before, after, lookups, misses):
    """The report's line on the usage records with cached = true that hit runs made."""
    try:
        return (f"Usage records with cached = true made by the hit runs: "
                f"{int(after) - int(before)} of {lookups} lookups ({misses}).")
    except ValueError:
        return f"Could not count the cached usage records ({before!r}, {after!r})."


def quiet_cpu(pooler, pg):
    """(pooler, PostgreSQL cluster) CPU seconds, read once both used less than
    QUIET_CPU_S in the last second (or after QUIET_WAIT_S); None if either is gone."""
    def both():
        return (sum(bench.cpu_seconds(pooler.proc.pid)),
                bench.family_cpu_seconds(pg.proc.pid))
    try:
        last = both()
        deadline = time.monotonic() + QUIET_WAIT_S
        while time.monotonic() < deadline:
            time.sleep(1)
            now = both()
            if sum(now) - sum(last) < QUIET_CPU_S:
                return now
            last = now
        log(f"bench: pgsluice and PostgreSQL still busy after {QUIET_WAIT_S} s")
        return last
    except OSError:
        return None


def middleware_cpu(settings, tmp, pg, scripts, mode, clients, logdir):
    """CPU time per transaction, pooler + PostgreSQL, of the forward and the hit (with
    its usage record): ({label: (pooler us, PostgreSQL us) or FAIL text}, the lookups
    the hit script made, warm-up included).

    One pgsluice with ai_database and the cache, warmed by a run of the hit script
    (every key cached); then BENCH_ROUNDS interleaved pairs of -T BENCH_SECONDS runs,
    medians. Each reading waits until pgsluice and PostgreSQL are quiet, so that the
    usage rows a run made are shipped and PostgreSQL's work storing them is counted
    in that run (not in the next)."""
    p = MiddlewarePooler("pgsluice", settings.pgsluice_copy, tmp / f"cpu-mw-{mode}", None,
                         settings, pg, settings.password)
    p.start()
    per = {label: [] for label in CPU_LABELS}
    lookups = 0
    try:
        warm = Run("cpu-warm", mode, 1, 0)
        usage.pgbench_script(settings, p.port, mode, 1, warm, scripts["hit"],
                             transactions=20 * cache.HOT_KEYS, logdir=logdir)
        lookups += warm.processed or 0
        if not warm.ok:
            return {label: warm.failure() for label in CPU_LABELS}, lookups
        for rnd in range(1, settings.rounds + 1):
            for label in CPU_LABELS:
                c0 = quiet_cpu(p, pg)
                run = Run(f"cpu-{label}", mode, clients, rnd)
                usage.pgbench_script(settings, p.port, mode, clients, run, scripts[label],
                                     seconds=settings.seconds, logdir=logdir)
                c1 = quiet_cpu(p, pg)
                if label == "hit":
                    lookups += run.processed or 0
                if c0 is None or c1 is None:
                    return ({label: "FAIL (pooler or PostgreSQL gone)" for label in CPU_LABELS},
                            lookups)
                if not run.ok or not run.processed:
                    return {label: run.failure() for label in CPU_LABELS}, lookups
                per[label].append(cpu_us_per_tx(c0, c1, run.processed))
                log(f"[cpu {mode} round {rnd}] {label:7}: {run.tps:.0f} tps, pooler "
                    f"{per[label][-1][0]:.1f} + PostgreSQL {per[label][-1][1]:.1f} us/tx")
    finally:
        p.stop()
    return {label: median_pair(vs) for label, vs in per.items()}, lookups


# -- the report --------------------------------------------------------------------
def num(v, fmt="{:.0f}"):
    return v if isinstance(v, str) else ("-" if v is None else fmt.format(v))


def verdict(value, limit, kind):
    if not isinstance(value, (int, float)):
        return "NOT MEASURED"
    ok = value <= limit if kind == "max" else value >= limit
    return "MET" if ok else "NOT MET"


def ratio_or_text(a, b):
    """a / b, or the FAIL text of whichever is missing."""
    if isinstance(a, str):
        return f"pgsluice {a}"
    if isinstance(b, str):
        return f"PgBouncer {b}"
    if a is None or b is None or not b:
        return "-"
    return a / b


def targets_table(settings, many, r):
    """The rows (target, measured, limit, verdict) of the final table."""
    rows = []
    for mode in CG_MODES:
        for clients in (1, 50, many):
            limit = IR_RATIO_MANY if clients == many else IR_RATIO_FEW
            sl, pb = r["ir"][(mode, clients, "pgsluice")], r["ir"][(mode, clients, "pgbouncer")]
            ratio = ratio_or_text(sl, pb)
            measured = (f"{ratio:.2f}x ({num(sl)} vs {num(pb)})"
                        if isinstance(ratio, float) else ratio)
            rows.append((f"Ir/tx vs PgBouncer, {mode}, {clients} client(s)", measured,
                         f"<= {limit:.1f}x", verdict(ratio, limit, "max")))
    sc = r["syscalls"]["pgsluice"]
    # Judged at the two decimals shown: the counting window also holds a login, a logout and
    # the time strace takes to attach, where a timer may add a call or two that are not the
    # transactions' (6.00025 = one call more in the longer run, seen in both poolers).
    sc = round(sc, 2) if isinstance(sc, float) else sc
    rows.append(("system calls per simple transaction",
                 f"{num(sc, '{:.2f}')} (PgBouncer {num(r['syscalls']['pgbouncer'], '{:.2f}')})",
                 f"<= {SYSCALLS_MAX}", verdict(sc, SYSCALLS_MAX, "max")))
    for clients in settings.clients + [many]:
        sl, pb = r["tps"].get((clients, "pgsluice")), r["tps"].get((clients, "pgbouncer"))
        ratio = ratio_or_text(sl, pb)
        measured = (f"{ratio:.2f}x ({num(sl)} vs {num(pb)} tps)"
                    if isinstance(ratio, float) else ratio)
        rows.append((f"tps vs PgBouncer, pgbench -S, {clients} clients", measured,
                     f">= {TPS_RATIO_MIN:.1f}x", verdict(ratio, TPS_RATIO_MIN, "min")))
    for mode in MW_MODES:
        mw = r["mw"][mode]
        user = per_tx(mw["untagged"], mw["user"], 1)
        tokens = per_tx(mw["untagged"], mw["tokens"], 1)
        hit = ratio_or_text(mw["hit"], mw["forward"])
        rows.append((f"user tag, {mode}: +Ir/tx", f"{num(user, '{:+.0f}')}",
                     f"<= +{USER_TAG_MAX}", verdict(user, USER_TAG_MAX, "max")))
        rows.append((f"usage record (ai_user, ai_model, ai_tokens_in), {mode}: +Ir/tx",
                     f"{num(tokens, '{:+.0f}')}", f"<= +{USAGE_RECORD_MAX}",
                     verdict(tokens, USAGE_RECORD_MAX, "max")))
        rows.append((f"cache hit with its record vs untagged forward, {mode}",
                     f"{hit:.2f}x ({num(mw['hit'])} vs {num(mw['forward'])})"
                     if isinstance(hit, float) else hit,
                     f"<= {HIT_RATIO_MAX}x", verdict(hit, HIT_RATIO_MAX, "max")))
    idle = r["idle"]["pgsluice"][0]
    rows.append((f"pooler RSS per idle client ({many} clients)",
                 f"{num(idle)} B (PgBouncer {num(r['idle']['pgbouncer'][0])} B)",
                 f"<= {IDLE_BYTES_MAX} B", verdict(idle, IDLE_BYTES_MAX, "max")))
    return rows


def report(settings, machine, many, r, elapsed_s, loads):
    n1, n2 = settings.callgrind_tx
    out = ["## Issue 18 targets: pgsluice vs PgBouncer\n"]
    out.append(f"Command: `{COMMAND}`  ")
    out.append(f"Settings: pool_mode=transaction, default_pool_size={settings.pool_size}, "
               f"max_client_conn={settings.max_client_conn}, auth_type={settings.auth}, "
               f"scale {settings.scale}; PostgreSQL max_connections {r['max_conn']}; "
               f"callgrind and strace: -t counts with N1={n1}, N2={n2} transactions in all; "
               f"tps: pgbench -S -M simple -j {settings.threads} -T {settings.seconds} (+ a "
               f"connect allowance), {settings.rounds} round(s), median; total run time "
               f"{elapsed_s / 60:.1f} min.\n")
    for key, value in machine:
        out.append(f"- {key}: {value}")
    out.append(f"- load average (uptime) during the run: {'; '.join(loads)}")
    out.append("")
    out.append("### Issue 18 targets\n")
    out.append("| target | measured | limit | verdict |")
    out.append("|---|--:|--:|---|")
    rows = targets_table(settings, many, r)
    for row in rows:
        out.append("| " + " | ".join(row) + " |")
    met = sum(1 for row in rows if row[3] == "MET")
    out.append(f"\n{met} of {len(rows)} targets met.")

    out.append("\n### Instructions per transaction (callgrind, pooler only)\n")
    out.append("pgbench -S -c C -t N1/C and -t N2/C; (Ir(N2) - Ir(N1)) / (N2 - N1).\n")
    out.append("| mode | clients | pgbouncer Ir/tx | pgsluice Ir/tx | pgsluice/pgbouncer |")
    out.append("|---|--:|--:|--:|--:|")
    for mode in CG_MODES:
        for clients in (1, 50, many):
            sl, pb = r["ir"][(mode, clients, "pgsluice")], r["ir"][(mode, clients, "pgbouncer")]
            ratio = ratio_or_text(sl, pb)
            out.append(f"| {mode} | {clients} | {num(pb)} | {num(sl)} | "
                       f"{num(ratio, '{:.2f}') if isinstance(ratio, float) else '-'} |")

    out.append("\n### System calls per transaction (strace -c -f, pooler only)\n")
    out.append(f"pgbench -S -M simple -c 1 -t {n1} and -t {n2} against the warmed pooler; "
               f"(calls({n2}) - calls({n1})) / {n2 - n1}.\n")
    out.append("| pooler | calls -t N1 | calls -t N2 | per transaction |")
    out.append("|---|--:|--:|--:|")
    for name in ("pgbouncer", "pgsluice"):
        a, b = r["syscall_counts"][name]
        out.append(f"| {name} | {num(a)} | {num(b)} | {num(r['syscalls'][name], '{:.2f}')} |")

    out.append("\n### pgbench -S -M simple, tps (median)\n")
    out.append("| clients | direct | pgbouncer | pgsluice | pgsluice/pgbouncer | pgsluice/direct |")
    out.append("|--:|--:|--:|--:|--:|--:|")
    for clients in settings.clients + [many]:
        d, pb, sl = (r["tps"].get((clients, t)) for t in bench.TARGETS)
        out.append(f"| {clients} | {num(d)} | {num(pb)} | {num(sl)} | "
                   f"{bench.ratio(*(v if not isinstance(v, str) else None for v in (sl, pb)))} | "
                   f"{bench.ratio(*(v if not isinstance(v, str) else None for v in (sl, d)))} |")
    if many not in settings.clients:
        out.append(f"\nDirect is not run at {many} clients: PostgreSQL's max_connections is "
                   f"only as large as the pools need.")
    out.append("\nPooler CPU time per transaction (user + system from /proc/PID/stat over each "
               "run, divided by the transactions it processed; median of the rounds), us:\n")
    out.append("| clients | pgbouncer user + sys | pgsluice user + sys | pgsluice/pgbouncer |")
    out.append("|--:|--:|--:|--:|")

    def cpu_text(v):
        return "-" if not v else f"{v[0]:.2f} + {v[1]:.2f} = {v[0] + v[1]:.2f}"
    for clients in settings.clients + [many]:
        pb, sl = r["cpu"].get((clients, "pgbouncer")), r["cpu"].get((clients, "pgsluice"))
        out.append(f"| {clients} | {cpu_text(pb)} | {cpu_text(sl)} | "
                   f"{bench.ratio(sum(sl), sum(pb)) if pb and sl else '-'} |")

    out.append("\n### AI middleware, pgsluice Ir/tx (callgrind, 1 client)\n")
    out.append("ai_database, usage journal, cache_default_ttl; pgbench -f: usage.py's lookup "
               "untagged, with `/*ai_user*/`, with `/*ai_user,ai_model,ai_tokens_in,"
               "ai_tokens_out*/`; cache.py's lookup untagged (forward) and with "
               f"`{HIT_TAG.strip()}` (hit and usage record); bare hit: the lookup with "
               f"`{cache.TAG.strip()}` on pgsluice without ai_database (no limits to "
               f"check, no usage record: not a target, the floor under the hit's).\n")
    out.append("| mode | untagged | user tag | tokens tag | forward | hit + record | bare hit "
               "| user - untagged | tokens - untagged | hit/forward | bare hit/forward |")
    out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for mode in MW_MODES:
        mw = r["mw"][mode]
        hit = ratio_or_text(mw["hit"], mw["forward"])
        bare = ratio_or_text(mw["bare hit"], mw["forward"])
        out.append(f"| {mode} | " + " | ".join(num(mw[k]) for k in MW_LABELS)
                   + f" | {num(per_tx(mw['untagged'], mw['user'], 1), '{:+.0f}')}"
                   + f" | {num(per_tx(mw['untagged'], mw['tokens'], 1), '{:+.0f}')}"
                   + f" | {num(hit, '{:.2f}') if isinstance(hit, float) else '-'}"
                   + f" | {num(bare, '{:.2f}') if isinstance(bare, float) else '-'} |")
    if r.get("hit_check"):
        out.append(f"\n{r['hit_check']}")

    out.append(f"\nThe same forward and hit (with its usage record) on one pgsluice, "
               f"{settings.clients[0]} clients, warmed cache, -T {settings.seconds}, "
               f"{settings.rounds} interleaved round(s), medians: CPU time (user + system) "
               f"per transaction of pgsluice and of PostgreSQL (every process of the "
               f"cluster, reaped backends included; each reading waits until both are "
               f"quiet, so that storing the run's usage rows is counted), us. Not one of "
               f"the issue's targets: what a hit saves where the work is.\n")
    out.append("| mode | forward: pgsluice + PostgreSQL | hit: pgsluice + PostgreSQL "
               "| hit/forward |")
    out.append("|---|--:|--:|--:|")

    def pair_text(v):
        return v if isinstance(v, str) else f"{v[0]:.2f} + {v[1]:.2f} = {sum(v):.2f}"
    for mode in MW_MODES:
        c = r["mw_cpu"].get(mode, {})
        fw, hit = c.get("forward", "-"), c.get("hit", "-")
        both = not isinstance(fw, str) and not isinstance(hit, str) and sum(fw)
        out.append(f"| {mode} | {pair_text(fw)} | {pair_text(hit)} | "
                   f"{f'{sum(hit) / sum(fw):.2f}' if both else '-'} |")
    if r.get("hit_cpu_check"):
        out.append(f"\n{r['hit_cpu_check']}")

    out.append(f"\n### RSS per idle client ({many} clients logged in, idle)\n")
    out.append("| pooler | VmRSS kB, 0 clients | VmRSS kB, idle clients | bytes per client |")
    out.append("|---|--:|--:|--:|")
    for name in ("pgbouncer", "pgsluice"):
        v, a, b = r["idle"][name]
        out.append(f"| {name} | {num(a)} | {num(b)} | {num(v)} |")
    return "\n".join(out) + "\n"


# -- main ----------------------------------------------------------------------------
def main():
    global COMMAND
    COMMAND = bench.user_command()     # before the defaults below are set
    os.environ.setdefault("BENCH_SECONDS", "8")
    os.environ.setdefault("BENCH_ROUNDS", "3")
    settings = bench.Settings()
    many = bench.env_int("BENCH_MANY_CLIENTS", 1000, minimum=51)
    settings.clients = [c for c in settings.clients if c != many]
    settings.max_client_conn = many + 100
    if not shutil.which("valgrind") or not shutil.which("strace"):
        sys.exit("bench: BENCH_TARGETS=1 needs valgrind and strace")
    if importlib.util.find_spec("psycopg") is None:
        sys.exit("bench: BENCH_TARGETS=1 needs psycopg 3 (Debian: python3-psycopg)")
    parts = set(os.environ.get("BENCH_TARGET_PARTS", ",".join(PARTS)).split(","))
    unknown = parts - set(PARTS)
    if unknown:
        sys.exit(f"bench: BENCH_TARGET_PARTS: unknown part(s) {', '.join(sorted(unknown))}; "
                 f"known: {', '.join(PARTS)}")
    loads = []

    def load():
        loads.append(f"{time.strftime('%H:%M', time.gmtime())} "
                     + Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()
                     .strip("[]").replace("'", ""))

    def body(account, tmp, logdir, started):
        r = {"ir": {}, "tps": {}, "cpu": {}, "syscalls": {}, "syscall_counts": {}, "idle": {},
             "mw": {}, "mw_cpu": {}}
        r["max_conn"] = max(settings.clients) + 2 * settings.pool_size + 20
        load()
        pg = bench.start_postgres(settings, tmp, account, max_conn=r["max_conn"])
        cache.create_table(pg)
        mw = MiddlewarePooler("pgsluice", settings.pgsluice_copy, tmp / "migrate", None,
                              settings, pg, settings.password)
        mw.write_config()
        mig = subprocess.run([str(settings.pgsluice_copy), "--migrate", str(mw.ini)],
                             capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, PGSLUICE_SQLDIR=str(ROOT / "sql")))
        if mig.returncode != 0:
            raise RuntimeError(f"pgsluice --migrate failed ({mig.returncode}):\n"
                               f"{mig.stdout}{mig.stderr}")
        pg.psql("INSERT INTO sluice.model_prices (model, input_usd_per_mtok, "
                "output_usd_per_mtok) VALUES ('gpt-4o', 2.50, 10.00) ON CONFLICT DO NOTHING",
                dbname=DBNAME, check=False)

        poolers = {
            "pgbouncer": Pooler("pgbouncer", settings.pgbouncer, tmp / "pgbouncer",
                                      account, settings, pg, settings.password),
            "pgsluice": Pooler("pgsluice", settings.pgsluice_copy, tmp / "pgsluice",
                                     None, settings, pg, settings.password),
        }
        for p in poolers.values():
            p.start()
        machine = bench.machine_description(settings, pg)

        # 1. RSS per idle client, on fresh poolers.
        for name, p in poolers.items():
            if "idle" not in parts:
                r["idle"][name] = (SKIPPED, None, None)
                continue
            log(f"idle RSS: {name}: {many} clients")
            r["idle"][name] = idle_rss(settings, p, many)
            log(f"idle RSS: {name}: {num(r['idle'][name][0])} bytes per idle client")

        # 2. tps, interleaved rounds, medians.
        allowance = ConnectAllowance(settings.clients + [many])
        cells = settings.clients + [many] if "tps" in parts else []
        runs = {}
        cpu_runs = {}   # (clients, pooler) -> [(user, system) CPU us per transaction]
        total = sum(len(bench.TARGETS) - (c == many) for c in cells) * settings.rounds
        done = 0
        for clients in cells:
            for rnd in range(1, settings.rounds + 1):
                for t in bench.TARGETS:
                    if t == "direct" and clients == many:
                        continue
                    pooler = poolers.get(t)
                    if pooler is not None and not pooler.alive():
                        log(f"bench: {t} is not running; restarting it:\n"
                            f"{tail(pooler.logfile, 10)}")
                        pooler.start()
                    port = pooler.port if pooler is not None else pg.port
                    cpu0 = pooler_cpu(pooler)
                    run = bench.measure(settings, t, port, "simple", clients, rnd, allowance,
                                        logdir)
                    cpu1 = pooler_cpu(pooler)
                    if pooler is not None and not pooler.alive():
                        run.pooler_died = True
                    runs.setdefault((clients, t), []).append(run)
                    if cpu0 and cpu1 and run.ok:
                        cpu_runs.setdefault((clients, t), []).append(
                            cpu_us_per_tx(cpu0, cpu1, run.processed))
                    done += 1
                    log(f"[tps {done}/{total}] c={clients:<4} round {rnd} {t:9}: "
                        + (f"{run.tps:.0f} tps" if run.ok else f"{run.failure()} {run.error}"))
                    time.sleep(0.5)
        for key, rs in runs.items():
            text, _, median = bench.cell(settings, rs)
            r["tps"][key] = median if median is not None else text
        for key, cs in cpu_runs.items():
            if len(cs) == len(runs[key]):    # every run of the cell counted
                r["cpu"][key] = median_pair(cs)
        load()

        # 3. system calls per simple transaction, on the warmed poolers.
        n1, n2 = settings.callgrind_tx
        for name, p in poolers.items():
            if "syscalls" not in parts:
                r["syscall_counts"][name] = (SKIPPED, SKIPPED)
                r["syscalls"][name] = SKIPPED
                continue
            counts = [strace_calls(settings, p, "simple", n, logdir, f"{n}") for n in (n1, n2)]
            r["syscall_counts"][name] = counts
            r["syscalls"][name] = per_tx(counts[0], counts[1], n2 - n1)
            log(f"strace: {name}: {num(r['syscalls'][name], '{:.2f}')} calls per transaction")
        for p in poolers.values():
            p.stop()
        load()

        # 4. instructions per transaction, each pooler fresh under callgrind per count.
        for clients in (1, 50, many):
            for mode in CG_MODES:
                for name, binary, acct in (("pgbouncer", settings.pgbouncer, account),
                                           ("pgsluice", settings.pgsluice_copy, None)):
                    if "ir" not in parts:
                        r["ir"][(mode, clients, name)] = SKIPPED
                        continue
                    r["ir"][(mode, clients, name)] = callgrind_per_tx(
                        settings, name, binary, tmp / f"callgrind-{name}", acct, pg, mode,
                        clients, logdir)
            load()

        # 5. the middleware's share, pgsluice only, 1 client.
        scripts = {}
        for v in usage.VARIANTS:
            scripts[v] = tmp / f"{v}.sql"
            scripts[v].write_text(usage.script_text(v))
        scripts["forward"] = tmp / "forward.sql"
        scripts["forward"].write_text(cache.script_text(False))
        scripts["hit"] = tmp / "hit.sql"
        scripts["hit"].write_text(cache.script_text(False).replace(";\n", HIT_TAG + ";\n"))
        scripts["bare hit"] = tmp / "bare-hit.sql"
        scripts["bare hit"].write_text(cache.script_text(True))
        before = pg.psql("SELECT count(*) FROM sluice.llm_usage WHERE cached",
                         dbname=DBNAME, check=False).strip()
        for mode in MW_MODES:
            r["mw"][mode] = {label: middleware_ir(settings, tmp, pg, scripts[label], mode,
                                                  logdir, label) if "mw" in parts else SKIPPED
                             for label in MW_LABELS}
        after = pg.psql("SELECT count(*) FROM sluice.llm_usage WHERE cached",
                        dbname=DBNAME, check=False).strip()
        if "mw" in parts:
            r["hit_check"] = cached_check(before, after, len(MW_MODES) * (n1 + n2),
                                          "each run starts with an empty cache: its first "
                                          f"lookup of each of the {cache.HOT_KEYS} keys is a "
                                          "miss, in both runs of a pair")
        load()

        # 6. the forward and the hit, pooler + PostgreSQL CPU time.
        before = after
        lookups = 0
        for mode in MW_MODES:
            if "hitcpu" not in parts:
                r["mw_cpu"][mode] = {k: SKIPPED for k in CPU_LABELS}
                continue
            r["mw_cpu"][mode], n = middleware_cpu(settings, tmp, pg, scripts, mode,
                                                  settings.clients[0], logdir)
            lookups += n
        if "hitcpu" in parts:
            after = pg.psql("SELECT count(*) FROM sluice.llm_usage WHERE cached",
                            dbname=DBNAME, check=False).strip()
            r["hit_cpu_check"] = cached_check(before, after, lookups,
                                              "the warm-up's first lookup of each of the "
                                              f"{cache.HOT_KEYS} keys is a miss, in each mode")
        load()

        text = report(settings, machine, many, r, time.monotonic() - started, loads)
        print(text, end="", flush=True)
        if settings.out:
            Path(settings.out).write_text(text)
        return 0

    return bench.run_in_workspace(settings, "pgsluice-bench-targets-", body,
                                  {"pgsluice": settings.pgsluice,
                                   "PgBouncer": settings.pgbouncer})


if __name__ == "__main__":
    sys.exit(main())
