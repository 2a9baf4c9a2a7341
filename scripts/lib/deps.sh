# SPDX-License-Identifier: PostgreSQL
# shellcheck shell=bash disable=SC2034
# scripts/lib/deps.sh - install the Debian packages pgsluice needs, and only those missing.
# Sourced by scripts/test and scripts/quickstart; the comment above each list says why it is needed.
#
#   sluice_install_deps PACKAGE...   installs whichever of PACKAGE... is not installed
#                                    (apt-get update once, then apt-get install),
#                                    as root or through sudo; returns non-zero on failure.

# Build: compiler, autotools, and the libraries configure.ac checks for.
SLUICE_BUILD_PACKAGES=(build-essential autoconf automake libtool pkg-config
	libevent-dev libpq-dev libssl-dev libinih-dev libcmocka-dev libisal-dev
	libsystemd-dev libpam0g-dev libldap-dev)
# Building and installing the Debian package (scripts/test's packaging step).
SLUICE_PACKAGING_PACKAGES=(debhelper dpkg-dev fakeroot)
# A PostgreSQL server to run against (pgbench ships with it on Debian 12).
SLUICE_SERVER_PACKAGES=(postgresql postgresql-contrib)
# Integration tests and benchmarks.
# python3-sqlalchemy and python3-psycopg2: the Python kit's SQLAlchemy integration
# (Debian 12 ships SQLAlchemy 1.4, whose PostgreSQL driver is psycopg2). The Node kit's
# tests use the machine's node and npm (not Debian's: npm ci brings pg, knex and
# drizzle-orm from the npm registry) and skip where node is missing.
# slapd: an OpenLDAP server the LDAP authentication tests start on a free port
# (test_auth_ldap.py; its postinst does not start the system's slapd in a container).
# python3-pytest-xdist: scripts/test runs the suite on several workers (pytest -n).
SLUICE_TEST_PACKAGES=(python3-pytest python3-psycopg python3-yaml pgbouncer
	python3-sqlalchemy python3-psycopg2 slapd python3-pytest-xdist)
# Fuzzing (scripts/fuzz): clang with libFuzzer and the sanitizer runtimes; llvm
# brings llvm-symbolizer for readable stack traces.
SLUICE_FUZZ_PACKAGES=(clang libclang-rt-dev llvm)

sluice_log() { printf '%s\n' "pgsluice: $*" >&2; }

# True when dpkg knows the package as installed (not merely known or half-removed).
sluice_package_installed() {
	dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

# Print the packages among "$@" that are not installed, one per line.
sluice_missing_packages() {
	local pkg
	for pkg in "$@"; do
		sluice_package_installed "$pkg" || printf '%s\n' "$pkg"
	done
}

# Run a command as root: directly when we are root, else through sudo.
sluice_as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		sluice_log "need root to run: $*  (run as root or install sudo)"
		return 1
	fi
}

# True when pgbench is on PATH or beside PostgreSQL's server binaries.
sluice_have_pgbench() {
	command -v pgbench >/dev/null 2>&1 && return 0
	compgen -G '/usr/lib/postgresql/*/bin/pgbench' >/dev/null
}

# apt-get update, at most once per run.
SLUICE_APT_UPDATED=no
sluice_apt_update() {
	[ "$SLUICE_APT_UPDATED" = yes ] && return 0
	sluice_as_root apt-get update -q || return 1
	SLUICE_APT_UPDATED=yes
}

sluice_install_deps() {
	local missing
	mapfile -t missing < <(sluice_missing_packages "$@")
	if [ "${#missing[@]}" -eq 0 ]; then
		sluice_log "all $# required Debian packages are installed"
	else
		sluice_log "installing missing Debian packages: ${missing[*]}"
		if ! command -v apt-get >/dev/null 2>&1; then
			sluice_log "apt-get not found: install these by hand: ${missing[*]}"
			return 1
		fi
		sluice_apt_update || return 1
		sluice_as_root env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q --no-install-recommends "${missing[@]}" || return 1
		mapfile -t missing < <(sluice_missing_packages "$@")
		if [ "${#missing[@]}" -ne 0 ]; then
			sluice_log "still missing after apt-get install: ${missing[*]}"
			return 1
		fi
	fi
	# pgbench moved between Debian packages over the releases; make sure it is there
	# whenever a PostgreSQL server was asked for.
	case " $* " in
	*" postgresql "*)
		if ! sluice_have_pgbench; then
			sluice_log "pgbench not found; installing postgresql-client"
			sluice_apt_update || return 1
			sluice_as_root env DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -q --no-install-recommends postgresql-client || return 1
			sluice_have_pgbench || { sluice_log "pgbench still not found"; return 1; }
		fi
		;;
	esac
}
