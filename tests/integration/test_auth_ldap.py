# SPDX-License-Identifier: PostgreSQL
"""LDAP authentication (issue 12, item 7): auth_type = ldap with auth_ldap_options,
and hba "ldap" lines, against a real OpenLDAP slapd the test starts on a free
port. The cases follow PgBouncer's test_auth.py test_ldap_auth (simple bind,
search+bind, ldapurl, ldapsearchattribute, ldapsearchfilter, a filter in the URL,
quoted option names, auth_type = ldap), plus the failures a user sees.
"""

import os
import signal
import subprocess

import psycopg
import pytest

import harness
import pgwire
from harness import wait_for

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"

LDIF = """dn: dc=example,dc=net
objectClass: dcObject
objectClass: organization
dc: example
o: example

dn: uid=ldapuser1,dc=example,dc=net
objectClass: inetOrgPerson
uid: ldapuser1
cn: ldap user 1
sn: one
mail: ldapuser1@example.net
userPassword: secret1

dn: ou=a rather long organisational unit name to make a long dn,dc=example,dc=net
objectClass: organizationalUnit
ou: a rather long organisational unit name to make a long dn

dn: uid=ldapuser2,ou=a rather long organisational unit name to make a long dn,dc=example,dc=net
objectClass: inetOrgPerson
uid: ldapuser2
cn: ldap user 2
sn: two
userPassword: secret2
"""


class OpenLDAP:
    def __init__(self, workdir):
        self.dir = workdir
        self.port = harness.free_port()
        self.proc = None

    def start(self):
        data = self.dir / "data"
        data.mkdir()
        conf = self.dir / "slapd.conf"
        conf.write_text(f"""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {self.dir}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
suffix "dc=example,dc=net"
rootdn "cn=admin,dc=example,dc=net"
rootpw admin_pw
directory {data}
""")
        (self.dir / "data.ldif").write_text(LDIF)
        subprocess.run([SLAPADD, "-f", str(conf), "-l", str(self.dir / "data.ldif")], check=True,
                       capture_output=True, timeout=60)
        self.log = open(self.dir / "slapd.log", "wb")
        # -d 0: stay in the foreground (so the test owns the process), log nothing
        self.proc = subprocess.Popen([SLAPD, "-f", str(conf), "-h", f"ldap://127.0.0.1:{self.port}/",
                                      "-d", "0"], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: harness.port_accepts("127.0.0.1", self.port), 20, what="slapd listening")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def openldap(tmp_path_factory):
    if not (os.path.exists(SLAPD) and os.path.exists(SLAPADD)):
        pytest.skip("OpenLDAP's slapd is not installed (Debian package slapd)")
    server = OpenLDAP(tmp_path_factory.mktemp("openldap"))
    server.start()
    yield server
    server.stop()


def logs_in(pooler, user="ldapuser1", password="secret1"):
    # the role logs in to PostgreSQL as "app": every LDAP user of these tests is mapped by the entry
    with psycopg.connect(pooler.dsn(user=user, password=password, dbname="ldapdb"), autocommit=True) as conn:
        return conn.execute("select 1").fetchone() == (1,)


@pytest.fixture
def ldap_pooler(sluice, tmp_path, pg):
    """A factory: a pooler whose auth_hba_file is the given ldap line; database ldapdb
    logs every client in to PostgreSQL as app (the LDAP users have no role there)."""
    def make(line, **keys):
        hba = tmp_path / "ldap_hba.conf"
        hba.write_text(line + "\n")
        settings = {"auth_type": "hba", "auth_hba_file": hba}
        settings.update(keys)
        return sluice(databases={"ldapdb": f"host={pg.host} port={pg.port} dbname=app user=app"},
                      **settings)
    return make


def host_line(options):
    return f"host all all 127.0.0.1/32 ldap {options}"


def test_simple_bind(ldap_pooler, openldap):
    pooler = ldap_pooler(host_line(f'ldapserver=127.0.0.1 ldapport={openldap.port} '
                                   f'ldapprefix="uid=" ldapsuffix=",dc=example,dc=net"'))
    assert logs_in(pooler)


def test_search_and_bind(ldap_pooler, openldap):
    pooler = ldap_pooler(host_line(f'ldapserver=127.0.0.1 ldapport={openldap.port} '
                                   f'ldapbasedn="dc=example,dc=net"'))
    assert logs_in(pooler)
    assert logs_in(pooler, "ldapuser2", "secret2")     # an entry further down, with a long DN


def test_ldapurl(ldap_pooler, openldap):
    pooler = ldap_pooler(host_line(f'ldapurl="ldap://127.0.0.1:{openldap.port}/dc=example,dc=net?uid?sub"'))
    assert logs_in(pooler)


def test_ldapsearchattribute_and_ldapsearchfilter(ldap_pooler, openldap):
    base = f'ldapserver=127.0.0.1 ldapport={openldap.port} ldapbasedn="dc=example,dc=net"'
    assert logs_in(ldap_pooler(host_line(base + " ldapsearchattribute=uid")))
    assert logs_in(ldap_pooler(host_line(base + ' ldapsearchfilter="(uid=$username)"')))


def test_search_filter_in_the_url_finds_by_mail_too(ldap_pooler, openldap):
    pooler = ldap_pooler(host_line(
        f'ldapurl="ldap://127.0.0.1:{openldap.port}/dc=example,dc=net??sub?(|(uid=$username)(mail=$username))"'))
    assert logs_in(pooler)
    assert logs_in(pooler, "ldapuser1@example.net", "secret1")


def test_quoted_option_names_and_commas(ldap_pooler, openldap):
    pooler = ldap_pooler(host_line(f'ldapserver=127.0.0.1 "ldapport"={openldap.port} '
                                   f'ldapbasedn="dc=example,dc=net" ,ldapsearchfilter="uid=$username"'))
    assert logs_in(pooler)


def test_auth_type_ldap_with_auth_ldap_options(sluice, pg, openldap):
    pooler = sluice(auth_type="ldap",
                    auth_ldap_options=f'ldapurl="ldap://127.0.0.1:{openldap.port}/dc=example,dc=net?uid?sub"',
                    databases={"ldapdb": f"host={pg.host} port={pg.port} dbname=app user=app"})
    assert logs_in(pooler)
    assert logs_in(pooler, "ldapuser2", "secret2")


@pytest.mark.parametrize("user,password", [("ldapuser1", "wrong"), ("nobody", "secret1"), ("ldapuser1", "")])
def test_refusals_are_28000_and_logged(ldap_pooler, openldap, user, password):
    pooler = ldap_pooler(host_line(f'ldapserver=127.0.0.1 ldapport={openldap.port} '
                                   f'ldapbasedn="dc=example,dc=net"'))
    err = pgwire.login_error(pooler.host, pooler.port, user, "ldapdb", password=password)
    # PostgreSQL's words and SQLSTATE (auth.c auth_failed)
    assert (err.sqlstate, err.message) == ("28000", f'LDAP authentication failed for user "{user}"')
    log = pooler.log_text(lines=None)
    want = {"wrong": "Invalid credentials", "secret1": "does not exist", "": "empty password"}[password]
    assert want in log, log
    assert logs_in(pooler)      # and the next good login works


def test_unreachable_ldap_server_fails_the_login_not_the_pooler(ldap_pooler, openldap):
    # ldaps:// on the plain port: the TLS handshake fails (PgBouncer's test 8.6)
    pooler = ldap_pooler(host_line(
        f'ldapurl="ldaps://127.0.0.1:{openldap.port}/dc=example,dc=net?uid?sub"'))
    err = pgwire.login_error(pooler.host, pooler.port, "ldapuser1", "ldapdb", password="secret1")
    assert err.sqlstate == "28000"
    # a port where nothing listens
    pooler = ldap_pooler(host_line(f'ldapserver=127.0.0.1 ldapport={harness.free_port()} '
                                   f'ldapbasedn="dc=example,dc=net"'))
    err = pgwire.login_error(pooler.host, pooler.port, "ldapuser1", "ldapdb", password="secret1")
    assert err.sqlstate == "28000"
    assert "Can't contact LDAP server" in pooler.log_text(lines=None)


@pytest.mark.parametrize("options,message", [
    ("ldapport=389", 'requires argument "ldapserver" to be set'),
    ("ldapserver=x", 'requires argument "ldapbasedn", "ldapprefix", or "ldapsuffix" to be set'),
    ('ldapserver=x ldapprefix="uid=" ldapbasedn="dc=x"', "cannot mix options for simple bind and search+bind"),
    ("ldapserver=x ldapbasedn=dc=x ldapsearchattribute=uid ldapsearchfilter=(uid=$username)",
     "cannot use ldapsearchattribute together with ldapsearchfilter"),
    ("ldapserver=x ldapbasedn=dc=x ldapfoo=1", 'unrecognized authentication option name: "ldapfoo"'),
])
def test_incomplete_ldap_lines_stop_the_start(sluice, tmp_path, options, message):
    hba = tmp_path / "bad_hba.conf"
    hba.write_text(host_line(options) + "\n")
    pooler = sluice(auth_type="hba", auth_hba_file=hba, start=False)
    result = harness.run_binary([pooler.ini_path], timeout=20)
    assert result.returncode != 0
    assert message in result.stdout + pooler.log_text(lines=None)
