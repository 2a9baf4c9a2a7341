#!/usr/bin/python3
# SPDX-License-Identifier: PostgreSQL
"""usage.py - the throughput cost of pgsluice's usage recording (BENCH_USAGE=1 bench/run).

Same throwaway PostgreSQL and pgsluice settings as bench.py (whose helpers this
imports), plus the AI middleware: ai_database = bench (a [databases] entry with
user=bench), the sluice schema migrated into the bench database with
`pgsluice --migrate`, and usage_journal_dir in the temporary directory. pgbench
then runs three custom scripts (-f) against pgsluice only, one primary-key
lookup per transaction each:

  untagged  SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
  user      the same with /*ai_user='bench-user'*/: attributed and counted
            against [limits] (there are none), no usage record
  tokens    the same with /*ai_user='bench-user',ai_model='gpt-4o',
            ai_tokens_in='120',ai_tokens_out='30'*/: one usage record per
            transaction (journaled before ReadyForQuery, shipped in batches)

For every (mode, clients) cell the three variants run in turn, BENCH_ROUNDS
times; the report shows medians and the ratios to untagged. At the end
pgsluice is stopped (a clean shutdown stores what the journal holds) and the
rows of sluice.llm_usage are counted against the transactions pgbench reported
for the tokens runs; both numbers are printed, a mismatch is flagged.

The tag is a constant: pgbench substitutes :variables anywhere in the text,
comments included, and in extended mode a :variable in the comment would become
a $n parameter the statement does not use.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - the helpers of bench/bench.py
from bench import (DBNAME, ROLE, ROOT, ConnectAllowance, Pooler, Run,  # noqa: E402
                   log, spawn, stop_child, tail)

TAGS = {
    "untagged": "",
    "user": " /*ai_user='bench-user'*/",
    "tokens": (" /*ai_user='bench-user',ai_model='gpt-4o',ai_tokens_in='120',"
               "ai_tokens_out='30'*/"),
}
VARIANTS = tuple(TAGS)
COMMAND = ""     # the command as the user typed it, for the report (bench.user_command)


def script_text(variant):
    return ("\\set aid random(1, 100000 * :scale)\n"
            f"SELECT abalance FROM pgbench_accounts WHERE aid = :aid{TAGS[variant]};\n")


class SluicePooler(Pooler):
    """pgsluice with the AI middleware: ai_database and a usage journal."""

    def write_config(self):
        super().write_config()
        text = self.ini.read_text()
        text = text.replace("[pgsluice]\n", "[pgsluice]\n"
                            f"ai_database = {DBNAME}\n"
                            f"usage_journal_dir = {self.workdir / 'journal'}\n", 1)
        text = text.replace(f"dbname={DBNAME}\n", f"dbname={DBNAME} user={ROLE}\n", 1)
        self.ini.write_text(text)


def pgbench_script(settings, port, mode, clients, run, script, seconds=None,
                   transactions=None, logdir=None):
    """bench.pgbench() with a custom script (-f) instead of -S."""
    cmd = ["pgbench", "-n", "-f", str(script), "-M", mode, "-c", str(clients),
           "-j", str(min(settings.threads, clients)),
           "-h", "127.0.0.1", "-p", str(port), "-U", ROLE]
    cmd += ["-T", str(seconds)] if seconds else ["-t", str(transactions)]
    run.duration_s = seconds
    cmd.append(DBNAME)
    env = dict(os.environ, PGPASSWORD=settings.password, PGCONNECT_TIMEOUT="20",
               PGSSLMODE="disable", PGAPPNAME="bench")
    limit = (seconds or 0) + bench.PGBENCH_GRACE_S + (transactions or 0) // 50
    logpath = logdir / f"pgbench-{run.target}-{mode}-{clients}-{run.round}.log"
    t0 = time.monotonic()
    proc = spawn(cmd, logpath, env=env)
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        run.timed_out = True
    stop_child(proc, "term", timeout=5)
    run.wall_s = time.monotonic() - t0
    run.rc = proc.returncode
    run.parse(logpath.read_text(errors="replace"))
    return run


def callgrind_rows(settings, tmp, pg, scripts, logdir):
    """Instructions per transaction of pgsluice for each variant and mode, or []."""
    if not shutil.which("valgrind"):
        log("bench: BENCH_CALLGRIND=1 but valgrind is not installed; skipping")
        return []
    n1, n2 = settings.callgrind_tx
    rows = []
    for mode in settings.modes:
        values = []
        for variant in VARIANTS:
            irs = []
            for n in (n1, n2):
                workdir = tmp / f"callgrind-{variant}-{mode}-{n}"
                out = workdir / "callgrind.out"
                wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
                p = SluicePooler("pgsluice", settings.pgsluice_copy, workdir, None, settings,
                                 pg, settings.password, wrapper)
                log(f"callgrind: {variant} {mode} -t {n}")
                p.start(timeout=bench.CALLGRIND_START_TIMEOUT_S)
                run = Run(f"callgrind-{variant}", mode, 1, n)
                try:
                    pgbench_script(settings, p.port, mode, 1, run, scripts[variant],
                                   transactions=n, logdir=logdir)
                finally:
                    p.stop(timeout=60)
                m = None
                if run.ok and run.processed == n and out.exists():
                    m = re.search(r"^(?:totals|summary):\s+(\d+)",
                                        out.read_text(errors="replace"), re.M)
                if not m:
                    irs = run.failure() if not run.ok else "FAIL (no callgrind total)"
                    break
                irs.append(int(m.group(1)))
            values.append(irs if isinstance(irs, str) else (irs[1] - irs[0]) / (n2 - n1))
            log(f"callgrind: {variant} {mode}: {values[-1]}")
        rows.append((mode, values))
    return rows


def count_rows(pg):
    """Rows of sluice.llm_usage, and how many of them carry exactly the tokens tag's values."""
    out = pg.psql("SELECT count(*), count(*) FILTER (WHERE subject = 'bench-user' AND model = "
                  "'gpt-4o' AND input_tokens = 120 AND output_tokens = 30) "
                  "FROM sluice.llm_usage", dbname=DBNAME, check=False)
    try:
        total, as_tagged = (int(x) for x in out.strip().split("|"))
        return total, as_tagged
    except ValueError:
        return None, None


def report(settings, machine, results, elapsed_s, stored, as_tagged, recorded_tx, cg_rows):
    out = ["## Cost of usage recording: untagged vs tagged statements through pgsluice\n"]
    out.append(f"Command: `{COMMAND}`  ")
    out.append(f"Settings: as bench/run, plus ai_database={DBNAME}, usage_journal_dir in the "
               f"temporary directory (defaults: usage_flush_interval 0.2 s, usage_batch_size "
               f"1000); pgbench -n -f <script> -j {settings.threads} -T {settings.seconds} "
               f"(+ a connect allowance), scale {settings.scale}, {settings.rounds} round(s) "
               f"per cell, median shown; total run time {elapsed_s / 60:.1f} min.\n")
    for key, value in machine:
        if key != "PgBouncer":
            out.append(f"- {key}: {value}")
    out.append("")
    if not results:
        out.append("(BENCH_CALLGRIND=only: no throughput runs)")
    else:
        out.append("| mode | clients | tps untagged | tps user tag | tps tokens tag "
                   "| lat ms untagged | lat ms user | lat ms tokens | user/untagged "
                   "| tokens/untagged |")
        out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        failures = []
        for mode in settings.modes:
            for clients in settings.clients:
                cells = {v: bench.cell(settings, results[(mode, clients, v)]) for v in VARIANTS}
                for v in VARIANTS:
                    failures += [(v, mode, clients, r) for r in results[(mode, clients, v)]
                                 if not r.ok]
                out.append(f"| {mode} | {clients} | "
                           + " | ".join(cells[v][0] for v in VARIANTS) + " | "
                           + " | ".join(cells[v][1] for v in VARIANTS) + " | "
                           + bench.ratio(cells["user"][2], cells["untagged"][2]) + " | "
                           + bench.ratio(cells["tokens"][2], cells["untagged"][2]) + " |")
        if failures:
            out.append("\nFailures:\n")
            for v, mode, clients, r in failures:
                out.append(f"- {v}, {mode}, {clients} clients, round {r.round}: {r.failure()}"
                           + (f": `{r.error[:200]}`" if r.error else ""))
    if stored is None:
        verdict = "**could not count the rows**"
    elif stored == recorded_tx == as_tagged:
        verdict = "match"
    elif stored == recorded_tx:
        verdict = f"**MISMATCH**: only {as_tagged} rows carry the tag's subject, model and tokens"
    else:
        verdict = f"**MISMATCH** ({stored - recorded_tx:+} rows)"
    out.append(f"\nUsage records: pgbench reported {recorded_tx} transactions of the tokens "
               f"script (all runs); sluice.llm_usage holds {stored} rows after pgsluice's "
               f"clean shutdown ({as_tagged} with the tag's subject, model and tokens): {verdict}.")
    if cg_rows:
        n1, n2 = settings.callgrind_tx
        out.append("\n### pgsluice instructions per transaction (callgrind)\n")
        out.append(f"pgbench -c 1 -t {n1} and -t {n2}; (Ir({n2}) - Ir({n1})) / {n2 - n1}.\n")
        out.append("| mode | untagged | user tag | tokens tag | user/untagged | tokens/untagged |")
        out.append("|---|--:|--:|--:|--:|--:|")
        for mode, values in cg_rows:
            texts = [v if isinstance(v, str) else f"{v:.0f}" for v in values]
            nums = [None if isinstance(v, str) else v for v in values]
            out.append(f"| {mode} | " + " | ".join(texts) + " | "
                       + bench.ratio(nums[1], nums[0]) + " | "
                       + bench.ratio(nums[2], nums[0]) + " |")
    return "\n".join(out) + "\n"


def main():
    global COMMAND
    COMMAND = bench.user_command()     # before the defaults below are set
    os.environ.setdefault("BENCH_MODES", "simple extended")
    os.environ.setdefault("BENCH_CLIENTS", "10 50")
    os.environ.setdefault("BENCH_SECONDS", "8")
    settings = bench.Settings()

    def body(account, tmp, logdir, started):
        scripts = {}
        for v in VARIANTS:
            scripts[v] = tmp / f"{v}.sql"
            scripts[v].write_text(script_text(v))

        pg = bench.start_postgres(settings, tmp, account)

        sluice = SluicePooler("pgsluice", settings.pgsluice_copy, tmp / "pgsluice", None,
                              settings, pg, settings.password)
        sluice.write_config()
        mig = subprocess.run([str(settings.pgsluice_copy), "--migrate", str(sluice.ini)],
                             capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, PGSLUICE_SQLDIR=str(ROOT / "sql")))
        log((mig.stdout + mig.stderr).strip())
        if mig.returncode != 0:
            raise RuntimeError(f"pgsluice --migrate failed ({mig.returncode})")
        pg.psql("INSERT INTO sluice.model_prices (model, input_usd_per_mtok, "
                "output_usd_per_mtok) VALUES ('gpt-4o', 2.50, 10.00) ON CONFLICT DO NOTHING",
                dbname=DBNAME, check=False)
        if count_rows(pg)[0] != 0:
            raise RuntimeError("sluice.llm_usage is not empty before the runs")
        sluice.start()
        log(f"bench: pgsluice on port {sluice.port}")
        machine = bench.machine_description(settings, pg)

        cells = [] if settings.callgrind_only else [(m, c) for m in settings.modes
                                                    for c in settings.clients]
        total = len(cells) * settings.rounds * len(VARIANTS)
        log(f"bench: {total} runs of {settings.seconds} s")
        allowance = ConnectAllowance(settings.clients)
        results = {}
        done = 0
        recorded_tx = 0
        for mode, clients in cells:
            for v in VARIANTS:
                results[(mode, clients, v)] = []
            for rnd in range(1, settings.rounds + 1):
                for v in VARIANTS:
                    if not sluice.alive():
                        log(f"bench: pgsluice is not running; restarting it:\n"
                            f"{tail(sluice.logfile, 10)}")
                        sluice.start()
                    run = Run(v, mode, clients, rnd)
                    pgbench_script(settings, sluice.port, mode, clients, run, scripts[v],
                                   seconds=settings.seconds + allowance.seconds(clients),
                                   logdir=logdir)
                    allowance.record(clients, run.connect_ms)
                    if not sluice.alive():
                        run.pooler_died = True
                    if v == "tokens":
                        recorded_tx += run.processed or 0
                    results[(mode, clients, v)].append(run)
                    done += 1
                    what = (f"{run.tps:.0f} tps, {run.latency_ms:.3f} ms" if run.ok
                            else f"{run.failure()} {run.error}")
                    log(f"[{done}/{total}] {mode:8} c={clients:<4} round {rnd} {v:8}: {what}")
                    time.sleep(0.5)

        rc = sluice.stop(timeout=30)          # a clean shutdown stores the journal
        if rc not in (0, None):
            log(f"bench: pgsluice exited with {rc}:\n{tail(sluice.logfile, 10)}")
        stored, as_tagged = count_rows(pg)
        log(f"bench: tokens transactions reported by pgbench {recorded_tx}, "
            f"rows in sluice.llm_usage {stored} ({as_tagged} with the tag's values)")

        cg_rows = []
        if settings.callgrind:
            cg_rows = callgrind_rows(settings, tmp, pg, scripts, logdir)

        text = report(settings, machine, results, time.monotonic() - started, stored,
                      as_tagged, recorded_tx, cg_rows)
        print(text, end="", flush=True)
        if settings.out:
            Path(settings.out).write_text(text)
        return 0 if stored == recorded_tx == as_tagged else 1

    return bench.run_in_workspace(settings, "pgsluice-bench-usage-", body)


if __name__ == "__main__":
    sys.exit(main())
