#!/usr/bin/python3
# SPDX-License-Identifier: PostgreSQL
"""bench.py - pgbench select-only against PostgreSQL directly, PgBouncer and pgsluice.

Run through bench/run, which installs what is missing and builds pgsluice first.
Everything lives in one temporary directory: a throwaway PostgreSQL cluster, a
PgBouncer and a pgsluice configured alike (transaction pooling, same pool size,
same auth_type and userlist). For every (mode, clients) cell the three targets
are run in turn - direct, pgbouncer, pgsluice - and the turn is repeated
BENCH_ROUNDS times, so that machine noise hits all three alike; the report shows
the median. A run that exits non-zero, has failed transactions or processed
none is a FAIL, never a number. pgbench's -T includes connecting the clients,
so runs get extra seconds for that (measure()). The report (markdown) goes to
stdout, progress to stderr; BENCH_KEEP=1 keeps every pgbench output.

With BENCH_CALLGRIND=1, each pooler is also run under valgrind --tool=callgrind
for two fixed-count runs (pgbench -c 1 -t N1, -t N2); the difference of the
instruction totals divided by N2 - N1 is the pooler's instructions per
transaction, with start-up, login and shutdown cancelled out.

The method and the latest results: docs/performance.md.
"""

import ctypes
import datetime
import math
import os
import pwd
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("direct", "pgbouncer", "pgsluice")
DBNAME = "bench"
ROLE = "bench"
START_TIMEOUT_S = 20           # a pooler must accept connections within this
CALLGRIND_START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 15
PGBENCH_GRACE_S = 120          # beyond -T: connecting 200 clients, a hung pooler
SHORT_WINDOW = 0.8             # a median from a run that measured < this * BENCH_SECONDS: *


# -- settings ------------------------------------------------------------------------
def env_int(name, default, minimum=1):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        sys.exit(f"bench: {name}={raw!r} is not an integer")
    if value < minimum:
        sys.exit(f"bench: {name}={value} is below {minimum}")
    return value


def env_words(name, default):
    raw = os.environ.get(name, "").replace(",", " ").split()
    return raw or list(default)


class Settings:
    def __init__(self):
        self.seconds = env_int("BENCH_SECONDS", 10)
        self.rounds = env_int("BENCH_ROUNDS", 2)
        self.modes = env_words("BENCH_MODES", ["simple", "extended", "prepared"])
        for mode in self.modes:
            if mode not in ("simple", "extended", "prepared"):
                sys.exit(f"bench: BENCH_MODES: unknown pgbench mode {mode!r}")
        try:
            self.clients = [int(c) for c in env_words("BENCH_CLIENTS", ["10", "50", "200"])]
        except ValueError:
            sys.exit("bench: BENCH_CLIENTS must be integers")
        if any(c < 1 for c in self.clients):
            sys.exit("bench: BENCH_CLIENTS must be >= 1")
        self.threads = env_int("BENCH_THREADS", 2)
        self.scale = env_int("BENCH_SCALE", 10)
        self.pool_size = env_int("BENCH_POOL_SIZE", 10)
        self.auth = os.environ.get("BENCH_AUTH", "md5").strip()
        if self.auth not in ("scram-sha-256", "md5"):
            sys.exit("bench: BENCH_AUTH must be scram-sha-256 or md5")
        self.pgsluice = Path(os.environ.get("BENCH_PGSLUICE_BIN")
                             or os.environ.get("BENCH_PGSLUICE")
                             or ROOT / "build" / "pgsluice").resolve()
        self.pgbouncer = Path(os.environ.get("BENCH_PGBOUNCER")
                              or shutil.which("pgbouncer") or "/usr/sbin/pgbouncer")
        self.callgrind = os.environ.get("BENCH_CALLGRIND", "0") not in ("", "0")
        self.callgrind_only = os.environ.get("BENCH_CALLGRIND") == "only"
        tx = [int(t) for t in env_words("BENCH_CALLGRIND_TX", ["2000", "6000"])]
        if len(tx) != 2 or not 0 < tx[0] < tx[1]:
            sys.exit("bench: BENCH_CALLGRIND_TX must be two counts N1 < N2")
        self.callgrind_tx = tx
        self.max_client_conn = 1000              # targets.py raises it for 1,000 clients
        self.out = os.environ.get("BENCH_OUT")
        self.keep = os.environ.get("BENCH_KEEP", "0") not in ("", "0")
        self.password = secrets.token_hex(16)    # of the role "bench", in both userlists
        self.pgsluice_copy = None                # set once the temporary directory exists

    def command_line(self):
        """The command as the user typed it (see user_command)."""
        return user_command()


def user_command():
    """The command as the user typed it: the BENCH_* variables set now, then bench/run. A
    benchmark that sets defaults of its own calls this before it does."""
    internal = {"BENCH_PGSLUICE_BIN"}
    words = [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items())
             if k.startswith("BENCH_") and k not in internal]
    return " ".join(words + ["bench/run"])


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# -- processes -----------------------------------------------------------------------
CHILDREN = []   # (Popen, how to stop it) of everything still running, in start order

_libc = None


def _die_with_parent():
    """In the child before exec: get SIGKILL when bench.py itself is killed (-9)."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:   # noqa: BLE001 - best effort; the trap in main() is the real cleanup
        pass


def as_account(account):
    """subprocess keyword arguments that run a child as account (no-op for None)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def service_account():
    """The unprivileged OS user for PostgreSQL and PgBouncer when we are root; else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "pgsluice-test"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    subprocess.run(["useradd", "-r", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin",
                    "pgsluice-test"], check=True)
    return pwd.getpwnam("pgsluice-test")


def give_to(path, account):
    if account is None:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, account.pw_uid, account.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), account.pw_uid, account.pw_gid,
                     follow_symlinks=False)


def spawn(cmd, logpath, account=None, cwd=None, env=None, stop="term"):
    """Start cmd in its own session (Ctrl-C reaches only us); stopped by stop_child()."""
    out = open(logpath, "ab")
    try:
        proc = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                start_new_session=True, preexec_fn=_die_with_parent,
                                **as_account(account))
    finally:
        out.close()
    CHILDREN.append((proc, stop))
    return proc


def stop_child(proc, how="term", timeout=STOP_TIMEOUT_S):
    """Stop one child: "term" = SIGTERM; "postgres" = fast shutdown, then immediate."""
    if proc.poll() is None:
        sigs = [signal.SIGINT, signal.SIGQUIT] if how == "postgres" else [signal.SIGTERM]
        for sig in sigs + [signal.SIGKILL]:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
    CHILDREN[:] = [(p, h) for p, h in CHILDREN if p is not proc]


def stop_all_children():
    for proc, how in reversed(list(CHILDREN)):
        stop_child(proc, how, timeout=10)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def tail(path, lines=30):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def output_of(cmd, **kw):
    try:
        out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                             timeout=30, **kw)
        return (out.stdout or out.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# -- PostgreSQL ----------------------------------------------------------------------
def find_pg_bindir():
    base = Path("/usr/lib/postgresql")
    if base.is_dir():
        for v in sorted((p for p in base.iterdir() if p.name.isdigit()),
                        key=lambda p: int(p.name), reverse=True):
            if (v / "bin" / "postgres").exists() and (v / "bin" / "initdb").exists():
                return v / "bin"
    if shutil.which("initdb") and shutil.which("postgres"):
        return Path(shutil.which("initdb")).parent
    sys.exit("bench: PostgreSQL server binaries not found (install the Debian package postgresql)")


class Postgres:
    """A throwaway cluster in basedir, run in the foreground by the service account."""

    def __init__(self, basedir, account, max_connections, auth):
        self.account = account
        self.bindir = find_pg_bindir()
        self.basedir = basedir
        self.datadir = basedir / "data"
        self.sockdir = basedir / "sock"
        self.logfile = basedir / "postgres.log"
        self.port = free_port()
        self.max_connections = max_connections
        self.auth = auth      # pg_hba method and password_encryption: same as the poolers'
        self.proc = None

    def env(self):
        env = dict(os.environ, LC_ALL="C", LANG="C", PGHOST=str(self.sockdir),
                   PGPORT=str(self.port), PGUSER="postgres")
        if self.account is not None:
            env.update(HOME=str(self.basedir), USER=self.account.pw_name,
                       LOGNAME=self.account.pw_name)
        return env

    def tool(self, args, check=True, timeout=600):
        cmd = [str(self.bindir / args[0])] + [str(a) for a in args[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True, env=self.env(),
                             cwd=self.basedir, timeout=timeout, preexec_fn=_die_with_parent,
                             **as_account(self.account))
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}"
                               f"\n{out.stderr}\n{tail(self.logfile)}")
        return out

    def psql(self, sql, dbname="postgres", check=True):
        return self.tool(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", dbname,
                          "-c", sql], check=check).stdout

    def init(self):
        self.sockdir.mkdir(parents=True)
        give_to(self.basedir, self.account)
        self.tool(["initdb", "-D", self.datadir, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                   "--locale=C", "--no-sync"])
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(f"""
# written by bench/bench.py: a throwaway cluster for benchmarks, not durable
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = '{self.sockdir}'
max_connections = {self.max_connections}
shared_buffers = 512MB
fsync = off
synchronous_commit = off
full_page_writes = off
autovacuum = off
log_min_messages = warning
log_checkpoints = off
password_encryption = '{self.auth}'
""")
        (self.datadir / "pg_hba.conf").write_text(
            "# written by bench/bench.py\n"
            "local all postgres trust\n"
            f"host  all all 127.0.0.1/32 {self.auth}\n")
        give_to(self.datadir, self.account)

    def start(self):
        self.proc = spawn([self.bindir / "postgres", "-D", self.datadir], self.logfile,
                          account=self.account, cwd=self.basedir, env=self.env(),
                          stop="postgres")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited during start:\n{tail(self.logfile)}")
            ready = subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", self.sockdir,
                                    "-p", str(self.port)], env=self.env())
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL did not start within 60 s:\n{tail(self.logfile)}")

    def stop(self):
        if self.proc is not None:
            stop_child(self.proc, "postgres", timeout=30)

    def version(self):
        return output_of([self.bindir / "postgres", "-V"])


# -- poolers -------------------------------------------------------------------------
class Pooler:
    """PgBouncer or pgsluice with its own directory, ini file and userlist."""

    def __init__(self, name, binary, workdir, account, settings, pg, password, wrapper=()):
        self.name = name
        self.binary = binary
        self.workdir = workdir
        self.account = account
        self.settings = settings
        self.pg = pg
        self.password = password
        self.wrapper = list(wrapper)      # e.g. valgrind --tool=callgrind ...
        self.port = free_port()
        self.ini = workdir / f"{name}.ini"
        self.logfile = workdir / f"{name}.log"
        self.stderr = workdir / "stderr.log"
        self.proc = None
        self.restarts = 0

    def write_config(self):
        section = "pgbouncer" if self.name == "pgbouncer" else "pgsluice"
        s = self.settings
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ini.write_text(f"""\
; written by bench/bench.py - PgBouncer and pgsluice get the same settings
[{section}]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir = {self.workdir}
auth_type = {s.auth}
auth_file = {self.workdir / "userlist.txt"}
pool_mode = transaction
default_pool_size = {s.pool_size}
max_client_conn = {s.max_client_conn}
logfile = {self.logfile}
pidfile = {self.workdir / (self.name + ".pid")}
log_connections = 0
log_disconnections = 0
log_stats = 0

[databases]
{DBNAME} = host=127.0.0.1 port={self.pg.port} dbname={DBNAME}
""")
        (self.workdir / "userlist.txt").write_text(f'"{ROLE}" "{self.password}"\n')
        give_to(self.workdir, self.account)

    def start(self, timeout=START_TIMEOUT_S):
        self.write_config()
        (self.workdir / f"{self.name}.pid").unlink(missing_ok=True)   # PgBouncer checks it
        self.proc = spawn(self.wrapper + [self.binary, self.ini], self.stderr,
                          account=self.account, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} during "
                                   f"start:\n{tail(self.logfile)}\n{tail(self.stderr)}")
            if port_accepts(self.port):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not accept connections within {timeout} s:\n"
                           f"{tail(self.logfile)}\n{tail(self.stderr)}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=STOP_TIMEOUT_S):
        if self.proc is not None:
            stop_child(self.proc, "term", timeout=timeout)
            rc = self.proc.returncode
            self.proc = None
            return rc
        return None


# -- pgbench -------------------------------------------------------------------------
class Run:
    """One pgbench run and what it printed."""

    def __init__(self, target, mode, clients, rnd):
        self.target, self.mode, self.clients, self.round = target, mode, clients, rnd
        self.rc = None
        self.tps = self.latency_ms = None
        self.processed = None
        self.failed = 0
        self.aborted = 0
        self.errors = 0            # "pgbench: error:" lines, e.g. a Parse that failed
        self.timed_out = False
        self.connect_ms = None
        self.wall_s = None
        self.duration_s = None     # pgbench -T: connecting all clients counts against it
        self.pooler_died = False
        self.error = ""

    @property
    def window_s(self):
        """Seconds measured after every client had connected."""
        return self.duration_s - (self.connect_ms or 0) / 1000

    @property
    def ok(self):
        return (self.rc == 0 and self.failed == 0 and self.aborted == 0 and self.errors == 0
                and not self.timed_out and not self.pooler_died and bool(self.processed)
                and self.tps is not None)

    def failure(self):
        if self.pooler_died:
            return "FAIL (pooler exited)"
        if self.timed_out:
            return "FAIL (timeout)"
        if self.failed:
            return f"FAIL ({self.failed} failed)"
        if self.aborted:
            return f"FAIL ({self.aborted} failed: clients aborted)"
        if self.errors:
            return f"FAIL ({self.errors} errors)"
        if self.rc != 0:
            return f"FAIL (exit {self.rc})"
        if self.processed == 0:
            return "FAIL (0 transactions)"
        return "FAIL (no tps in output)"

    def parse(self, text):
        m = re.search(r"^tps = ([\d.]+) \(without initial connection time\)", text, re.M)
        self.tps = float(m.group(1)) if m else None
        m = re.search(r"^latency average = ([\d.]+) ms", text, re.M)
        self.latency_ms = float(m.group(1)) if m else None
        m = re.search(r"^number of transactions actually processed: (\d+)", text, re.M)
        self.processed = int(m.group(1)) if m else None
        m = re.search(r"^initial connection time = ([\d.]+) ms", text, re.M)
        self.connect_ms = float(m.group(1)) if m else None
        m = re.search(r"^number of failed transactions: (\d+)", text, re.M)
        self.failed = int(m.group(1)) if m else 0
        self.aborted = len(re.findall(r"client \d+ (?:script \d+ )?aborted", text))
        # pgbench logs some errors without failing the run: a failed PQprepare in
        # -M prepared mode is only logged, and the later Bind may still succeed.
        self.errors = len(re.findall(r"^pgbench: error: (?!Run was aborted)", text, re.M))
        errors = [line.strip() for line in text.splitlines()
                  if re.search(r"\b(error|FATAL|ERROR):", line)]
        self.error = errors[0] if errors else ""


def pgbench(settings, port, mode, clients, run, seconds=None, transactions=None, logdir=None):
    cmd = ["pgbench", "-n", "-S", "-M", mode, "-c", str(clients),
           "-j", str(min(settings.threads, clients)),
           "-h", "127.0.0.1", "-p", str(port), "-U", ROLE]
    cmd += ["-T", str(seconds)] if seconds else ["-t", str(transactions)]
    run.duration_s = seconds
    cmd.append(DBNAME)
    env = dict(os.environ, PGPASSWORD=settings.password, PGCONNECT_TIMEOUT="20",
               PGSSLMODE="disable", PGAPPNAME="bench")
    limit = (seconds or 0) + PGBENCH_GRACE_S + (transactions or 0) // 50
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


# -- the report ----------------------------------------------------------------------
def machine_description(settings, pg):
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        m = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        mem = f"{int(m.group(1)) / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    osname = ""
    try:
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)', Path("/etc/os-release").read_text(), re.M)
        osname = m.group(1) if m else ""
    except OSError:
        pass
    commit = output_of(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]) or "unknown"
    dirty = output_of(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "configure.ac",
                       "Makefile.am"])
    if dirty:
        commit += " + uncommitted changes in src/"
    built = datetime.datetime.fromtimestamp(settings.pgsluice.stat().st_mtime,
                                            datetime.timezone.utc)
    return [
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", f"{len(os.sched_getaffinity(0))} x {cpu} (nproc "
                f"{len(os.sched_getaffinity(0))})"),
        ("memory", mem),
        ("kernel", f"Linux {os.uname().release}" + (f" ({osname})" if osname else "")),
        ("PostgreSQL", pg.version()),
        ("PgBouncer", (output_of([settings.pgbouncer, "-V"]) or "unknown").splitlines()[0]),
        ("pgbench", output_of(["pgbench", "-V"])),
        ("pgsluice", f"{output_of([settings.pgsluice, '-V'])}, git {commit}, binary built "
                     f"{built.strftime('%Y-%m-%d %H:%M UTC')}"),
    ]


def cell(settings, runs):
    """(tps text, latency text, median tps or None) for one target's runs in one cell."""
    bad = [r for r in runs if not r.ok]
    if bad:
        label = bad[0].failure()
        if len(runs) > 1:
            label = label[:-1] + f"; {len(bad)} of {len(runs)} runs)"
        return label, "-", None
    tps = statistics.median(r.tps for r in runs)
    lat = statistics.median(r.latency_ms for r in runs)
    short = "*" if any(r.window_s < SHORT_WINDOW * settings.seconds for r in runs) else ""
    return f"{tps:.0f}{short}", f"{lat:.3f}", tps


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"


def table_of_results(settings, results, out):
    """Append the markdown table of medians, then the failure notes, to out."""
    out.append("| mode | clients | tps direct | tps pgbouncer | tps pgsluice "
               "| lat ms direct | lat ms pgbouncer | lat ms pgsluice "
               "| pgsluice/pgbouncer | pgsluice/direct |")
    out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    notes = {}
    for mode in settings.modes:
        for clients in settings.clients:
            cells = {t: cell(settings, results[(mode, clients, t)]) for t in TARGETS}
            for t in TARGETS:
                for r in results[(mode, clients, t)]:
                    if not r.ok and (t, mode) not in notes:
                        notes[(t, mode)] = (clients, r.failure(), r.error)
            out.append(
                f"| {mode} | {clients} | " + " | ".join(cells[t][0] for t in TARGETS) + " | "
                + " | ".join(cells[t][1] for t in TARGETS) + " | "
                + ratio(cells["pgsluice"][2], cells["pgbouncer"][2]) + " | "
                + ratio(cells["pgsluice"][2], cells["direct"][2]) + " |")
    if any("*" in line for line in out[-len(settings.modes) * len(settings.clients):]):
        out.append(f"\n\\* at least one run of this median measured less than "
                   f"{SHORT_WINDOW * settings.seconds:.0f} s after all clients had connected.")
    if notes:
        out.append("\nFailures (first failing run per target and mode):\n")
        for (t, mode), (clients, label, error) in sorted(notes.items()):
            msg = error if len(error) <= 220 else error[:217] + "..."
            out.append(f"- {t}, {mode}, {clients} clients: {label}" + (f": `{msg}`" if msg else ""))


def report(settings, machine, results, elapsed_s, callgrind_rows):
    out = []
    out.append("## pgbench -S: direct vs PgBouncer vs pgsluice\n")
    out.append(f"Command: `{settings.command_line()}`  ")
    out.append(f"Settings: pool_mode=transaction, default_pool_size={settings.pool_size}, "
               f"max_client_conn=1000, auth_type={settings.auth}; pgbench -S -n "
               f"-j {settings.threads} -T {settings.seconds} (+ a connect allowance), "
               f"scale {settings.scale}, "
               f"{settings.rounds} round(s) per cell, median shown; "
               f"total run time {elapsed_s / 60:.1f} min.\n")
    for key, value in machine:
        out.append(f"- {key}: {value}")
    out.append("")
    if results:
        table_of_results(settings, results, out)
    else:
        out.append("(BENCH_CALLGRIND=only: no throughput runs)")
    if callgrind_rows:
        out.append("\n### Instructions per transaction (callgrind)\n")
        n1, n2 = settings.callgrind_tx
        out.append(f"`valgrind --tool=callgrind` on the pooler only; pgbench -S -c 1 -t {n1} and "
                   f"-t {n2}; (Ir({n2}) - Ir({n1})) / {n2 - n1}.\n")
        out.append("| mode | pgbouncer Ir/tx | pgsluice Ir/tx | pgsluice/pgbouncer |")
        out.append("|---|--:|--:|--:|")
        for mode, values in callgrind_rows:
            texts = [v if isinstance(v, str) else f"{v:.0f}" for v in values]
            nums = [v if not isinstance(v, str) else None for v in values]
            out.append(f"| {mode} | {texts[0]} | {texts[1]} | {ratio(nums[1], nums[0])} |")
    return "\n".join(out) + "\n"


# -- callgrind -----------------------------------------------------------------------
def callgrind_ir(settings, name, binary, workdir, account, pg, mode, transactions, logdir,
                 clients=1):
    """Total instructions of one pooler process serving pgbench -c clients -t transactions
    (transactions per client, as pgbench counts them)."""
    outfile = workdir / f"callgrind.out.{mode}.{clients}.{transactions}"
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outfile}"]
    pooler = Pooler(name, binary, workdir, account, settings, pg, settings.password, wrapper)
    pooler.start(timeout=CALLGRIND_START_TIMEOUT_S)
    run = Run(f"{name}-callgrind", mode, clients, transactions)
    try:
        pgbench(settings, pooler.port, mode, clients, run, transactions=transactions,
                logdir=logdir)
    finally:
        pooler.stop(timeout=60 + clients // 10)
    if not run.ok:
        return None, run.failure()
    if run.processed != transactions * clients:
        return None, f"FAIL ({run.processed} of {transactions * clients} processed)"
    try:
        text = outfile.read_text(errors="replace")
    except OSError:
        return None, "FAIL (no callgrind output)"
    m = re.search(r"^(?:totals|summary):\s+(\d+)", text, re.M)
    if not m:
        return None, "FAIL (no totals in callgrind output)"
    return int(m.group(1)), ""


def run_callgrind(settings, tmp, account, pg, logdir):
    if not shutil.which("valgrind"):
        log("bench: BENCH_CALLGRIND=1 but valgrind is not installed; skipping")
        return []
    n1, n2 = settings.callgrind_tx
    rows = []
    for mode in settings.modes:
        values = []
        for name, binary, acct in (("pgbouncer", settings.pgbouncer, account),
                                   ("pgsluice", settings.pgsluice_copy, None)):
            workdir = tmp / f"callgrind-{name}"
            irs = []
            for n in (n1, n2):
                log(f"callgrind: {name} {mode} -t {n}")
                ir, err = callgrind_ir(settings, name, binary, workdir, acct, pg, mode, n, logdir)
                if ir is None:
                    irs = err
                    break
                irs.append(ir)
            values.append(irs if isinstance(irs, str) else (irs[1] - irs[0]) / (n2 - n1))
            if not isinstance(values[-1], str):
                log(f"callgrind: {name} {mode}: {values[-1]:.0f} instructions per transaction")
            else:
                log(f"callgrind: {name} {mode}: {values[-1]}")
        rows.append((mode, values))
    return rows


class ConnectAllowance:
    """Extra seconds of pgbench -T per client count, for connecting the clients.

    pgbench's -T includes connecting all clients (its tps does not). The allowance
    is the median connect time measured so far for that client count (all targets
    and modes together), rounded: one slow outlier on a loaded machine does not
    lengthen every later run. Before the first measurement it is a guess, one
    second per 100 clients.
    """

    def __init__(self, clients):
        self.connects_s = {c: [] for c in clients}
        self.floor_s = {c: 0 for c in clients}

    def seconds(self, clients):
        measured = self.connects_s[clients]
        if not measured:
            return max(self.floor_s[clients], clients // 100)
        return max(self.floor_s[clients], math.ceil(statistics.median(measured) - 0.1))

    def record(self, clients, connect_ms):
        if connect_ms is not None:
            self.connects_s[clients].append(connect_ms / 1000)

    def at_least(self, clients, seconds):
        self.floor_s[clients] = max(self.floor_s[clients], seconds)


def _stat_fields(pid):
    """/proc/PID/stat's fields after the command name (proc(5): [0] is state, [1] ppid,
    [11] utime, [12] stime, [13] cutime, [14] cstime, in clock ticks); OSError when gone."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid):
    """(user, system) CPU seconds process pid has used so far (/proc/PID/stat, proc(5));
    raises OSError when the process is gone."""
    fields = _stat_fields(pid)
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def family_cpu_seconds(pid):
    """CPU seconds (user + system) process pid and its children have used so far: its
    own, its reaped children's (cutime, cstime) and each live child's (proc(5)). For
    PostgreSQL's postmaster: the whole cluster, backends that came and went included.
    Raises OSError when pid is gone."""
    fields = _stat_fields(pid)
    total = sum(int(fields[i]) for i in (11, 12, 13, 14))
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            child = _stat_fields(entry)
        except OSError:          # gone since the listing; its time is in cutime now
            continue
        if int(child[1]) == pid:
            total += int(child[11]) + int(child[12])
    return total / os.sysconf("SC_CLK_TCK")


def measure(settings, target, port, mode, clients, rnd, allowance, logdir):
    """One timed pgbench run of target, -T BENCH_SECONDS plus the connect allowance.

    A run that spent all of -T connecting (0 transactions, no error) is repeated
    once with an allowance as long as that whole run; if it fails again it is a FAIL.
    """
    for attempt in (1, 2):
        run = Run(target, mode, clients, rnd)
        pgbench(settings, port, mode, clients, run,
                seconds=settings.seconds + allowance.seconds(clients), logdir=logdir)
        allowance.record(clients, run.connect_ms)
        connect_ate_run = (run.rc == 0 and run.processed == 0 and not run.failed
                           and not run.aborted and not run.error)
        if not connect_ate_run or attempt == 2:
            return run
        allowance.at_least(clients, math.ceil(run.wall_s))
        log(f"bench: {target} {mode} c={clients}: connecting took all of the run; "
            f"again with {allowance.seconds(clients)} s for connecting")
    return run


# -- main ----------------------------------------------------------------------------
def start_postgres(settings, tmp, account, max_conn=None):
    """A throwaway PostgreSQL with role and database bench, filled by pgbench -i and
    prewarmed; both bench.py and usage.py measure against it. max_conn: its
    max_connections, by default enough for the largest BENCH_CLIENTS directly."""
    if max_conn is None:
        max_conn = max(settings.clients) + 2 * settings.pool_size + 20
    pg = Postgres(tmp / "pg", account, max_conn, settings.auth)
    log(f"bench: PostgreSQL in {pg.basedir} (port {pg.port}, max_connections {max_conn})")
    pg.init()
    pg.start()
    pg.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{settings.password}'")
    pg.psql(f"CREATE DATABASE {DBNAME} OWNER {ROLE}")
    log(f"bench: pgbench -i -s {settings.scale}")
    init = subprocess.run(["pgbench", "-i", "-q", "-s", str(settings.scale), "-h",
                           "127.0.0.1", "-p", str(pg.port), "-U", ROLE, DBNAME],
                          capture_output=True, text=True, preexec_fn=_die_with_parent,
                          env=dict(os.environ, PGPASSWORD=settings.password))
    if init.returncode != 0:
        raise RuntimeError(f"pgbench -i failed:\n{init.stdout}\n{init.stderr}")
    # Read the table into shared buffers so no run pays for the first reads.
    pg.psql("CREATE EXTENSION IF NOT EXISTS pg_prewarm; SELECT pg_prewarm("
            "'pgbench_accounts'); SELECT pg_prewarm('pgbench_accounts_pkey'); CHECKPOINT",
            dbname=DBNAME, check=False)
    return pg


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def on_signal(signum, frame):
    log(f"bench: stopped by {signal.Signals(signum).name}")
    raise SystemExit(128 + signum)


def run_in_workspace(settings, prefix, body, binaries=None):
    """The frame every benchmark runs in: check the binaries (name -> path) and pgbench, make
    Ctrl-C and SIGTERM stop cleanly, a temporary directory the service account can reach with
    private copies of pgsluice (settings.pgsluice_copy: other work may rebuild build/pgsluice
    while we measure) and of PgBouncer when binaries names it (settings.pgbouncer becomes the
    copy: a binary under a home directory may be out of the service account's reach), then
    body(account, tmp, logdir, started) for the exit status; 130 on Ctrl-C. The directory goes
    afterwards unless BENCH_KEEP=1."""
    for what, path in (binaries or {"pgsluice": settings.pgsluice}).items():
        if not os.access(path, os.X_OK):
            sys.exit(f"bench: {what} binary {path} not found or not executable")
    if not shutil.which("pgbench"):
        sys.exit("bench: pgbench not found")
    # Ctrl-C raises KeyboardInterrupt even when started with SIGINT ignored (e.g. from `cmd &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    raise_fd_limit()

    account = service_account()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(tmp, 0o755)   # the service account must reach its subdirectories
    started = time.monotonic()
    try:
        logdir = tmp / "logs"
        logdir.mkdir()
        (tmp / "bin").mkdir()
        settings.pgsluice_copy = tmp / "bin" / "pgsluice"
        shutil.copy2(settings.pgsluice, settings.pgsluice_copy)
        if "PgBouncer" in (binaries or {}):
            shutil.copy2(settings.pgbouncer, tmp / "bin" / "pgbouncer")
            settings.pgbouncer = tmp / "bin" / "pgbouncer"
        return body(account, tmp, logdir, started)
    except KeyboardInterrupt:
        log("bench: interrupted")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all_children()
        if settings.keep:
            log(f"bench: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main():
    settings = Settings()

    def body(account, tmp, logdir, started):
        pg = start_postgres(settings, tmp, account)

        poolers = {
            "pgbouncer": Pooler("pgbouncer", settings.pgbouncer, tmp / "pgbouncer", account,
                                settings, pg, settings.password),
            "pgsluice": Pooler("pgsluice", settings.pgsluice_copy, tmp / "pgsluice", None,
                               settings, pg, settings.password),
        }
        for p in poolers.values():
            p.start()
            log(f"bench: {p.name} on port {p.port}")
        ports = {"direct": pg.port, **{n: p.port for n, p in poolers.items()}}
        machine = machine_description(settings, pg)

        cells = [] if settings.callgrind_only else [(m, c) for m in settings.modes
                                                    for c in settings.clients]
        total = len(cells) * settings.rounds * len(TARGETS)
        log(f"bench: {total} runs of {settings.seconds} s: about "
            f"{total * (settings.seconds + 1) / 60:.1f} min")
        allowance = ConnectAllowance(settings.clients)
        results = {}
        done = 0
        for mode, clients in cells:
            for t in TARGETS:
                results[(mode, clients, t)] = []
            for rnd in range(1, settings.rounds + 1):
                for t in TARGETS:
                    pooler = poolers.get(t)
                    if pooler is not None and not pooler.alive():
                        log(f"bench: {t} is not running (exit {pooler.proc.returncode}); "
                            f"restarting it:\n{tail(pooler.logfile, 10)}")
                        pooler.restarts += 1
                        pooler.start()
                        ports[t] = pooler.port
                    run = measure(settings, t, ports[t], mode, clients, rnd, allowance, logdir)
                    if pooler is not None and not pooler.alive():
                        run.pooler_died = True
                    results[(mode, clients, t)].append(run)
                    done += 1
                    what = (f"{run.tps:.0f} tps, {run.latency_ms:.3f} ms" if run.ok
                            else f"{run.failure()} {run.error}")
                    what += (f" (connect {run.connect_ms or 0:.0f} ms, "
                             f"wall {run.wall_s:.1f} s)")
                    log(f"[{done}/{total}] {mode:8} c={clients:<4} round {rnd} {t:9}: {what}")
                    time.sleep(0.5)

        callgrind_rows = []
        if settings.callgrind:
            for p in poolers.values():
                p.stop()
            callgrind_rows = run_callgrind(settings, tmp, account, pg, logdir)

        text = report(settings, machine, results, time.monotonic() - started, callgrind_rows)
        print(text, end="", flush=True)
        if settings.out:
            Path(settings.out).write_text(text)
        return 0

    return run_in_workspace(settings, "pgsluice-bench-", body, {"pgsluice": settings.pgsluice, "PgBouncer": settings.pgbouncer})


if __name__ == "__main__":
    sys.exit(main())
