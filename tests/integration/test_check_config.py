# SPDX-License-Identifier: PostgreSQL
"""pgsluice --check-config (-t): check a configuration file and start nothing.

An operator runs it before a reload or a deploy (systemd's ExecReload, a CI
step, the container entrypoint) and wants every mistake of the file at once,
each with its file:line, and an exit status a script can test.
"""

import socket

import pytest

import harness


def check(args, cwd=None):
    out = harness.run_binary(args, cwd=cwd)
    return out.returncode, out.stdout


BAD_INI = """\
[pgsluice]
listen_port = notanumber
no_such_setting = 1
this line has no equals sign
pool_mode = sideways
auth_file = {missing}

[databases]
app = host=127.0.0.1 no_such_option=1
other = host=127.0.0.1 port=5432

[limits]
alice = nonsense
"""


@pytest.mark.parametrize("form", [["--check-config"], ["-t"]])
def test_check_config_reports_every_error_with_file_and_line(tmp_path, form):
    ini = tmp_path / "bad.ini"
    ini.write_text(BAD_INI.format(missing=tmp_path / "nowhere" / "userlist.txt"))
    rc, text = check(form + [ini])
    assert rc == 1, text
    # every error, not only the first, each at its line
    assert "bad.ini:2: " in text and "listen_port" in text, text
    assert "bad.ini:4: syntax error" in text, text
    assert "bad.ini:5: " in text and "sideways" in text, text
    assert "bad.ini:9: " in text and "no_such_option" in text, text
    assert "bad.ini:13: " in text and "nonsense" in text, text
    # the warning is printed too
    assert "bad.ini:3: " in text and "no_such_setting" in text, text
    # a missing auth_file names the key and the file
    assert "auth_file" in text and "nowhere/userlist.txt" in text, text
    assert "has 6 errors" in text, text


def test_check_config_missing_auth_file_names_the_key(tmp_path):
    ini = tmp_path / "p.ini"
    missing = tmp_path / "userlist.txt"
    ini.write_text(f"[pgsluice]\nauth_file = {missing}\n[databases]\napp = host=127.0.0.1\n")
    rc, text = check(["-t", ini])
    assert rc == 1, text
    assert f'auth_file: could not open file "{missing}"' in text, text


def test_check_config_error_in_included_file_is_reported_there(tmp_path):
    (tmp_path / "extra.ini").write_text("max_client_conn = lots\n")
    ini = tmp_path / "main.ini"
    ini.write_text("[pgsluice]\n%include extra.ini\ndefault_pool_size = -5\n"
                   "[databases]\napp = host=127.0.0.1\n")
    rc, text = check(["--check-config", ini.name], cwd=tmp_path)
    assert rc == 1, text
    assert "extra.ini:1: " in text and "max_client_conn" in text, text
    assert "main.ini:3: " in text and "default_pool_size" in text, text


def test_check_config_unreadable_file(tmp_path):
    rc, text = check(["-t", tmp_path / "absent.ini"])
    assert rc == 1, text
    assert "could not open configuration file" in text and "absent.ini" in text, text


def test_check_config_valid_file_exits_0_and_starts_nothing(sluice):
    pooler = sluice(start=False, extra_ini="no_such_setting = 1",
                    metrics_listen_addr="127.0.0.1", metrics_listen_port=harness.free_port())
    rc, text = check(["-t", pooler.ini_path], cwd=pooler.workdir)
    assert rc == 0, text
    assert "is valid" in text, text
    assert "no_such_setting" in text, "warnings are printed: " + text
    # nothing was started or created: no socket, no pidfile, no logfile, no journal
    made = sorted(p.name for p in pooler.workdir.iterdir())
    assert made == sorted(["pgsluice.ini", "userlist.txt"]), made
    with socket.socket() as s:   # the listening port was never taken
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", pooler.port))


def test_check_config_then_start_with_the_same_file(sluice):
    """The file --check-config accepts is the file pgsluice runs with."""
    pooler = sluice(start=False)
    rc, text = check(["--check-config", pooler.ini_path], cwd=pooler.workdir)
    assert rc == 0, text
    pooler.start()
    with pooler.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
