/* SPDX-License-Identifier: PostgreSQL */
/*
 * ident.h - peer authentication: the client's operating system user, from
 * the kernel (SO_PEERCRED / getpeereid) over the unix socket, and the user
 * name maps of auth_ident_file (PostgreSQL's pg_ident.conf format) that the
 * hba "map=" option names. No pgsluice structs: client.c runs the login.
 */
#ifndef SLUICE_IDENT_H
#define SLUICE_IDENT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The parsed maps, in file order. Immutable once loaded; opaque. */
struct ident_map;

/*
 * Read auth_ident_file at path: lines "MAPNAME SYSTEM-USERNAME
 * DATABASE-USERNAME" (docs/hba.md), '#' comments, double-quoted names. A
 * SYSTEM-USERNAME starting with '/' is a POSIX extended regular expression
 * whose first parenthesized match replaces "\1" in DATABASE-USERNAME, as
 * PostgreSQL's; DATABASE-USERNAME "all" allows every role. Returns the maps
 * (free with ident_free), or NULL with errbuf set to "path:line: message"
 * for the first bad line or "could not open file ..." (PostgreSQL refuses
 * the whole file too).
 */
struct ident_map *ident_load(const char *path, char *errbuf, size_t errlen);

/* Same as ident_load on text in memory; name is used in messages. */
struct ident_map *ident_parse(const char *text, const char *name, char *errbuf, size_t errlen);

/* Free maps from ident_load or ident_parse; NULL is allowed. */
void ident_free(struct ident_map *im);

/*
 * May the operating system user sysuser log in as role under map mapname?
 * True when a line of that map matches both (PostgreSQL's check_usermap).
 * im NULL (no auth_ident_file) or mapname unknown: false.
 */
bool ident_map_allows(const struct ident_map *im, const char *mapname, const char *sysuser, const char *role);

/*
 * The operating system user at the other end of the unix socket fd: its uid
 * and name (copied into name, cut at namelen). Returns false with why set
 * (PostgreSQL's texts: "could not get peer credentials: ...", "could not
 * look up local user ID N: ...") when the kernel or the user database does
 * not say.
 */
bool ident_peer_user(int fd, uid_t *uid, char *name, size_t namelen, char *why, size_t whylen);

#endif
