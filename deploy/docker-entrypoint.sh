#!/usr/bin/env bash
# SPDX-License-Identifier: PostgreSQL
# docker-entrypoint.sh - the pgsluice container's entry point (Dockerfile).
#
#   docker-entrypoint.sh [PGSLUICE-OPTION...]   run pgsluice (the default)
#   docker-entrypoint.sh migrate                create or update the sluice schema, exit
#   docker-entrypoint.sh check                  pgsluice --check-config, exit
#   docker-entrypoint.sh healthcheck            exit 0 when /metrics answers 200
#   docker-entrypoint.sh COMMAND...             run COMMAND (e.g. bash)
#
# The configuration is $PGSLUICE_CONFIG (default /etc/pgsluice/pgsluice.ini).
# Mount your own file there and the environment is not read. When no file is
# there, one is written from the environment:
#
#   PGSLUICE_DB_<NAME>=<connect string>   a [databases] line: PGSLUICE_DB_APP="host=db dbname=app"
#                                         makes "app = host=db dbname=app" (names are lowercased)
#   PGSLUICE_AUTH_USERS="user:password,..."  auth_file (written 0600 next to the ini), scram-sha-256
#   PGSLUICE_LIMITS="line; line"          [limits] lines: "default = requests_per_minute=600"
#   PGSLUICE_<KEY>=<value>                any [pgsluice] key: PGSLUICE_POOL_MODE=transaction
#
# Container defaults (each overridable the same way): listen_addr = *,
# listen_port = 6432, unix_socket_dir = /tmp, metrics_listen_addr = * on port
# 9127 (the HEALTHCHECK and the Kubernetes probes use it),
# usage_journal_dir = /var/lib/pgsluice/journal (mount a volume there: it holds
# usage records not yet stored in PostgreSQL).
set -euo pipefail

PGSLUICE=${PGSLUICE_BIN:-pgsluice}
CONFIG=${PGSLUICE_CONFIG:-/etc/pgsluice/pgsluice.ini}

# Variables that are not [pgsluice] keys: this script's own, and the binary's.
is_reserved() {
	case $1 in
	PGSLUICE_CONFIG | PGSLUICE_BIN | PGSLUICE_SQLDIR | PGSLUICE_AUTH_USERS | PGSLUICE_LIMITS | \
		PGSLUICE_DB_* | PGSLUICE_BUILDDIR | PGSLUICE_SKIP_*) return 0 ;;
	esac
	return 1
}

# The value of key from the environment (PGSLUICE_<KEY>), else default.
setting() {
	local var
	var=PGSLUICE_$(printf '%s' "$1" | tr '[:lower:]' '[:upper:]')
	printf '%s' "${!var-$2}"
}

write_config() {
	local dir userlist name var key
	dir=$(dirname "$CONFIG")
	userlist=$dir/userlist.txt
	mkdir -p "$dir"
	umask 077
	{
		echo ";; written by docker-entrypoint.sh from PGSLUICE_* variables; mount a file at"
		echo ";; $CONFIG to use your own instead"
		echo "[databases]"
		for var in $(compgen -e | grep '^PGSLUICE_DB_' || true); do
			name=$(printf '%s' "${var#PGSLUICE_DB_}" | tr '[:upper:]' '[:lower:]')
			echo "$name = ${!var}"
		done
		echo
		echo "[pgsluice]"
		echo "listen_addr = $(setting listen_addr '*')"
		echo "listen_port = $(setting listen_port 6432)"
		echo "unix_socket_dir = $(setting unix_socket_dir /tmp)"
		echo "metrics_listen_addr = $(setting metrics_listen_addr '*')"
		echo "metrics_listen_port = $(setting metrics_listen_port 9127)"
		echo "usage_journal_dir = $(setting usage_journal_dir /var/lib/pgsluice/journal)"
		if [ -n "${PGSLUICE_AUTH_USERS:-}" ]; then
			echo "auth_file = $(setting auth_file "$userlist")"
			echo "auth_type = $(setting auth_type scram-sha-256)"
		fi
		for var in $(compgen -e | grep '^PGSLUICE_' || true); do
			is_reserved "$var" && continue
			key=$(printf '%s' "${var#PGSLUICE_}" | tr '[:upper:]' '[:lower:]')
			case $key in
			listen_addr | listen_port | unix_socket_dir | metrics_listen_addr | \
				metrics_listen_port | usage_journal_dir | auth_file | auth_type) continue ;;
			esac
			echo "$key = ${!var}"
		done
		if [ -n "${PGSLUICE_LIMITS:-}" ]; then
			echo
			echo "[limits]"
			printf '%s\n' "$PGSLUICE_LIMITS" | tr ';' '\n' | sed 's/^[[:space:]]*//; /^$/d'
		fi
	} >"$CONFIG.tmp"
	mv "$CONFIG.tmp" "$CONFIG"
	if [ -n "${PGSLUICE_AUTH_USERS:-}" ]; then
		local entry user password entries
		: >"$userlist.tmp"
		IFS=, read -r -a entries <<<"$PGSLUICE_AUTH_USERS"
		for entry in "${entries[@]}"; do
			user=${entry%%:*}
			password=${entry#*:}
			# userlist.txt quoting (PgBouncer's): a " inside a field is written ""
			printf '"%s" "%s"\n' "${user//\"/\"\"}" "${password//\"/\"\"}" >>"$userlist.tmp"
		done
		mv "$userlist.tmp" "$userlist"
	fi
}

# GET /metrics on the metrics port of the configuration; true on HTTP 200.
healthcheck() {
	local port status
	port=$(sed -n 's/^[[:space:]]*metrics_listen_port[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' "$CONFIG" 2>/dev/null | tail -1)
	port=${port:-9127}
	exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
	printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
	IFS= read -r -t 5 status <&3 || return 1
	exec 3<&-
	case $status in
	"HTTP/1."?" 200"*) return 0 ;;
	esac
	echo "metrics endpoint answered: $status" >&2
	return 1
}

[ -f "$CONFIG" ] || write_config

case ${1:-} in
healthcheck) healthcheck; exit ;;
migrate) exec "$PGSLUICE" --migrate "$CONFIG" ;;
check) exec "$PGSLUICE" --check-config "$CONFIG" ;;
"" | -*) exec "$PGSLUICE" "$@" "$CONFIG" ;;
*) exec "$@" ;;
esac
