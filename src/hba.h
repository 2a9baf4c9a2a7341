/* SPDX-License-Identifier: PostgreSQL */
/*
 * hba.h - which authentication method a client must pass (auth_type = hba):
 * PostgreSQL's pg_hba.conf format read from auth_hba_file, first matching
 * rule wins. Parsing and matching only; client.c runs the chosen method.
 */
#ifndef SLUICE_HBA_H
#define SLUICE_HBA_H

#include <stdbool.h>
#include <stddef.h>

struct sockaddr;

/*
 * The METHOD column. Each means what the auth_type of the same name means
 * (docs/configuration.md); HBA_PASSWORD is auth_type plain. HBA_MD5 uses
 * SCRAM for users whose stored secret is SCRAM, as PostgreSQL does.
 * HBA_PEER is "peer", and "ident" on a local rule (as PostgreSQL); HBA_IDENT
 * is "ident" on a host rule (RFC 1413), which pgsluice refuses at login, as
 * it refuses HBA_LDAP and HBA_PAM (built without them): the rules load so a
 * PgBouncer hba file works unchanged for its other rules.
 */
enum hba_method { HBA_TRUST, HBA_REJECT, HBA_MD5, HBA_SCRAM_SHA_256, HBA_PASSWORD, HBA_CERT,
                  HBA_PEER, HBA_IDENT, HBA_LDAP, HBA_PAM };

/* The TYPE column: unix socket, any TCP, TCP with TLS, TCP without TLS. */
enum hba_conn_type { HBA_LOCAL, HBA_HOST, HBA_HOSTSSL, HBA_HOSTNOSSL };

/* The parsed rules, in file order. Immutable once loaded; opaque. */
struct hba;

/*
 * Read and parse the file at path (docs/hba.md has the accepted syntax).
 * "@file" names in the DATABASE and USER columns are read now, relative to
 * the directory of the file that names them; a later change to them needs a
 * reload, as in PostgreSQL. Returns the rules (free with hba_free), or NULL
 * with errbuf set, like PostgreSQL refusing the whole file, to:
 *   "path:line: message"  for the first bad line (line of a continued
 *                         record: its first line; for a bad line inside an
 *                         @file: that file's path and line),
 *   "could not open file \"path\": reason" when path cannot be read,
 *   "path: out of memory".
 * errbuf may be NULL; messages longer than errlen are cut.
 */
struct hba *hba_load(const char *path, char *errbuf, size_t errlen);

/*
 * Same as hba_load on text in memory. name is used in messages and its
 * directory (the current directory when name has no '/') anchors relative
 * "@file" names; NULL means "auth_hba_file".
 */
struct hba *hba_parse(const char *text, const char *name, char *errbuf, size_t errlen);

/* Free rules from hba_load or hba_parse; NULL is allowed. */
void hba_free(struct hba *hba);

/*
 * The method of the first rule that matches a connection; HBA_REJECT when
 * none does (PostgreSQL: "no pg_hba.conf entry" refuses the login).
 * is_unix: the client came over the unix socket (only "local" rules apply,
 * addr is ignored and may be NULL). is_tls: the TCP connection uses TLS.
 * addr: the client's address, AF_INET or AF_INET6; an IPv4-mapped IPv6
 * address (::ffff:a.b.c.d, seen on dual-stack listeners) is treated as the
 * IPv4 address it carries, so IPv4 rules apply to it and IPv6 rules do not.
 * NULL or another family matches no host rule. database and user: the names
 * from the startup packet, compared exactly (case matters); NULL matches
 * nothing. line (may be NULL): set to the matching rule's line in
 * auth_hba_file, 0 when none matched. A "samehost"/"samenet" rule reads the
 * machine's addresses (getifaddrs) when it is reached, as PostgreSQL does;
 * if that fails the rule does not match and a warning is logged.
 */
enum hba_method hba_match(const struct hba *hba, bool is_unix, bool is_tls,
                          const struct sockaddr *addr, const char *database,
                          const char *user, int *line);

/*
 * hba_match for a physical replication connection (StartupMessage
 * replication=true): as PostgreSQL, only rules whose database field holds
 * the "replication" keyword apply ("all" does not). A logical replication
 * connection (replication=database) is matched by hba_match with its
 * database, where the keyword matches nothing.
 */
enum hba_method hba_match_replication(const struct hba *hba, bool is_unix, bool is_tls,
                                      const struct sockaddr *addr, const char *user, int *line);

/*
 * The "map=" option of the rule at line (the line hba_match reported): the
 * auth_ident_file map that peer and cert logins go through, or NULL when the
 * rule has none. Owned by hba.
 */
const char *hba_map(const struct hba *hba, int line);

/*
 * The ldap...= options of the "ldap" rule at line (ldapauth.h), checked
 * complete when the file was loaded; NULL for other rules. Owned by hba:
 * copy it (ldapauth_copy) before handing it to another thread.
 */
struct ldap_params;
const struct ldap_params *hba_ldap(const struct hba *hba, int line);

/* The method as written in pg_hba.conf ("scram-sha-256"); static string. */
const char *hba_method_name(enum hba_method m);

#endif
