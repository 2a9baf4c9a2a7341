# SPDX-License-Identifier: PostgreSQL
"""The files of src/ call one another one way (issue 18, docs/design.md section 1a).

scripts/callgraph --check fails on a circle of files that call one another by name, and on
a call from src/ai/ into a connection module. The source tree must pass it; a small tree
with such a circle, and one with such a call, must not (so the check itself can fail).
"""

import subprocess
import sys

import pytest

import harness

pytestmark = pytest.mark.skipif(harness.is_pgbouncer(), reason="pgsluice's own source tree")

CALLGRAPH = harness.REPO / "scripts" / "callgraph"


def run(*args):
    return subprocess.run([sys.executable, str(CALLGRAPH), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_the_source_tree_has_no_circle_and_ai_calls_no_connection_module():
    out = run("--check", harness.REPO / "src")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no circle" in out.stdout, out.stdout


def write(root, name, text):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_circle_of_files_fails_the_check(tmp_path):
    write(tmp_path, "pool.c", "void pool_grant(void)\n{\n\tserver_link();\n}\n")
    write(tmp_path, "server.c", '#include "client.h"\nvoid server_link(void)\n{\n\tclient_wake();\n}\n')
    # a call through a header's inline function counts as that function's calls
    write(tmp_path, "client.h", "static inline void client_wake(void)\n{\n\tpool_grant();\n}\n")
    out = run("--check", tmp_path)
    assert out.returncode == 1, out.stdout
    assert "circle of 2 files: pool.c server.c" in out.stdout, out.stdout
    assert "server.c -> pool.c: pool_grant" in out.stdout, out.stdout


def test_a_call_through_a_function_pointer_is_no_circle(tmp_path):
    write(tmp_path, "pool.c", "void pool_grant(void)\n{\n\tserver_link();\n}\n")
    write(tmp_path, "server.c", "void server_link(void)\n{\n\tsl->events->grant();   /* filled in by pool.c */\n}\n")
    out = run("--check", tmp_path)
    assert out.returncode == 0, out.stdout


def test_a_middleware_call_into_a_connection_module_fails_the_check(tmp_path):
    write(tmp_path, "client.c", "void client_close(void)\n{\n}\n")
    write(tmp_path, "ai/decide.c", "void ai_decide(void)\n{\n\tclient_close();   /* a string: \"x(\" */\n}\n")
    out = run("--check", tmp_path)
    assert out.returncode == 1, out.stdout
    assert "ai/ calls a connection module: ai/decide.c -> client.c: client_close" in out.stdout, out.stdout
