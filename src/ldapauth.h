/* SPDX-License-Identifier: PostgreSQL */
/*
 * ldapauth.h - LDAP authentication of a client's cleartext password (auth_type
 * = ldap with auth_ldap_options, hba "ldap" lines), with PostgreSQL's options
 * and modes (simple bind, search+bind, ldapurl). Owns the option set and the
 * libldap exchange; knows nothing of clients: callers run it on a worker thread.
 */
#ifndef SLUICE_LDAPAUTH_H
#define SLUICE_LDAPAUTH_H

#include <stdbool.h>
#include <stddef.h>

/* The options of one hba line or of auth_ldap_options (client-authentication.html, 21.10). */
struct ldap_params {
	char *server;             /* ldapserver: host names or addresses, blank-separated */
	int port;                 /* ldapport; 0: 389 (ldap), 636 (ldaps) */
	char *scheme;             /* ldapscheme: "ldap" or "ldaps"; NULL: ldap */
	bool tls;                 /* ldaptls: StartTLS before binding */
	char *prefix, *suffix;    /* simple bind: the DN is prefix + user + suffix */
	char *basedn;             /* search+bind: where to search */
	char *binddn, *bindpasswd; /* search+bind: who searches (NULL: anonymous) */
	char *searchattribute;    /* search+bind: (attribute=user); NULL: uid */
	char *searchfilter;       /* search+bind: a filter with $username; exclusive with the attribute */
	int scope;                /* search scope, from ldapurl; -1: subtree */
};

/* True when pgsluice was built with libldap (configure --with-ldap). */
bool ldapauth_available(void);

/* An empty option set (scope -1). */
void ldapauth_init(struct ldap_params *p);

/* Free the strings of p (not p itself); p is empty afterwards. Safe on an empty set. */
void ldapauth_clear(struct ldap_params *p);

/* A deep copy of src into *dst; false (dst empty) when out of memory. */
bool ldapauth_copy(struct ldap_params *dst, const struct ldap_params *src);

/*
 * Take one option name=value (name of namelen bytes; value NUL-ended) into
 * p: ldapserver, ldapport, ldapscheme, ldaptls, ldapprefix, ldapsuffix,
 * ldapbasedn, ldapbinddn, ldapbindpasswd, ldapsearchattribute,
 * ldapsearchfilter, ldapurl (RFC 4516: scheme, host, port, base DN,
 * attribute, scope, filter). False with err (PostgreSQL's hba.c wording)
 * for an unknown name or a bad value.
 */
bool ldapauth_set(struct ldap_params *p, const char *name, size_t namelen, const char *value, char *err,
                  size_t errlen);

/*
 * Is p a complete, consistent set (PostgreSQL's rules: a server or URL;
 * simple bind or search+bind, not both; not attribute and filter both)?
 * False with err.
 */
bool ldapauth_check_params(const struct ldap_params *p, char *err, size_t errlen);

/*
 * Parse auth_ldap_options: name=value pairs separated by blanks or commas,
 * names and values optionally in double quotes ("" for a quote), as on an
 * hba line. Then ldapauth_check_params. False with err; p holds what was read.
 */
bool ldapauth_parse_options(const char *text, struct ldap_params *p, char *err, size_t errlen);

struct ldapauth_result {
	bool ok;                  /* the bind as the user succeeded */
	char message[512];        /* why not, for the log */
};

/*
 * Authenticate user with password against the LDAP server(s) of p, as
 * PostgreSQL's CheckLDAPAuth: simple bind as prefix+user+suffix, or bind as
 * binddn, search for the user's entry (exactly one), bind as its DN. An empty
 * password, and in search+bind mode a user name with one of *()\/ in it, are
 * refused without asking the server. Connect and each operation time out
 * after 10 s. Blocks: call it from a worker thread. p and the strings are
 * borrowed. Fills *res.
 */
void ldapauth_check(const struct ldap_params *p, const char *user, const char *password, struct ldapauth_result *res);

#endif
