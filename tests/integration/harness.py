# SPDX-License-Identifier: PostgreSQL
"""harness.py - a real PostgreSQL server and a real pooler process for the integration tests.

PostgresServer: initdb into a temporary directory, start on a free loopback
port (unix socket in the same directory), create the roles the tests log in
as, stop/start on demand. When the tests run as root, every PostgreSQL binary
runs as an unprivileged OS user (Debian's "postgres", else "pgsluice-test").

Pooler: one pgsluice process (or any PgBouncer-compatible binary named by
PGSLUICE_BIN) with its own directory holding the ini file, userlist.txt, log
and pidfile. It runs in the foreground as `BIN [-v] CONFIG`; stop() reports
crashes and sanitizer findings instead of hiding them.

Nothing here mocks PostgreSQL: the tests run against a real one.
"""

import atexit
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[2]

# Roles created in the test cluster and the passwords they log in with.
# pg_hba.conf (below) decides which method PostgreSQL uses for each.
APP_PASSWORD = "app_pw"
PASSWORDS = {
    "app": APP_PASSWORD,       # scram-sha-256 towards PostgreSQL
    "pw_user": "pw_pw",        # cleartext ("password") towards PostgreSQL
    "md5_user": "md5_pw",      # md5 towards PostgreSQL
    "trust_user": "trust_pw",  # trust towards PostgreSQL; the pooler still checks this one
}

PG_HBA = """\
# written by tests/integration/harness.py
local all all                  trust
host  all trust_user 127.0.0.1/32 trust
host  all pw_user    127.0.0.1/32 password
host  all md5_user   127.0.0.1/32 md5
host  all all        127.0.0.1/32 scram-sha-256
host  replication all 127.0.0.1/32 scram-sha-256
"""

SANITIZER_REPORT = re.compile(
    r"ERROR: (?:Address|Leak|Memory|Thread|UndefinedBehavior)Sanitizer"
    r"|SUMMARY: \w+Sanitizer"
    r"|runtime error:"
)

CONNECT_TIMEOUT_S = 5      # libpq connect_timeout for every test connection
START_TIMEOUT_S = 10       # pooler must accept connections within this
STOP_TIMEOUT_S = 15        # after SIGTERM (sanitizer leak checks take a moment)
ESCALATE_S = 8             # a shutdown still waiting then gets a second signal (past the 5 s usage drain)


# -- environment -------------------------------------------------------------------
def pooler_binary():
    """The binary under test: PGSLUICE_BIN, else <PGSLUICE_BUILDDIR>/pgsluice, else <repo>/pgsluice."""
    if os.environ.get("PGSLUICE_BIN"):
        return Path(os.environ["PGSLUICE_BIN"]).resolve()
    if os.environ.get("PGSLUICE_BUILDDIR"):
        return Path(os.environ["PGSLUICE_BUILDDIR"]).resolve() / "pgsluice"
    return REPO / "pgsluice"


def sanitized_build():
    """The binary under test has AddressSanitizer: its quarantine and shadow memory make RSS meaningless."""
    try:
        return b"__asan_init" in pooler_binary().read_bytes()
    except OSError:
        return False


def is_pgbouncer(binary=None):
    """True when validating the harness against PgBouncer itself."""
    return Path(binary or pooler_binary()).name == "pgbouncer"


def main_section(binary=None):
    return "pgbouncer" if is_pgbouncer(binary) else "pgsluice"


PORTS_FROM = 10000        # free_port's ports: from here up to the kernel's ephemeral range
PORT_SLICES = 16          # one slice per pytest-xdist worker (gw0..gw15)
_next_port = {}


def _ephemeral_low():
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Not the kernel's choice (bind to port 0): that comes from the ephemeral range, where any
    outgoing connection (a client of another test) may take it as its own port before the
    test's server binds it ("Address already in use", seen in CI with 4 workers). Ports come
    from below that range instead, from this xdist worker's own slice, so neither another
    worker nor a connection can be given the same one; each is checked free by a bind."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) % PORT_SLICES if worker[2:].isdigit() else 0
    size = max((_ephemeral_low() - PORTS_FROM) // PORT_SLICES, 1)
    first = PORTS_FROM + index * size
    for _ in range(size):
        port = _next_port.get(index, first)
        _next_port[index] = first + (port + 1 - first) % size
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free TCP port in {first}..{first + size - 1}")


def port_accepts(host, port, timeout=0.2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def unix_socket_accepts(path, timeout=0.2):
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            return True
    except OSError:
        return False


def service_user():
    """The unprivileged account PostgreSQL runs as when we are root; None otherwise.

    Debian's "postgres" when it exists, else a system user "pgsluice-test"
    (created on first use).
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "pgsluice-test"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    # not check=True: another pytest-xdist worker may have created it meanwhile
    subprocess.run(["useradd", "-r", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin",
                    "pgsluice-test"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return pwd.getpwnam("pgsluice-test")


def give_to(path, account):
    """chown path (recursively) to account, if we are root and account is set."""
    if account is None:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, account.pw_uid, account.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), account.pw_uid, account.pw_gid,
                     follow_symlinks=False)


def as_account(account):
    """subprocess keyword arguments that run a child as account (no-op for None)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def find_pg_bindir():
    """PostgreSQL's server binaries: /usr/lib/postgresql/<highest>/bin, else pg_config, else PATH."""
    candidates = []
    base = Path("/usr/lib/postgresql")
    if base.is_dir():
        versions = sorted((p for p in base.iterdir() if p.name.isdigit()),
                          key=lambda p: int(p.name), reverse=True)
        candidates += [v / "bin" for v in versions]
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    raise RuntimeError("PostgreSQL server binaries (initdb, postgres) not found; "
                       "install the Debian package postgresql")


def tail(text, lines=60):
    return "\n".join(text.splitlines()[-lines:])


# -- PostgreSQL ----------------------------------------------------------------------
class PostgresServer:
    """A throwaway PostgreSQL cluster. host/port for TCP, socket_dir for the unix socket."""

    host = "127.0.0.1"
    admin_user = "postgres"

    def __init__(self, basedir=None):
        self.account = service_user()
        self.bindir = find_pg_bindir()
        self.basedir = Path(basedir or tempfile.mkdtemp(prefix="pgsluice-pg-"))
        self.datadir = self.basedir / "data"
        self.socket_dir = self.basedir / "sock"
        self.logfile = self.basedir / "postgres.log"
        self.port = free_port()
        self.running = False

    # -- running PostgreSQL's own tools ---------------------------------------
    def _env(self):
        env = dict(os.environ, LC_ALL="C", LANG="C", PGHOST=str(self.socket_dir),
                   PGPORT=str(self.port))
        if self.account is not None:
            env["HOME"] = str(self.basedir)
            env["USER"] = env["LOGNAME"] = self.account.pw_name
        return env

    def run_tool(self, args, check=True, timeout=60):
        """Run bindir/args[0] as the service account; returns CompletedProcess (text)."""
        cmd = [str(self.bindir / args[0])] + [str(a) for a in args[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True, env=self._env(),
                             cwd=self.basedir, timeout=timeout, **as_account(self.account))
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n"
                               f"{out.stdout}\n{out.stderr}\n{self.log_text()}")
        return out

    def log_text(self):
        try:
            return tail(self.logfile.read_text(errors="replace"))
        except OSError:
            return ""

    # -- lifecycle -----------------------------------------------------------
    def init(self):
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        give_to(self.basedir, self.account)   # mkdtemp made it 0700 root:root
        self.run_tool(["initdb", "-D", self.datadir, "-U", self.admin_user, "-A", "trust",
                       "-E", "UTF8", "--locale=C", "--no-sync"])
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(f"""
# written by tests/integration/harness.py
listen_addresses = '{self.host}'
port = {self.port}
unix_socket_directories = '{self.socket_dir}'
shared_preload_libraries = 'pg_stat_statements'
max_connections = 100
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
wal_level = logical
""")
        (self.datadir / "pg_hba.conf").write_text(PG_HBA)
        give_to(self.datadir, self.account)
        atexit.register(self._stop_at_exit)
        self.start()
        self.create_roles()

    def start(self):
        """Start (or restart after stop()) and wait until it accepts connections."""
        self.run_tool(["pg_ctl", "-D", self.datadir, "-l", self.logfile, "-w", "-t", "60",
                       "start"])
        self.running = True

    def stop(self, mode="fast"):
        """Stop; existing connections are terminated (mode "fast") or killed ("immediate")."""
        self.run_tool(["pg_ctl", "-D", self.datadir, "-m", mode, "-w", "-t", "60", "stop"])
        self.running = False

    def _stop_at_exit(self):
        # Last resort when the session is torn down abnormally: never leave a server running.
        if self.running:
            self.run_tool(["pg_ctl", "-D", self.datadir, "-m", "immediate", "-w", "stop"],
                          check=False)
            self.running = False

    def destroy(self, keep=False):
        if self.running:
            self.stop(mode="immediate")
        if not keep:
            shutil.rmtree(self.basedir, ignore_errors=True)

    # -- direct access (bypassing the pooler) --------------------------------
    def dsn(self, user=None, password=None, dbname="app", **params):
        """A libpq connection string for a direct TCP connection to PostgreSQL."""
        user = user or "app"
        if password is None:
            password = PASSWORDS.get(user)
        parts = {"host": self.host, "port": self.port, "user": user, "dbname": dbname,
                 "connect_timeout": CONNECT_TIMEOUT_S}
        if password:
            parts["password"] = password
        parts.update(params)
        return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})

    def connect(self, dbname="app", user=None, autocommit=True, **params):
        """Connect directly. Default: superuser over the unix socket (no password)."""
        if user is None:
            conninfo = psycopg.conninfo.make_conninfo(
                host=str(self.socket_dir), port=str(self.port), user=self.admin_user,
                dbname=dbname, connect_timeout=str(CONNECT_TIMEOUT_S))
        else:
            conninfo = self.dsn(user=user, dbname=dbname, **params)
        return psycopg.connect(conninfo, autocommit=autocommit)

    def query(self, sql, params=None, dbname="app"):
        """Run sql as superuser over the unix socket; returns all rows (or [] for no result)."""
        with self.connect(dbname=dbname) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def psql(self, sql, dbname="app"):
        """Run sql with psql as superuser over the unix socket; returns stdout."""
        return self.run_tool(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-Atq", "-h",
                              self.socket_dir, "-p", self.port, "-U", self.admin_user,
                              "-d", dbname, "-c", sql]).stdout

    def create_roles(self):
        with self.connect(dbname="postgres") as conn:
            conn.execute("CREATE ROLE app LOGIN PASSWORD 'app_pw'")
            conn.execute("CREATE ROLE trust_user LOGIN")
            conn.execute("CREATE ROLE pw_user LOGIN PASSWORD 'pw_pw'")
            conn.execute("SET password_encryption = 'md5'")
            conn.execute("CREATE ROLE md5_user LOGIN PASSWORD 'md5_pw'")
            conn.execute("RESET password_encryption")
            conn.execute("CREATE DATABASE app OWNER app")

    def end_leftover_backends(self):
        """End the TCP client backends still there once a test's poolers have exited.

        A backend running a statement (a test's pg_sleep(10) whose pooler is gone)
        notices its closed socket only when the statement ends; the next test on this
        server (any test, in a pytest-xdist worker's order) must not count it as its
        pooler's. Waits up to 5 s for each (pg_terminate_backend's timeout)."""
        with self.connect(dbname="postgres") as conn:
            conn.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                         " WHERE backend_type = 'client backend' AND client_addr IS NOT NULL"
                         " AND pid <> pg_backend_pid()")

    def pooler_backends(self, dbname="app", user="app"):
        """Number of server connections to dbname as user that came in over TCP (the pooler's)."""
        rows = self.query(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND usename = %s"
            " AND backend_type = 'client backend' AND client_addr IS NOT NULL",
            (dbname, user), dbname="postgres")
        return rows[0][0]


# -- the pooler ------------------------------------------------------------------------
def _ini_value(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


class Pooler:
    """One pooler process under test, with its own directory and config.

    overrides: keys of the main section ([pgsluice], or [pgbouncer] when the
    binary is PgBouncer); a value of None removes a default key.
    databases: extra [databases] entries (name -> connection string), e.g. "*".
    extra_ini: raw text appended to the main section (e.g. unknown keys).

    limits: lines of a [limits] section (key -> value, e.g. {"alice": "requests_per_minute=2"}),
    written after [databases]; empty (the default): no [limits] section. Set the
    attribute before start() (sluice(start=False)), or change it and call reload().
    """

    def __init__(self, pg, workdir, overrides=None, databases=None, extra_ini="",
                 verbose=None, binary=None):
        self.pg = pg
        self.binary = Path(binary or pooler_binary())
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = "127.0.0.1"
        self.ini_path = self.workdir / ("pgbouncer.ini" if is_pgbouncer(self.binary)
                                        else "pgsluice.ini")
        self.userlist_path = self.workdir / "userlist.txt"
        self.logfile = self.workdir / "pooler.log"
        self.stderr_path = self.workdir / "stderr.log"
        self.pidfile = self.workdir / "pooler.pid"
        self.overrides = dict(overrides or {})
        self.databases = dict(databases or {})
        self.extra_ini = extra_ini
        self.limits = {}
        if verbose is None:
            verbose = os.environ.get("SLUICE_TEST_VERBOSE", "") not in ("", "0")
        self.verbose = verbose
        self.proc = None
        self._stopped = False
        self.signal_sent = None
        # Called in the child before exec (subprocess's preexec_fn), e.g. to set a
        # resource limit; None (the default): nothing.
        self.child_setup = None
        # PgBouncer refuses to run as root; pgsluice does not need to drop privileges.
        self.account = service_user() if is_pgbouncer(self.binary) else None

    # -- configuration -------------------------------------------------------
    def settings(self):
        s = {
            "listen_addr": self.host,
            "listen_port": self.port,
            "unix_socket_dir": self.workdir,
            "auth_type": "scram-sha-256",
            "auth_file": self.userlist_path,
            "logfile": self.logfile,
            "pidfile": self.pidfile,
            "pool_mode": "session",
            "server_login_retry": 1,
            "admin_users": "app",
        }
        if not is_pgbouncer():
            # pgsluice's own: the usage journal of this pooler, not /var/lib's
            s["usage_journal_dir"] = self.workdir / "journal"
        s.update(self.overrides)
        return {k: v for k, v in s.items() if v is not None}

    def database_entries(self):
        pg = f"host={self.pg.host} port={self.pg.port}"
        entries = {
            "app": f"{pg} dbname=app",
            "trustdb": f"{pg} dbname=app user=trust_user",
            "pwdb": f"{pg} dbname=app user=pw_user",
            "md5db": f"{pg} dbname=app user=md5_user",
            "scramdb": f"{pg} dbname=app user=app",
        }
        entries.update(self.databases)
        return {k: v for k, v in entries.items() if v is not None}

    def write_config(self):
        """Write the ini file and userlist.txt; returns the ini text."""
        lines = [f"[{main_section(self.binary)}]"]
        lines += [f"{k} = {_ini_value(v)}" for k, v in self.settings().items()]
        if self.extra_ini:
            lines += self.extra_ini.strip("\n").splitlines()
        lines += ["", "[databases]"]
        lines += [f"{k} = {v}" for k, v in self.database_entries().items()]
        if self.limits:
            lines += ["", "[limits]"]
            lines += [f"{k} = {v}" for k, v in self.limits.items()]
        text = "\n".join(lines) + "\n"
        self.ini_path.write_text(text)
        self.userlist_path.write_text(
            "".join(f'"{user}" "{pw}"\n' for user, pw in PASSWORDS.items()))
        give_to(self.workdir, self.account)
        return text

    def line_of(self, key):
        """1-based line number of key in the written ini file."""
        for n, line in enumerate(self.ini_path.read_text().splitlines(), 1):
            if re.match(rf"\s*{re.escape(key)}\s*=", line):
                return n
        raise KeyError(key)

    def command(self, *extra):
        return [str(self.binary)] + (["-v"] if self.verbose else []) + list(extra) + [
            str(self.ini_path)]

    # -- lifecycle -----------------------------------------------------------
    def start(self):
        if not self.binary.exists():
            raise FileNotFoundError(f"pooler binary {self.binary} does not exist: build it "
                                    "(scripts/test) or set PGSLUICE_BIN")
        self.write_config()
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=self._stderr, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, preexec_fn=self.child_setup,
                                     **as_account(self.account))
        atexit.register(self._kill_at_exit)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._stopped = True     # reported here, not again at teardown
                self._stderr.close()
                raise RuntimeError(f"pooler exited with {self.proc.returncode} during start:\n"
                                   f"{self.log_text()}")
            # the TCP port may accept before the unix socket listens (or, with
            # so_reuseport, because another process has it): wait for both
            unix_dir = self.settings().get("unix_socket_dir")
            if port_accepts(self.host, self.port) and (
                    not unix_dir or unix_socket_accepts(Path(unix_dir) / f".s.PGSQL.{self.port}")):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"pooler did not accept connections on port {self.port} within "
                           f"{START_TIMEOUT_S} s:\n{self.log_text()}")

    def _kill_at_exit(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    @property
    def pid(self):
        return self.proc.pid

    def reload(self, **overrides):
        """Merge overrides into the config, rewrite the ini file and send SIGHUP."""
        self.overrides.update(overrides)
        self.write_config()
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, sig=signal.SIGINT):
        """Stop the process; returns a list of problems (crash, hang, sanitizer report).

        SIGINT by default (PgBouncer's SHUTDOWN WAIT_FOR_SERVERS): clients a test left
        connected are closed once idle, where SIGTERM would wait for them to disconnect.
        A SIGINT or SIGTERM still waiting after ESCALATE_S is sent again (PgBouncer's
        fast exit), so a client left inside a transaction does not hold the test up."""
        problems = []
        if self.proc is None or self._stopped:
            return problems
        self._stopped = True
        if self.proc.poll() is not None:
            problems.append(f"pooler exited on its own with status {self.proc.returncode} "
                            "before the test ended")
        else:
            self.signal_sent = sig
            self.proc.send_signal(sig)
            try:
                if sig in (signal.SIGINT, signal.SIGTERM):
                    try:
                        self.proc.wait(timeout=ESCALATE_S)
                    except subprocess.TimeoutExpired:
                        self.proc.send_signal(sig)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problems.append(f"pooler did not exit within {STOP_TIMEOUT_S} s of "
                                f"{signal.Signals(sig).name}")
        code = self.proc.returncode
        if code < 0 and -code != self.signal_sent and -code != signal.SIGKILL:
            problems.append(f"pooler died of signal {signal.Signals(-code).name}")
        self._stderr.close()
        reports = [line for line in self.log_text(lines=None).splitlines()
                   if SANITIZER_REPORT.search(line)]
        if reports:
            problems.append("sanitizer report:\n" + "\n".join(reports[:20]))
        if problems:
            problems.append("pooler output:\n" + self.log_text())
        return problems

    def log_text(self, lines=80):
        """The pooler's logfile followed by its stderr (last `lines` lines of each; None: all)."""
        out = []
        for path in (self.logfile, self.stderr_path):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            out.append(f"--- {path.name} ---\n" + (text if lines is None else tail(text, lines)))
        return "\n".join(out)

    # -- clients -------------------------------------------------------------
    def dsn(self, user="app", password=None, dbname="app", **params):
        """A libpq connection string to the pooler; password defaults to the user's own."""
        if password is None:
            password = PASSWORDS.get(user)
        parts = {"host": self.host, "port": self.port, "user": user, "dbname": dbname,
                 "connect_timeout": CONNECT_TIMEOUT_S}
        if password:
            parts["password"] = password
        parts.update(params)
        return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})

    def connect(self, user="app", password=None, dbname="app", autocommit=True, **params):
        return psycopg.connect(self.dsn(user, password, dbname, **params), autocommit=autocommit)


def rss_bytes(pid):
    """VmRSS of process pid, bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def run_binary(args, timeout=10, binary=None, cwd=None):
    """Run the pooler binary to completion (e.g. -V, a bad config); returns CompletedProcess.

    stdout and stderr are both in .stdout (the order the user would see them).
    """
    binary = Path(binary or pooler_binary())
    account = service_user() if is_pgbouncer(binary) else None
    return subprocess.run([str(binary)] + [str(a) for a in args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, cwd=cwd,
                          stdin=subprocess.DEVNULL, **as_account(account))


def wait_for(predicate, timeout, interval=0.05, what="condition"):
    """Poll predicate until it returns a true value (returned); fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


def wait_until(pred, timeout, what):
    """wait_for with polls every 0.1 s, as the AI tests use it."""
    return wait_for(pred, timeout, interval=0.1, what=what)
