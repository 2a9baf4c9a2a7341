# SPDX-License-Identifier: PostgreSQL
"""The command line and the config file: PgBouncer's CLI shape, clear config errors."""

import re
import subprocess
import time

import harness


def test_version_flag_prints_version():
    out = harness.run_binary(["-V"])
    assert out.returncode == 0, out.stdout
    assert re.search(r"\d+\.\d+", out.stdout), out.stdout


def test_help_flag_prints_usage():
    out = harness.run_binary(["-h"])
    assert out.returncode == 0, out.stdout
    assert "usage" in out.stdout.lower(), out.stdout
    assert "-V" in out.stdout, out.stdout


def test_unknown_config_key_warns_and_starts(sluice):
    pooler = sluice(extra_ini="no_such_setting = 42")
    with pooler.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    deadline = time.monotonic() + 2
    while "no_such_setting" not in pooler.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "no_such_setting" in pooler.log_text()


def test_invalid_config_value_fails_start_naming_file_and_line(sluice):
    pooler = sluice(max_client_conn="lots", start=False)
    line = pooler.line_of("max_client_conn")
    try:
        out = harness.run_binary([pooler.ini_path], cwd=pooler.workdir)
    except subprocess.TimeoutExpired:
        raise AssertionError("pooler kept running with an invalid config value") from None
    text = out.stdout + pooler.log_text(lines=None)
    assert out.returncode != 0, text
    assert out.returncode > 0, f"pooler died of a signal: {out.returncode}\n{text}"
    assert f"{pooler.ini_path.name}:{line}" in text, text
    assert "max_client_conn" in text, text
