#!/usr/bin/python3
# SPDX-License-Identifier: PostgreSQL
"""cache.py - a completion-cache hit in pgsluice vs the same lookup direct and through
PgBouncer (BENCH_CACHE=1 bench/run).

Same throwaway PostgreSQL and pooler settings as bench.py (whose helpers this
imports; the pgbench runner is usage.py's), plus a table of stored completions,

  llm_cache(k int primary key, answer text)   10000 rows, 500-byte answers,

and one pgbench custom script (-f), one lookup per transaction:

  \\set k random(1, 100)
  SELECT answer FROM llm_cache WHERE k = :k /*ai_cache='lookup'*/;

k comes from a hot set of 100 keys, so after a warm-up every lookup pgsluice
sees is in its cache: the runs measure hits, not a mix of hits and misses.
Four targets per (mode, clients) cell, in turn, BENCH_ROUNDS times:

  direct     the tagged script, straight to PostgreSQL (which ignores the comment)
  pgbouncer  the tagged script through PgBouncer (which passes the comment on)
  untagged   the script without the comment through pgsluice: its ordinary
             pooled path, a server round trip per lookup
  hit        the tagged script through pgsluice, answered from its cache

Before every hit run pgbench -c 1 -t 2000 with the same script and mode fills
the cache (100 keys drawn 2000 times). pgsluice's SHOW CACHE is read after the
warm-up and after the run: the difference is the hits and misses of the
measured run alone, shown in the table; a miss is flagged, and makes the exit
status 1. pgsluice runs with cache_default_ttl = 3600 so that no entry expires
during the benchmark; it has no ai_database, so hits make no usage records
(BENCH_USAGE=1 measures those).

The tag is a constant: pgbench substitutes :variables anywhere in the text,
comments included (see usage.py).
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - the helpers of bench/bench.py
from bench import DBNAME, ROLE, ConnectAllowance, Pooler, Run, log, tail  # noqa: E402
from usage import pgbench_script  # noqa: E402 - bench.pgbench() with -f

TAG = " /*ai_cache='lookup'*/"
ROWS = 10000
ANSWER_BYTES = 500
HOT_KEYS = 100
WARMUP_TX = 2000            # draws of the hot set: P(a key is never drawn) = 100 * 0.99^2000
CACHE_TTL_S = 3600
TARGETS = ("direct", "pgbouncer", "untagged", "hit")
LABELS = {"direct": "direct", "pgbouncer": "pgbouncer", "untagged": "pgsluice untagged",
          "hit": "pgsluice hit"}
COMMAND = ""     # the command as the user typed it, for the report (bench.user_command)


def script_text(tagged):
    return (f"\\set k random(1, {HOT_KEYS})\n"
            f"SELECT answer FROM llm_cache WHERE k = :k{TAG if tagged else ''};\n")


def add_cache_settings(ini):
    """Give the pgsluice config file ini (a Path) a long cache TTL and SHOW access for the
    bench role, so that the hits of one run are not expired and SHOW CACHE can be read."""
    text = ini.read_text()
    text = text.replace("[pgsluice]\n", "[pgsluice]\n"
                        f"cache_default_ttl = {CACHE_TTL_S}\n"
                        f"stats_users = {ROLE}\n", 1)
    ini.write_text(text)


class CachePooler(Pooler):
    """pgsluice as in bench.py, plus add_cache_settings."""

    def write_config(self):
        super().write_config()
        add_cache_settings(self.ini)


def create_table(pg):
    """llm_cache, owned by the bench role, in shared buffers."""
    pg.psql(f"CREATE TABLE llm_cache (k int PRIMARY KEY, answer text NOT NULL);"
            f"INSERT INTO llm_cache SELECT k, left('completion ' || k || ': ' || "
            f"repeat(md5(k::text) || ' ', 20), {ANSWER_BYTES}) "
            f"FROM generate_series(1, {ROWS}) k;"
            f"ALTER TABLE llm_cache OWNER TO {ROLE}", dbname=DBNAME)
    pg.psql("VACUUM ANALYZE llm_cache", dbname=DBNAME)
    pg.psql("SELECT pg_prewarm('llm_cache'); SELECT pg_prewarm('llm_cache_pkey'); CHECKPOINT",
            dbname=DBNAME, check=False)
    out = pg.psql("SELECT count(*), round(avg(octet_length(answer))) FROM llm_cache",
                  dbname=DBNAME).strip()
    log(f"bench: llm_cache: rows, average answer bytes = {out}")


def show_cache(settings, pg, port):
    """SHOW CACHE on pgsluice's console as a dict of ints (hit_rate a float), or None."""
    cmd = [str(pg.bindir / "psql"), "-X", "-A", "-F", "|", "-P", "footer=off",
           "-h", "127.0.0.1", "-p", str(port), "-U", ROLE, "-d", "pgsluice", "-c", "SHOW CACHE"]
    env = dict(os.environ, PGPASSWORD=settings.password, PGSSLMODE="disable",
               PGCONNECT_TIMEOUT="10")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        log(f"bench: SHOW CACHE: {e}")
        return None
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or len(lines) != 2:
        log(f"bench: SHOW CACHE failed ({out.returncode}): {out.stdout}{out.stderr}")
        return None
    try:
        return {name: (float(v) if name == "hit_rate" else int(v))
                for name, v in zip(lines[0].split("|"), lines[1].split("|"))}
    except ValueError:
        log(f"bench: SHOW CACHE: cannot read {lines!r}")
        return None


def delta(before, after):
    """(hits, misses) between two SHOW CACHE readings, or None."""
    if before is None or after is None:
        return None
    return after["hits"] - before["hits"], after["misses"] - before["misses"]


def log_problems(path):
    """The lines of pgsluice's log at WARNING or above."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines()
            if re.search(r"\b(WARNING|ERROR|FATAL|PANIC)\b", line)]


def report(settings, machine, results, lookups, elapsed_s, final, problems):
    out = ["## Completion cache: a pgsluice cache hit vs the same lookup direct and through "
           "PgBouncer\n"]
    out.append(f"Command: `{COMMAND}`  ")
    out.append(f"Settings: pool_mode=transaction, default_pool_size={settings.pool_size}, "
               f"max_client_conn=1000, auth_type={settings.auth}; pgsluice cache_default_ttl="
               f"{CACHE_TTL_S} (other cache settings at their defaults), no ai_database; "
               f"llm_cache {ROWS} rows of {ANSWER_BYTES}-byte answers, k random(1, {HOT_KEYS}); "
               f"pgbench -n -f <script> -j {settings.threads} -T {settings.seconds} "
               f"(+ a connect allowance), {settings.rounds} round(s) per cell, median shown; "
               f"before each hit run pgbench -c 1 -t {WARMUP_TX} fills the cache; total run "
               f"time {elapsed_s / 60:.1f} min.\n")
    for key, value in machine:
        out.append(f"- {key}: {value}")
    out.append("")
    out.append("| mode | clients | " + " | ".join(f"tps {LABELS[t]}" for t in TARGETS) + " | "
               + " | ".join(f"lat ms {LABELS[t]}" for t in TARGETS)
               + " | hit/direct | hit/pgbouncer | hit/untagged | hits | misses |")
    out.append("|---|--:|" + "--:|" * (2 * len(TARGETS) + 5))
    failures = []
    for mode in settings.modes:
        for clients in settings.clients:
            cells = {t: bench.cell(settings, results[(mode, clients, t)]) for t in TARGETS}
            for t in TARGETS:
                failures += [(t, mode, clients, r) for r in results[(mode, clients, t)]
                             if not r.ok]
            counts = lookups[(mode, clients)]
            hits = "?" if None in counts else str(sum(h for h, _ in counts))
            misses = "?" if None in counts else str(sum(m for _, m in counts))
            out.append(f"| {mode} | {clients} | "
                       + " | ".join(cells[t][0] for t in TARGETS) + " | "
                       + " | ".join(cells[t][1] for t in TARGETS) + " | "
                       + bench.ratio(cells["hit"][2], cells["direct"][2]) + " | "
                       + bench.ratio(cells["hit"][2], cells["pgbouncer"][2]) + " | "
                       + bench.ratio(cells["hit"][2], cells["untagged"][2]) + " | "
                       + f"{hits} | {misses} |")
    if failures:
        out.append("\nFailures:\n")
        for t, mode, clients, r in failures:
            out.append(f"- {LABELS[t]}, {mode}, {clients} clients, round {r.round}: "
                       f"{r.failure()}" + (f": `{r.error[:200]}`" if r.error else ""))
    out.append("\n" + verdict(results, lookups))
    if final is not None:
        out.append("\nSHOW CACHE after all runs (warm-ups included): "
                   + ", ".join(f"{k} {v}" for k, v in final.items()) + ".")
    else:
        out.append("\nSHOW CACHE after all runs: **could not be read**.")
    if problems:
        out.append(f"\npgsluice's log has {len(problems)} line(s) at WARNING or above; "
                   f"the first:\n")
        out += [f"    {line}" for line in problems[:5]]
    else:
        out.append("\npgsluice's log has no line at WARNING or above.")
    return "\n".join(out) + "\n"


def verdict(results, lookups):
    """One sentence on the hit runs' lookups: all hits, or what was not."""
    processed = hits = misses = 0
    unknown = False
    for key, counts in lookups.items():
        runs = results[key + ("hit",)]
        for run, count in zip(runs, counts):
            if count is None:
                unknown = True
                continue
            processed += run.processed or 0
            hits += count[0]
            misses += count[1]
    text = (f"Hit runs (warm-ups not counted): pgbench reported {processed} transactions; "
            f"SHOW CACHE counted {hits} hits and {misses} misses")
    if unknown:
        return text + ", **some runs could not be counted** (SHOW CACHE failed)."
    rate = f"{100 * hits / (hits + misses):.2f}%" if hits + misses else "-"
    if misses == 0 and hits == processed:
        return text + f": hit rate {rate}, every lookup answered from the cache."
    return (text + f": hit rate {rate}. **Not every lookup was a hit**"
            + ("" if hits + misses == processed else
               f" (and {hits + misses} lookups for {processed} transactions)") + ".")


def main():
    global COMMAND
    COMMAND = bench.user_command()     # before the defaults below are set
    os.environ.setdefault("BENCH_CLIENTS", "10 50")
    os.environ.setdefault("BENCH_SECONDS", "8")
    os.environ.setdefault("BENCH_ROUNDS", "1")
    os.environ.setdefault("BENCH_SCALE", "1")      # pgbench_accounts is not used here
    settings = bench.Settings()
    if settings.callgrind:
        log("bench: BENCH_CALLGRIND is not used with BENCH_CACHE=1; ignoring it")

    def body(account, tmp, logdir, started):
        scripts = {"tagged": tmp / "tagged.sql", "untagged": tmp / "untagged.sql"}
        scripts["tagged"].write_text(script_text(True))
        scripts["untagged"].write_text(script_text(False))
        script_of = {"direct": "tagged", "pgbouncer": "tagged", "untagged": "untagged",
                     "hit": "tagged"}

        pg = bench.start_postgres(settings, tmp, account)
        create_table(pg)

        bouncer = Pooler("pgbouncer", settings.pgbouncer, tmp / "pgbouncer", account,
                         settings, pg, settings.password)
        sluice = CachePooler("pgsluice", settings.pgsluice_copy, tmp / "pgsluice", None,
                             settings, pg, settings.password)
        poolers = {"pgbouncer": bouncer, "untagged": sluice, "hit": sluice}
        for p in (bouncer, sluice):
            p.start()
            log(f"bench: {p.name} on port {p.port}")
        machine = bench.machine_description(settings, pg)

        cells = [(m, c) for m in settings.modes for c in settings.clients]
        total = len(cells) * settings.rounds * len(TARGETS)
        log(f"bench: {total} runs of {settings.seconds} s: about "
            f"{total * (settings.seconds + 1.5) / 60:.1f} min")
        allowance = ConnectAllowance(settings.clients)
        results = {}
        lookups = {}       # (mode, clients): [(hits, misses) or None per hit run]
        done = 0
        for mode, clients in cells:
            for t in TARGETS:
                results[(mode, clients, t)] = []
            lookups[(mode, clients)] = []
            for rnd in range(1, settings.rounds + 1):
                for t in TARGETS:
                    pooler = poolers.get(t)
                    if pooler is not None and not pooler.alive():
                        log(f"bench: {pooler.name} is not running (exit "
                            f"{pooler.proc.returncode}); restarting it:\n"
                            f"{tail(pooler.logfile, 10)}")
                        pooler.restarts += 1
                        pooler.start()
                    port = pooler.port if pooler is not None else pg.port
                    before = None
                    if t == "hit":
                        warm = Run("warmup", mode, clients, rnd)
                        pgbench_script(settings, port, mode, 1, warm, scripts["tagged"],
                                       transactions=WARMUP_TX, logdir=logdir)
                        if not warm.ok:
                            log(f"bench: warm-up {mode} c={clients}: {warm.failure()} "
                                f"{warm.error}")
                        before = show_cache(settings, pg, port)
                    run = Run(t, mode, clients, rnd)
                    pgbench_script(settings, port, mode, clients, run, scripts[script_of[t]],
                                   seconds=settings.seconds + allowance.seconds(clients),
                                   logdir=logdir)
                    allowance.record(clients, run.connect_ms)
                    if pooler is not None and not pooler.alive():
                        run.pooler_died = True
                    what = ""
                    if t == "hit":
                        counts = delta(before, show_cache(settings, pg, port))
                        lookups[(mode, clients)].append(counts)
                        what = (f", hits/misses {counts[0]}/{counts[1]}" if counts
                                else ", SHOW CACHE failed")
                    results[(mode, clients, t)].append(run)
                    done += 1
                    what = (f"{run.tps:.0f} tps, {run.latency_ms:.3f} ms" if run.ok
                            else f"{run.failure()} {run.error}") + what
                    log(f"[{done}/{total}] {mode:8} c={clients:<4} round {rnd} {t:9}: {what}")
                    time.sleep(0.5)

        final = show_cache(settings, pg, sluice.port) if sluice.alive() else None
        rc = sluice.stop(timeout=30)
        if rc not in (0, None):
            log(f"bench: pgsluice exited with {rc}:\n{tail(sluice.logfile, 10)}")
        problems = log_problems(sluice.logfile) + log_problems(sluice.stderr)
        text = report(settings, machine, results, lookups, time.monotonic() - started, final,
                      problems)
        print(text, end="", flush=True)
        if settings.out:
            Path(settings.out).write_text(text)
        all_hits = all(c is not None and c[1] == 0 for counts in lookups.values()
                       for c in counts)
        return 0 if all_hits else 1

    return bench.run_in_workspace(settings, "pgsluice-bench-cache-", body,
                                  {"pgsluice": settings.pgsluice, "PgBouncer": settings.pgbouncer})


if __name__ == "__main__":
    sys.exit(main())
