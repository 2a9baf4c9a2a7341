# SPDX-License-Identifier: PostgreSQL
"""What "make install" puts on a machine, and the man pages it installs.

The man pages are written by hand in mdoc (docs/man/); these tests keep them
in step with the code: every configuration key of src/config.c's table is in
pgsluice.ini(5), every option of `pgsluice -h` is in pgsluice(1), and groff
renders both without a warning.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import harness

# make install, man pages: alone, not beside other workers (conftest.py)
pytestmark = pytest.mark.serial

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "docs" / "man"


def config_keys():
    text = (ROOT / "src" / "config.c").read_text()
    keys = re.findall(r"^\s*KEY\((\w+),", text, re.M)
    assert len(keys) > 50, "the key table of src/config.c was not found"
    return keys


def test_every_config_key_is_in_pgsluice_ini_5():
    page = (MAN / "pgsluice.ini.5").read_text()
    missing = [k for k in config_keys() if not re.search(rf"\b{k}\b", page)]
    assert missing == [], f"keys not documented in docs/man/pgsluice.ini.5: {missing}"


def test_every_option_is_in_pgsluice_1():
    out = harness.run_binary(["-h"])
    options = re.findall(r"--([a-z][a-z-]+)", out.stdout)
    assert "check-config" in options, out.stdout
    page = (MAN / "pgsluice.1").read_text()
    missing = [o for o in options if f"Fl -{o}" not in page]
    assert missing == [], f"options not in docs/man/pgsluice.1: {missing}"


@pytest.mark.skipif(not shutil.which("groff"), reason="groff is not installed")
@pytest.mark.parametrize("page", ["pgsluice.1", "pgsluice.ini.5"])
def test_man_page_renders_without_warnings(page):
    out = subprocess.run(["groff", "-mandoc", "-Tutf8", "-ww", "-z", str(MAN / page)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, LC_ALL="C.UTF-8"))
    assert out.returncode == 0 and out.stderr == "", out.stderr


def build_dir():
    d = os.environ.get("PGSLUICE_BUILDDIR")
    if not d or not (Path(d) / "Makefile").exists():
        pytest.skip("needs PGSLUICE_BUILDDIR, a configured build directory")
    return Path(d)


def test_make_install_installs_binary_sql_ini_man_pages_and_unit(tmp_path):
    build = build_dir()
    dest = tmp_path / "root"
    out = subprocess.run(["make", "-C", str(build), "install", f"DESTDIR={dest}"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert out.returncode == 0, out.stdout
    prefix = re.search(r"^prefix = (.*)$", (build / "Makefile").read_text(), re.M).group(1)
    root = dest / prefix.lstrip("/")
    binary = root / "bin" / "pgsluice"
    version = subprocess.run([str(binary), "-V"], stdout=subprocess.PIPE, text=True)
    assert version.returncode == 0 and version.stdout.startswith("pgsluice "), version.stdout
    sql = sorted(p.name for p in (root / "share" / "pgsluice" / "sql").iterdir())
    assert sql == sorted(p.name for p in (ROOT / "sql").glob("*.sql")), sql
    assert (root / "share" / "man" / "man1" / "pgsluice.1").exists()
    assert (root / "share" / "man" / "man5" / "pgsluice.ini.5").exists()
    # the example ini is installed, and is itself a valid configuration
    ini = root / "etc" / "pgsluice" / "pgsluice.ini"
    check = harness.run_binary(["--check-config", ini])
    assert check.returncode == 0, check.stdout
    # the unit runs the installed binary on the installed ini
    unit = (root / "lib" / "systemd" / "system" / "pgsluice.service").read_text()
    assert f"ExecStart={prefix}/bin/pgsluice {prefix}/etc/pgsluice/pgsluice.ini" in unit, unit
    assert "Type=notify-reload" in unit, unit


def test_every_source_file_is_in_makefile_am():
    """`make dist` (the .deb's source tarball) ships only what Makefile.am names: a header
    missing there builds in the tree and breaks the package build."""
    makefile = (ROOT / "Makefile.am").read_text()
    sources = [p.relative_to(ROOT).as_posix() for d in ("src", "tests/unit") for p in (ROOT / d).rglob("*")
               if p.suffix in (".c", ".h") and p.name not in ("autoconfig.h",)]
    missing = sorted(s for s in sources if s not in makefile)
    assert missing == [], f"in the tree but not in Makefile.am (make dist leaves them out): {missing}"
