#!/usr/bin/env bash
# SPDX-License-Identifier: PostgreSQL
# tests/packaging/deb_smoke.sh - build the Debian package from "make dist"'s
# tarball, install it, and serve one query through the installed binary.
#
#   tests/packaging/deb_smoke.sh [BUILDDIR]    BUILDDIR: a configured build (default build/)
#
# As a release would: the tarball is unpacked in a temporary directory and
# built there with dpkg-buildpackage -us -uc -b (no unit tests: the suites ran
# them). The .deb is installed with apt-get (which pulls its shlibs
# dependencies), then /usr/bin/pgsluice runs -V, --check-config, --migrate
# with the installed migrations and one tagged query against the test
# PostgreSQL (tests/integration/test_installed.py). The package is removed
# again when it was not installed before. Needs root (or sudo).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
# shellcheck source=../../scripts/lib/deps.sh
. "$ROOT/scripts/lib/deps.sh"

WORK=$(mktemp -d /tmp/pgsluice-deb-XXXXXX)
WAS_INSTALLED=no
sluice_package_installed pgsluice && WAS_INSTALLED=yes
cleanup() {
	if [ "$WAS_INSTALLED" = no ] && sluice_package_installed pgsluice; then
		sluice_as_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q pgsluice >/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

echo "== make dist"
make -C "$BUILD" -s dist
VERSION=$(sed -n 's/^PACKAGE_VERSION = //p' "$BUILD/Makefile")
tar -C "$WORK" -xzf "$BUILD/pgsluice-$VERSION.tar.gz"

echo "== dpkg-buildpackage -us -uc -b"
(cd "$WORK/pgsluice-$VERSION" &&
	DEB_BUILD_OPTIONS="nocheck parallel=${SLUICE_JOBS:-2}" DEB_BUILD_PROFILES=nocheck \
		dpkg-buildpackage -us -uc -b >"$WORK/build.log" 2>&1) || {
	tail -50 "$WORK/build.log"
	exit 1
}
DEB=$(ls "$WORK"/pgsluice_"$VERSION"-*_*.deb)
dpkg-deb --info "$DEB" | sed -n 's/^ *\(Depends\|Version\|Installed-Size\):/  &/p'
dpkg-deb --contents "$DEB" | awk '{print "  " $6}' | grep -E 'bin/|\.service|man[15]/|sql/0001|etc/'
dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./lib/systemd/system/pgsluice.service |
	sed -n 's/^\(Type\|ExecReload\)=/  unit: &/p'

echo "== apt-get install $(basename "$DEB")"
sluice_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$DEB" >/dev/null

echo "== the installed binary"
/usr/bin/pgsluice -V
/usr/bin/pgsluice --check-config /etc/pgsluice/pgsluice.ini
getent passwd pgsluice >/dev/null || { echo "the package did not create the pgsluice user" >&2; exit 1; }
PGSLUICE_BIN=/usr/bin/pgsluice /usr/bin/python3 -m pytest -q -p no:cacheprovider \
	"$ROOT/tests/integration/test_installed.py"
