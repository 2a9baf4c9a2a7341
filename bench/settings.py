#!/usr/bin/python3
# SPDX-License-Identifier: PostgreSQL
"""settings.py - the cost of a session-settings switch per transaction (BENCH_SETTINGS=1 bench/run).

Same throwaway PostgreSQL as bench.py (whose helpers this imports); pgsluice
alone, pool_mode = transaction, default_pool_size = 1. Two pgbench processes of
one client each run at the same time on the one server connection, so their
transactions alternate on it. Variants:

  none    neither client has settings: nothing is sent at link
  same    both have search_path=s1,public (startup options, PGOPTIONS): the
          records are compared at every link, equal, nothing is sent
  switch  one has search_path=s1,public, the other s2,public: every link sends
          one set_config() before the client's statement (a settings switch)

Each transaction is one primary-key SELECT of pgbench_accounts (in public,
found through either search_path). Reported: tps of both clients together
(median of BENCH_ROUNDS runs of BENCH_SECONDS), and with BENCH_CALLGRIND=1
pgsluice's instructions per transaction (callgrind: each client -t n1 and -t n2,
(Ir(n2) - Ir(n1)) / (2 (n2 - n1))). Knobs: BENCH_MODES (default simple),
BENCH_SECONDS (8), BENCH_ROUNDS (3), BENCH_CALLGRIND, BENCH_CALLGRIND_TX.
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - the helpers of bench/bench.py
from bench import DBNAME, ROLE, Pooler, log, spawn, stop_child  # noqa: E402

VARIANTS = {
    "none": (None, None),
    "same": ("-c search_path=s1,public", "-c search_path=s1,public"),
    "switch": ("-c search_path=s1,public", "-c search_path=s2,public"),
}
SCRIPT = "\\set aid random(1, 100000 * :scale)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n"
COMMAND = ""


def two_pgbench(settings, port, mode, variant, script, logdir, tag, seconds=None, transactions=None):
    """Both clients at once; returns (tps sum or None, transactions processed, error text)."""
    procs = []
    for i, options in enumerate(VARIANTS[variant]):
        cmd = ["pgbench", "-n", "-f", str(script), "-M", mode, "-c", "1", "-j", "1",
               "-h", "127.0.0.1", "-p", str(port), "-U", ROLE]
        cmd += ["-T", str(seconds)] if seconds else ["-t", str(transactions)]
        cmd.append(DBNAME)
        env = dict(os.environ, PGPASSWORD=settings.password, PGSSLMODE="disable", PGAPPNAME="bench")
        env.pop("PGOPTIONS", None)
        if options:
            env["PGOPTIONS"] = options
        logpath = logdir / f"pgbench-{tag}-{variant}-{mode}-{i}.log"
        procs.append((spawn(cmd, logpath, env=env), logpath))
    tps, processed, errors = 0.0, 0, []
    limit = (seconds or 0) + bench.PGBENCH_GRACE_S + (transactions or 0) // 20
    for proc, logpath in procs:
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            errors.append("timed out")
        stop_child(proc, "term", timeout=5)
        text = logpath.read_text(errors="replace")
        m = re.search(r"tps = ([\d.]+) \((?:without|excluding)", text)
        p = re.search(r"number of transactions actually processed: (\d+)", text)
        if proc.returncode != 0 or not m or not p:
            errors.append(f"pgbench rc {proc.returncode}: {text.strip().splitlines()[-1:]}")
            continue
        tps += float(m.group(1))
        processed += int(p.group(1))
    return (None if errors else tps), processed, "; ".join(errors)


class OneServer(Pooler):
    def write_config(self):
        super().write_config()
        text = self.ini.read_text()
        text = re.sub(r"default_pool_size = \d+", "default_pool_size = 1", text)
        self.ini.write_text(text)


def callgrind(settings, tmp, pg, script, logdir, mode, variant):
    n1, n2 = settings.callgrind_tx
    irs = []
    for n in (n1, n2):
        workdir = tmp / f"callgrind-{variant}-{mode}-{n}"
        out = workdir / "callgrind.out"
        p = OneServer("pgsluice", settings.pgsluice_copy, workdir, None, settings, pg, settings.password,
                      ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
        log(f"callgrind: {variant} {mode} -t {n}")
        p.start(timeout=bench.CALLGRIND_START_TIMEOUT_S)
        try:
            _, processed, err = two_pgbench(settings, p.port, mode, variant, script, logdir,
                                            f"cg{n}", transactions=n)
        finally:
            p.stop(timeout=60)
        if err or processed != 2 * n or not out.exists():
            return f"FAIL ({err or processed})"
        m = re.search(r"^(?:totals|summary):\s+(\d+)", out.read_text(errors="replace"), re.M)
        if not m:
            return "FAIL (no callgrind total)"
        irs.append(int(m.group(1)))
    return (irs[1] - irs[0]) / (2 * (n2 - n1))


def fmt(v, spec):
    return v if isinstance(v, str) else ("n/a" if v is None else format(v, spec))


def main():
    global COMMAND
    COMMAND = bench.user_command()
    os.environ.setdefault("BENCH_MODES", "simple")
    os.environ.setdefault("BENCH_SECONDS", "8")
    os.environ.setdefault("BENCH_ROUNDS", "3")
    os.environ.setdefault("BENCH_CLIENTS", "2")
    os.environ.setdefault("BENCH_SCALE", "1")
    settings = bench.Settings()

    def body(account, tmp, logdir, started):
        pg = bench.start_postgres(settings, tmp, account)
        pg.psql("CREATE SCHEMA s1; CREATE SCHEMA s2", dbname=DBNAME)
        script = tmp / "select.sql"
        script.write_text(SCRIPT)
        tps = {}
        if not settings.callgrind_only:
            sluice = OneServer("pgsluice", settings.pgsluice_copy, tmp / "pgsluice", None, settings, pg,
                               settings.password)
            sluice.start()
            for mode in settings.modes:
                for variant in VARIANTS:
                    runs = []
                    for rnd in range(settings.rounds):
                        t, _, err = two_pgbench(settings, sluice.port, mode, variant, script, logdir,
                                                f"r{rnd}", seconds=settings.seconds)
                        log(f"{mode} {variant} round {rnd + 1}: {t if t is not None else err}")
                        if t is not None:
                            runs.append(t)
                        time.sleep(0.5)
                    tps[(mode, variant)] = statistics.median(runs) if runs else None
            sluice.stop()
        irs = {}
        if settings.callgrind and shutil.which("valgrind"):
            for mode in settings.modes:
                for variant in VARIANTS:
                    irs[(mode, variant)] = callgrind(settings, tmp, pg, script, logdir, mode, variant)
                    log(f"callgrind {mode} {variant}: {irs[(mode, variant)]}")
        out = ["## Cost of a session-settings switch per transaction\n",
               f"Command: `{COMMAND}`  ",
               "pgsluice alone, pool_mode = transaction, default_pool_size = 1; two pgbench "
               "clients (-c 1 each, at the same time) alternate on the one server; "
               f"{settings.rounds} run(s) of {settings.seconds} s per cell, median; scale "
               f"{settings.scale}; total {(time.monotonic() - started) / 60:.1f} min.\n",
               "| mode | variant | tps (both clients) | pgsluice Ir/tx | tps vs none | Ir vs none |",
               "|---|---|--:|--:|--:|--:|"]
        for mode in settings.modes:
            for variant in VARIANTS:
                t, ir = tps.get((mode, variant)), irs.get((mode, variant))
                t0, ir0 = tps.get((mode, "none")), irs.get((mode, "none"))
                out.append(f"| {mode} | {variant} | {fmt(t, '.0f')} | {fmt(ir, '.0f')} | "
                           f"{bench.ratio(t, t0) if isinstance(t, float) and t0 else 'n/a'} | "
                           f"{bench.ratio(ir, ir0) if isinstance(ir, float) and isinstance(ir0, float) else 'n/a'} |")
        text = "\n".join(out) + "\n"
        print(text, end="", flush=True)
        if settings.out:
            Path(settings.out).write_text(text)
        return 0

    return bench.run_in_workspace(settings, "pgsluice-bench-settings-", body)


if __name__ == "__main__":
    sys.exit(main())
