# SPDX-License-Identifier: PostgreSQL
"""The container recipe and the deploy examples (Dockerfile, deploy/).

Docker is not available to the suite, so the container's entry point is run
here directly, as the image runs it: deploy/docker-entrypoint.sh writes an
ini from PGSLUICE_* variables, pgsluice accepts it (--check-config), serves
a query with it, and the HEALTHCHECK command reports the metrics endpoint.
The compose file and the Kubernetes manifests are parsed and their pgsluice
configuration checked by the binary; their probes must point at the port
the configuration serves metrics on.
"""

import configparser
import io
import os
import re
import signal
import subprocess
from pathlib import Path

import psycopg
import pytest
import yaml

import harness

ROOT = harness.REPO
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"
DEPLOY = ROOT / "deploy"

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="pgsluice's own deploy recipes")


def entrypoint(args, env, timeout=30):
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PGSLUICE_BIN": str(harness.pooler_binary())}
    full.update(env)
    return subprocess.run([str(ENTRYPOINT)] + args, env=full, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def read_ini(source):
    """The ini at a path, or in a text stream."""
    ini = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=(";", "#"))
    ini.optionxform = str
    if isinstance(source, io.StringIO):
        ini.read_file(source)
    else:
        ini.read(source)
    return ini


def test_entrypoint_writes_an_ini_from_the_environment_that_check_config_accepts(tmp_path):
    config = tmp_path / "etc" / "pgsluice.ini"
    env = {"PGSLUICE_CONFIG": str(config),
           "PGSLUICE_DB_APP": "host=db.internal port=5432 dbname=app user=app",
           "PGSLUICE_DB_REPORTS": "host=db.internal dbname=reports",
           "PGSLUICE_AUTH_USERS": 'app:s3cr"et,reader:a:b',
           "PGSLUICE_POOL_MODE": "transaction",
           "PGSLUICE_MAX_CLIENT_CONN": "500",
           "PGSLUICE_AI_DATABASE": "app",
           "PGSLUICE_USAGE_JOURNAL_DIR": str(tmp_path / "journal"),
           "PGSLUICE_LIMITS": "default = requests_per_minute=600; alice = tokens_per_day=1000"}
    out = entrypoint(["check"], env)
    assert out.returncode == 0, out.stdout
    assert "is valid" in out.stdout, out.stdout
    ini = read_ini(config)
    assert dict(ini["databases"]) == {"app": "host=db.internal port=5432 dbname=app user=app",
                                      "reports": "host=db.internal dbname=reports"}
    main = ini["pgsluice"]
    assert main["pool_mode"] == "transaction" and main["max_client_conn"] == "500"
    assert main["listen_addr"] == "*" and main["metrics_listen_port"] == "9127"
    assert main["auth_type"] == "scram-sha-256"
    assert dict(ini["limits"]) == {"default": "requests_per_minute=600",
                                   "alice": "tokens_per_day=1000"}
    userlist = Path(main["auth_file"])
    assert userlist.read_text() == '"app" "s3cr""et"\n"reader" "a:b"\n'
    assert userlist.stat().st_mode & 0o077 == 0, "the userlist holds passwords: 0600"
    # nothing but the two files was made: --check-config starts nothing
    assert sorted(p.name for p in config.parent.iterdir()) == ["pgsluice.ini", "userlist.txt"]
    assert not (tmp_path / "journal").exists()


def test_entrypoint_reports_a_bad_variable(tmp_path):
    env = {"PGSLUICE_CONFIG": str(tmp_path / "pgsluice.ini"),
           "PGSLUICE_DB_APP": "host=db nonsense=1", "PGSLUICE_LISTEN_PORT": "http"}
    out = entrypoint(["check"], env)
    assert out.returncode == 1, out.stdout
    assert "listen_port" in out.stdout and "nonsense" in out.stdout, out.stdout


def test_entrypoint_keeps_a_mounted_ini(tmp_path):
    config = tmp_path / "pgsluice.ini"
    text = "[databases]\napp = host=127.0.0.1 dbname=app\n[pgsluice]\nlisten_port = 7777\n"
    config.write_text(text)
    out = entrypoint(["check"], {"PGSLUICE_CONFIG": str(config), "PGSLUICE_LISTEN_PORT": "1"})
    assert out.returncode == 0, out.stdout
    assert config.read_text() == text


def test_entrypoint_runs_pgsluice_and_healthcheck_follows_the_metrics_port(pg, tmp_path):
    if not pg.running:
        pg.start()
    port, metrics = harness.free_port(), harness.free_port()
    env = {"PGSLUICE_CONFIG": str(tmp_path / "pgsluice.ini"),
           "PGSLUICE_DB_APP": f"host={pg.host} port={pg.port} dbname=app",
           "PGSLUICE_AUTH_USERS": f"app:{harness.PASSWORDS['app']}",
           "PGSLUICE_LISTEN_ADDR": "127.0.0.1", "PGSLUICE_LISTEN_PORT": str(port),
           "PGSLUICE_UNIX_SOCKET_DIR": "",
           "PGSLUICE_METRICS_LISTEN_ADDR": "127.0.0.1",
           "PGSLUICE_METRICS_LISTEN_PORT": str(metrics),
           "PGSLUICE_USAGE_JOURNAL_DIR": str(tmp_path / "journal")}
    assert entrypoint(["healthcheck"], env).returncode != 0, "healthy before pgsluice runs"
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PGSLUICE_BIN": str(harness.pooler_binary()), **env}
    log = open(tmp_path / "pgsluice.log", "wb")
    proc = subprocess.Popen([str(ENTRYPOINT)], env=full, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        harness.wait_for(lambda: harness.port_accepts("127.0.0.1", port) or proc.poll() is not None,
                         timeout=20, what="pgsluice listening")
        assert proc.poll() is None, (tmp_path / "pgsluice.log").read_text()
        url = f"postgresql://app:{harness.PASSWORDS['app']}@127.0.0.1:{port}/app"
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT 40 + 2").fetchone() == (42,)
        health = entrypoint(["healthcheck"], env)
        assert health.returncode == 0, health.stdout
    finally:
        proc.send_signal(signal.SIGINT)   # the image's STOPSIGNAL
        rc = proc.wait(timeout=30)
        log.close()
    assert rc == 0, (tmp_path / "pgsluice.log").read_text()
    assert entrypoint(["healthcheck"], env).returncode != 0, "healthy after pgsluice stopped"


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms == ["debian:bookworm-slim", "debian:bookworm-slim"], froms
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), users
    assert re.search(r"^HEALTHCHECK .*\n?.*docker-entrypoint.sh\", \"healthcheck\"", text, re.M), text
    assert re.search(r'^ENTRYPOINT \["docker-entrypoint.sh"\]', text, re.M)
    assert "deploy/docker-entrypoint.sh /out/usr/local/bin/docker-entrypoint.sh" in text
    assert re.search(r"^STOPSIGNAL SIGINT", text, re.M)


def test_compose_file_runs_postgres_pgsluice_and_a_tagged_query(tmp_path):
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "pgsluice", "app"} <= set(services), services.keys()
    app_command = " ".join(services["app"]["command"])
    assert "@pgsluice:6432/" in app_command and "ai_user=" in app_command, app_command
    assert services["app"]["depends_on"]["pgsluice"]["condition"] == "service_healthy"
    env = {k: str(v) for k, v in services["pgsluice"]["environment"].items()}
    env["PGSLUICE_CONFIG"] = str(tmp_path / "pgsluice.ini")
    env["PGSLUICE_USAGE_JOURNAL_DIR"] = str(tmp_path / "journal")
    out = entrypoint(["check"], env)
    assert out.returncode == 0, out.stdout


def test_kubernetes_sidecar_config_is_valid_and_probes_use_the_metrics_port(tmp_path):
    docs = {}
    for name in ("configmap.yaml", "secret.yaml", "deployment.yaml"):
        doc = yaml.safe_load((DEPLOY / "kubernetes" / name).read_text())
        docs[doc["kind"]] = doc
    ini_text = docs["ConfigMap"]["data"]["pgsluice.ini"]
    (tmp_path / "userlist.txt").write_text(docs["Secret"]["stringData"]["userlist.txt"])
    ini_text = re.sub(r"^auth_file = .*$", f"auth_file = {tmp_path / 'userlist.txt'}", ini_text,
                      flags=re.M)
    (tmp_path / "pgsluice.ini").write_text(ini_text)
    out = harness.run_binary(["--check-config", tmp_path / "pgsluice.ini"])
    assert out.returncode == 0, out.stdout

    main = read_ini(io.StringIO(docs["ConfigMap"]["data"]["pgsluice.ini"]))["pgsluice"]
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    sidecar = next(c for c in pod.get("initContainers", []) + pod["containers"]
                   if c["name"] == "pgsluice")
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports["metrics"] == int(main["metrics_listen_port"]), ports
    assert ports["postgres"] == int(main["listen_port"]), ports
    for probe in ("readinessProbe", "livenessProbe"):
        assert sidecar[probe]["httpGet"]["port"] in ("metrics", ports["metrics"]), sidecar[probe]
        assert sidecar[probe]["httpGet"]["path"] == "/metrics"
    mounts = {m["mountPath"] for m in sidecar["volumeMounts"]}
    assert "/etc/pgsluice/pgsluice.ini" in mounts, mounts
    assert main["auth_file"].rsplit("/", 1)[0] in mounts, (main["auth_file"], mounts)
    assert main["usage_journal_dir"] in mounts, mounts
