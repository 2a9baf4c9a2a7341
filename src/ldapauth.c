/* SPDX-License-Identifier: PostgreSQL */
/* ldapauth.c - see ldapauth.h. */
#include "ldapauth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "autoconfig.h"

#ifdef HAVE_LDAP
#include <ldap.h>
#endif

#define LDAP_TIMEOUT_S 10

void ldapauth_init(struct ldap_params *p)
{
	memset(p, 0, sizeof(*p));
	p->scope = -1;
}

void ldapauth_clear(struct ldap_params *p)
{
	free(p->server);
	free(p->scheme);
	free(p->prefix);
	free(p->suffix);
	free(p->basedn);
	free(p->binddn);
	free(p->bindpasswd);
	free(p->searchattribute);
	free(p->searchfilter);
	ldapauth_init(p);
}

static bool dup_field(char **dst, const char *src)
{
	*dst = NULL;
	return !src || (*dst = strdup(src)) != NULL;
}

bool ldapauth_copy(struct ldap_params *dst, const struct ldap_params *src)
{
	ldapauth_init(dst);
	dst->port = src->port;
	dst->tls = src->tls;
	dst->scope = src->scope;
	if (dup_field(&dst->server, src->server) && dup_field(&dst->scheme, src->scheme) &&
	    dup_field(&dst->prefix, src->prefix) && dup_field(&dst->suffix, src->suffix) &&
	    dup_field(&dst->basedn, src->basedn) && dup_field(&dst->binddn, src->binddn) &&
	    dup_field(&dst->bindpasswd, src->bindpasswd) && dup_field(&dst->searchattribute, src->searchattribute) &&
	    dup_field(&dst->searchfilter, src->searchfilter))
		return true;
	ldapauth_clear(dst);
	return false;
}

static bool replace(char **field, const char *value, char *err, size_t errlen)
{
	char *copy = strdup(value);
	if (!copy) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	free(*field);
	*field = copy;
	return true;
}

static bool name_is(const char *name, size_t len, const char *want)
{
	return strlen(want) == len && strncmp(name, want, len) == 0;
}

#ifdef HAVE_LDAP
/* ldapurl: RFC 4516, read with libldap's own parser (as PostgreSQL). */
static bool set_url(struct ldap_params *p, const char *value, char *err, size_t errlen)
{
	LDAPURLDesc *url = NULL;
	int rc = ldap_url_parse(value, &url);
	if (rc != LDAP_SUCCESS) {
		snprintf(err, errlen, "could not parse LDAP URL \"%s\": %s", value, ldap_err2string(rc));
		return false;
	}
	bool ok = true;
	if (strcmp(url->lud_scheme, "ldap") != 0 && strcmp(url->lud_scheme, "ldaps") != 0) {
		snprintf(err, errlen, "unsupported LDAP URL scheme: %s", url->lud_scheme);
		ok = false;
	}
	if (ok)
		ok = replace(&p->scheme, url->lud_scheme, err, errlen) &&
		     (!url->lud_host || replace(&p->server, url->lud_host, err, errlen)) &&
		     (!url->lud_dn || replace(&p->basedn, url->lud_dn, err, errlen)) &&
		     (!url->lud_attrs || !url->lud_attrs[0] ||
		      replace(&p->searchattribute, url->lud_attrs[0], err, errlen)) &&
		     (!url->lud_filter || replace(&p->searchfilter, url->lud_filter, err, errlen));
	if (ok) {
		p->port = url->lud_port;
		p->scope = url->lud_scope;   /* as PostgreSQL: the URL's, base when it names none */
	}
	ldap_free_urldesc(url);
	return ok;
}
#else
static bool set_url(struct ldap_params *p, const char *value, char *err, size_t errlen)
{
	(void)value;
	/* LDAP logins are refused in this build: remember that a URL names the server */
	return replace(&p->server, "(ldapurl)", err, errlen);
}
#endif

bool ldapauth_set(struct ldap_params *p, const char *name, size_t len, const char *value, char *err,
                  size_t errlen)
{
	if (name_is(name, len, "ldapserver"))
		return replace(&p->server, value, err, errlen);
	if (name_is(name, len, "ldapport")) {
		char *end;
		long port = strtol(value, &end, 10);
		if (!*value || *end || port < 1 || port > 65535) {
			snprintf(err, errlen, "invalid LDAP port number: \"%s\"", value);
			return false;
		}
		p->port = (int)port;
		return true;
	}
	if (name_is(name, len, "ldapscheme")) {
		if (strcmp(value, "ldap") != 0 && strcmp(value, "ldaps") != 0) {
			snprintf(err, errlen, "invalid ldapscheme value: \"%s\"", value);
			return false;
		}
		return replace(&p->scheme, value, err, errlen);
	}
	if (name_is(name, len, "ldaptls")) {
		p->tls = strcmp(value, "1") == 0;
		return true;
	}
	if (name_is(name, len, "ldapprefix"))
		return replace(&p->prefix, value, err, errlen);
	if (name_is(name, len, "ldapsuffix"))
		return replace(&p->suffix, value, err, errlen);
	if (name_is(name, len, "ldapbasedn"))
		return replace(&p->basedn, value, err, errlen);
	if (name_is(name, len, "ldapbinddn"))
		return replace(&p->binddn, value, err, errlen);
	if (name_is(name, len, "ldapbindpasswd"))
		return replace(&p->bindpasswd, value, err, errlen);
	if (name_is(name, len, "ldapsearchattribute"))
		return replace(&p->searchattribute, value, err, errlen);
	if (name_is(name, len, "ldapsearchfilter"))
		return replace(&p->searchfilter, value, err, errlen);
	if (name_is(name, len, "ldapurl"))
		return set_url(p, value, err, errlen);
	snprintf(err, errlen, "unrecognized authentication option name: \"%.*s\"", (int)len, name);
	return false;
}

bool ldapauth_check_params(const struct ldap_params *p, char *err, size_t errlen)
{
	/* PostgreSQL's hba.c parse_hba_line wording */
	bool search = p->basedn || p->binddn || p->bindpasswd || p->searchattribute || p->searchfilter;
	if (!p->server) {
		snprintf(err, errlen, "authentication method \"ldap\" requires argument \"ldapserver\" to be set");
		return false;
	}
	if (search && (p->prefix || p->suffix)) {
		snprintf(err, errlen, "cannot mix options for simple bind and search+bind modes");
		return false;
	}
	if (!p->basedn && !p->prefix && !p->suffix) {
		snprintf(err, errlen, "authentication method \"ldap\" requires argument \"ldapbasedn\", \"ldapprefix\", "
		         "or \"ldapsuffix\" to be set");
		return false;
	}
	if (p->searchattribute && p->searchfilter) {
		snprintf(err, errlen, "cannot use ldapsearchattribute together with ldapsearchfilter");
		return false;
	}
	return true;
}

bool ldapauth_parse_options(const char *text, struct ldap_params *p, char *err, size_t errlen)
{
	const char *s = text;
	char *buf = malloc(strlen(text) + 1);
	if (!buf) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	bool ok = true;
	while (ok) {
		while (*s == ' ' || *s == '\t' || *s == ',')
			s++;
		if (!*s)
			break;
		/* one token: quoted parts lose their quotes, "" inside quotes is a quote */
		size_t n = 0, eq = (size_t)-1;
		bool quoted = false;
		for (; *s && (quoted || (*s != ' ' && *s != '\t' && *s != ',')); s++) {
			if (*s == '"') {
				if (quoted && s[1] == '"') {
					buf[n++] = '"';
					s++;
				} else {
					quoted = !quoted;
				}
				continue;
			}
			if (*s == '=' && !quoted && eq == (size_t)-1)
				eq = n;
			buf[n++] = *s;
		}
		buf[n] = '\0';
		if (quoted) {
			snprintf(err, errlen, "unterminated quoted string in auth_ldap_options");
			ok = false;
		} else if (eq == (size_t)-1 || eq == 0) {
			snprintf(err, errlen, "authentication option not in name=value format: %s", buf);
			ok = false;
		} else {
			ok = ldapauth_set(p, buf, eq, buf + eq + 1, err, errlen);
		}
	}
	free(buf);
	return ok && ldapauth_check_params(p, err, errlen);
}

#ifdef HAVE_LDAP

bool ldapauth_available(void)
{
	return true;
}

static void say(struct ldapauth_result *res, const char *fmt, const char *a, const char *b)
{
	snprintf(res->message, sizeof(res->message), fmt, a ? a : "", b ? b : "");
}

/* "ldap://a:389 ldap://b:389" for libldap, from the blank-separated ldapserver list. */
static char *server_uris(const struct ldap_params *p)
{
	const char *scheme = p->scheme ? p->scheme : "ldap";
	int port = p->port ? p->port : strcmp(scheme, "ldaps") == 0 ? 636 : 389;
	size_t cap = strlen(p->server) * 2 + 64, len = 0;
	char *out = malloc(cap);
	if (!out)
		return NULL;
	out[0] = '\0';
	for (const char *s = p->server; *s;) {
		while (*s == ' ' || *s == '\t')
			s++;
		size_t n = strcspn(s, " \t");
		if (n == 0)
			break;
		size_t need = len + n + strlen(scheme) + 20;
		if (need > cap) {
			char *grown = realloc(out, need * 2);
			if (!grown) {
				free(out);
				return NULL;
			}
			out = grown;
			cap = need * 2;
		}
		len += (size_t)snprintf(out + len, cap - len, "%s%s://%.*s:%d", len ? " " : "", scheme, (int)n, s, port);
		s += n;
	}
	return out;
}

/* The search filter for user: ldapsearchfilter with $username replaced, or (attribute=user). */
static char *search_filter(const struct ldap_params *p, const char *user)
{
	if (!p->searchfilter) {
		const char *attr = p->searchattribute ? p->searchattribute : "uid";
		size_t n = strlen(attr) + strlen(user) + 4;
		char *f = malloc(n);
		if (f)
			snprintf(f, n, "(%s=%s)", attr, user);
		return f;
	}
	size_t count = 0;
	for (const char *s = p->searchfilter; (s = strstr(s, "$username")) != NULL; s += 9)
		count++;
	size_t n = strlen(p->searchfilter) + count * strlen(user) + 1;
	char *f = malloc(n), *o = f;
	if (!f)
		return NULL;
	for (const char *s = p->searchfilter; *s;) {
		if (strncmp(s, "$username", 9) == 0) {
			o += sprintf(o, "%s", user);
			s += 9;
		} else {
			*o++ = *s++;
		}
	}
	*o = '\0';
	return f;
}

static int simple_bind(LDAP *ld, const char *dn, const char *password)
{
	struct berval cred = { .bv_val = (char *)password, .bv_len = password ? strlen(password) : 0 };
	return ldap_sasl_bind_s(ld, dn ? dn : "", LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
}

void ldapauth_check(const struct ldap_params *p, const char *user, const char *password, struct ldapauth_result *res)
{
	res->ok = false;
	res->message[0] = '\0';
	if (!*password) {
		say(res, "LDAP: empty password returned by client%s%s", NULL, NULL);
		return;
	}
	if (p->basedn && strpbrk(user, "*()\\/")) {
		say(res, "invalid character in user name \"%s\" for LDAP authentication%s", user, NULL);
		return;
	}
	char *uris = server_uris(p);
	if (!uris) {
		say(res, "out of memory%s%s", NULL, NULL);
		return;
	}
	LDAP *ld = NULL;
	int rc = ldap_initialize(&ld, uris);
	if (rc != LDAP_SUCCESS) {
		say(res, "could not initialize LDAP for \"%s\": %s", uris, ldap_err2string(rc));
		free(uris);
		return;
	}
	int version = LDAP_VERSION3;
	struct timeval tv = { LDAP_TIMEOUT_S, 0 };
	ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version);
	ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
	ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
	ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
	char *fulldn = NULL, *filter = NULL;
	LDAPMessage *found = NULL;
	if (p->tls && (rc = ldap_start_tls_s(ld, NULL, NULL)) != LDAP_SUCCESS) {
		say(res, "could not start LDAP TLS session with \"%s\": %s", uris, ldap_err2string(rc));
		goto out;
	}
	if (p->basedn) {
		/* search+bind: find the user's entry, then bind as it */
		rc = simple_bind(ld, p->binddn, p->bindpasswd);
		if (rc != LDAP_SUCCESS) {
			say(res, "could not perform initial LDAP bind for ldapbinddn \"%s\": %s", p->binddn, ldap_err2string(rc));
			goto out;
		}
		filter = search_filter(p, user);
		if (!filter) {
			say(res, "out of memory%s%s", NULL, NULL);
			goto out;
		}
		char *attrs[] = { (char *)LDAP_NO_ATTRS, NULL };
		rc = ldap_search_ext_s(ld, p->basedn, p->scope >= 0 ? p->scope : LDAP_SCOPE_SUBTREE, filter, attrs, 0,
		                       NULL, NULL, &tv, 2, &found);
		if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED) {
			say(res, "could not search LDAP for filter \"%s\": %s", filter, ldap_err2string(rc));
			goto out;
		}
		int n = ldap_count_entries(ld, found);
		if (n != 1 || rc == LDAP_SIZELIMIT_EXCEEDED) {
			say(res, n == 0 ? "LDAP user \"%s\" does not exist (filter %s)"
			                : "LDAP user \"%s\" is not unique (filter %s)", user, filter);
			goto out;
		}
		fulldn = ldap_get_dn(ld, ldap_first_entry(ld, found));
		if (!fulldn) {
			say(res, "could not get dn for the first entry matching \"%s\" on server%s", filter, NULL);
			goto out;
		}
	} else {
		size_t n = strlen(p->prefix ? p->prefix : "") + strlen(user) + strlen(p->suffix ? p->suffix : "") + 1;
		char *dn = malloc(n);
		if (!dn) {
			say(res, "out of memory%s%s", NULL, NULL);
			goto out;
		}
		snprintf(dn, n, "%s%s%s", p->prefix ? p->prefix : "", user, p->suffix ? p->suffix : "");
		rc = simple_bind(ld, dn, password);
		if (rc != LDAP_SUCCESS)
			say(res, "LDAP login failed for user \"%s\": %s", dn, ldap_err2string(rc));
		res->ok = rc == LDAP_SUCCESS;
		free(dn);
		goto out;
	}
	rc = simple_bind(ld, fulldn, password);
	if (rc != LDAP_SUCCESS)
		say(res, "LDAP login failed for user \"%s\": %s", fulldn, ldap_err2string(rc));
	res->ok = rc == LDAP_SUCCESS;
out:
	if (found)
		ldap_msgfree(found);
	if (fulldn)
		ldap_memfree(fulldn);
	free(filter);
	free(uris);
	ldap_unbind_ext_s(ld, NULL, NULL);
}

#else /* !HAVE_LDAP */

bool ldapauth_available(void)
{
	return false;
}

void ldapauth_check(const struct ldap_params *p, const char *user, const char *password, struct ldapauth_result *res)
{
	(void)p;
	(void)user;
	(void)password;
	res->ok = false;
	snprintf(res->message, sizeof(res->message), "pgsluice was built without LDAP support");
}

#endif
