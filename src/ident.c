/* SPDX-License-Identifier: PostgreSQL */
/* ident.c - see ident.h. Follows PostgreSQL's hba.c (parse_ident_line, check_usermap). */
#include "ident.h"

#include <errno.h>
#include <pwd.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

#define MAX_TOKEN 256
#define MAX_LINE_TOKENS 4      /* three, and one more to say "too many" */

struct ident_line {
	char *map;
	char *sysuser;              /* literal, or the regex text after '/' */
	char *role;                 /* literal, "all", or with "\1" when sysuser is a regex */
	bool is_regex;
	bool role_all;              /* DATABASE-USERNAME was the keyword all (unquoted) */
	regex_t re;
};

struct ident_map {
	struct ident_line *lines;
	size_t n;
};

static void __attribute__((format(printf, 5, 6)))
set_error(char *errbuf, size_t errlen, const char *name, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (errbuf && errlen)
		snprintf(errbuf, errlen, "%s:%d: %s", name, line, msg);
}

/*
 * Split one line into tokens: whitespace separates, '#' starts a comment,
 * "..." quotes (a doubled quote inside is one). quoted[i] says whether token
 * i was quoted (keywords must not be). Returns the count, -1 for a token too
 * long or an unterminated quote.
 */
static int split_line(const char *p, char tokens[][MAX_TOKEN], bool *quoted)
{
	int n = 0;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\r')
			p++;
		if (!*p || *p == '#' || *p == '\n')
			return n;
		if (n == MAX_LINE_TOKENS)
			return n + 1;
		size_t len = 0;
		quoted[n] = false;
		while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n' && *p != '#') {
			if (*p == '"') {
				quoted[n] = true;
				p++;
				while (*p && *p != '\n' && !(*p == '"' && p[1] != '"')) {
					if (*p == '"')
						p++;     /* "" is one quote */
					if (len + 1 >= MAX_TOKEN)
						return -1;
					tokens[n][len++] = *p++;
				}
				if (*p != '"')
					return -1;
				p++;
				continue;
			}
			if (len + 1 >= MAX_TOKEN)
				return -1;
			tokens[n][len++] = *p++;
		}
		tokens[n][len] = '\0';
		n++;
	}
}

static void line_free(struct ident_line *l)
{
	free(l->map);
	free(l->sysuser);
	free(l->role);
	if (l->is_regex)
		regfree(&l->re);
}

void ident_free(struct ident_map *im)
{
	if (!im)
		return;
	for (size_t i = 0; i < im->n; i++)
		line_free(&im->lines[i]);
	free(im->lines);
	free(im);
}

/* One parsed line into l; false with errbuf set. */
static bool parse_line(char tokens[][MAX_TOKEN], const bool *quoted, int n, struct ident_line *l,
                       const char *name, int line, char *errbuf, size_t errlen)
{
	if (n > 3) {
		set_error(errbuf, errlen, name, line, "extra fields at end of line; write MAPNAME SYSTEM-USERNAME DATABASE-USERNAME");
		return false;
	}
	if (n < 3) {
		set_error(errbuf, errlen, name, line, "missing entry at end of line; write MAPNAME SYSTEM-USERNAME DATABASE-USERNAME");
		return false;
	}
	if (!quoted[0] && (strcmp(tokens[0], "include") == 0 || strcmp(tokens[0], "include_if_exists") == 0 ||
	                   strcmp(tokens[0], "include_dir") == 0)) {
		set_error(errbuf, errlen, name, line, "\"%s\" is not supported by pgsluice; write the maps in this file",
		          tokens[0]);
		return false;
	}
	if (!quoted[2] && (tokens[2][0] == '+' || tokens[2][0] == '/')) {
		set_error(errbuf, errlen, name, line,
		          "DATABASE-USERNAME \"%s\" is not supported by pgsluice: write a role name or all", tokens[2]);
		return false;
	}
	l->is_regex = tokens[1][0] == '/';
	l->role_all = !quoted[2] && strcmp(tokens[2], "all") == 0;
	l->map = strdup(tokens[0]);
	l->sysuser = strdup(l->is_regex ? tokens[1] + 1 : tokens[1]);
	l->role = strdup(tokens[2]);
	if (!l->map || !l->sysuser || !l->role) {
		l->is_regex = false;
		set_error(errbuf, errlen, name, line, "out of memory");
		return false;
	}
	if (l->is_regex) {
		int rc = regcomp(&l->re, l->sysuser, REG_EXTENDED);
		if (rc != 0) {
			char why[256];
			regerror(rc, &l->re, why, sizeof(why));
			l->is_regex = false;
			set_error(errbuf, errlen, name, line, "invalid regular expression \"%s\": %s", l->sysuser, why);
			return false;
		}
	}
	return true;
}

struct ident_map *ident_parse(const char *text, const char *name, char *errbuf, size_t errlen)
{
	struct ident_map *im = calloc(1, sizeof(*im));
	size_t cap = 0;
	int line = 0;
	if (!im) {
		set_error(errbuf, errlen, name, 0, "out of memory");
		return NULL;
	}
	for (const char *p = text; *p;) {
		const char *end = strchr(p, '\n');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char *copy = strndup(p, len);
		char tokens[MAX_LINE_TOKENS][MAX_TOKEN];
		bool quoted[MAX_LINE_TOKENS];
		line++;
		p = end ? end + 1 : p + len;
		if (!copy) {
			set_error(errbuf, errlen, name, line, "out of memory");
			ident_free(im);
			return NULL;
		}
		int n = split_line(copy, tokens, quoted);
		free(copy);
		if (n == 0)
			continue;
		if (n < 0) {
			set_error(errbuf, errlen, name, line, "unterminated quoted string or name longer than %d bytes",
			          MAX_TOKEN - 1);
			ident_free(im);
			return NULL;
		}
		if (im->n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			struct ident_line *grown = realloc(im->lines, ncap * sizeof(*grown));
			if (!grown) {
				set_error(errbuf, errlen, name, line, "out of memory");
				ident_free(im);
				return NULL;
			}
			im->lines = grown;
			cap = ncap;
		}
		struct ident_line *l = &im->lines[im->n];
		memset(l, 0, sizeof(*l));
		if (!parse_line(tokens, quoted, n, l, name, line, errbuf, errlen)) {
			line_free(l);
			ident_free(im);
			return NULL;
		}
		im->n++;
	}
	return im;
}

struct ident_map *ident_load(const char *path, char *errbuf, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		if (errbuf && errlen)
			snprintf(errbuf, errlen, "could not open file \"%s\": %s", path, strerror(errno));
		return NULL;
	}
	char *text = NULL;
	size_t len = 0, cap = 0, got;
	char buf[4096];
	while ((got = fread(buf, 1, sizeof(buf), f)) > 0) {
		if (len + got + 1 > cap) {
			size_t ncap = (len + got + 1) * 2;
			char *grown = realloc(text, ncap);
			if (!grown) {
				free(text);
				fclose(f);
				if (errbuf && errlen)
					snprintf(errbuf, errlen, "%s: out of memory", path);
				return NULL;
			}
			text = grown;
			cap = ncap;
		}
		memcpy(text + len, buf, got);
		len += got;
	}
	fclose(f);
	struct ident_map *im = ident_parse(text ? (text[len] = '\0', text) : "", path, errbuf, errlen);
	free(text);
	return im;
}

/* Does line l map sysuser to role? */
static bool line_allows(const struct ident_line *l, const char *sysuser, const char *role)
{
	if (!l->is_regex)
		return strcmp(l->sysuser, sysuser) == 0 && (l->role_all || strcmp(l->role, role) == 0);
	regmatch_t m[2];
	if (regexec(&l->re, sysuser, 2, m, 0) != 0)
		return false;
	if (l->role_all)
		return true;
	const char *ref = strstr(l->role, "\\1");
	if (!ref)
		return strcmp(l->role, role) == 0;
	if (m[1].rm_so < 0) {
		log_warning("regular expression \"%s\" has no subexpressions as requested by backreference in \"%s\"",
		            l->sysuser, l->role);
		return false;
	}
	/* role must be: the text before \1, the first subexpression, the text after */
	size_t before = (size_t)(ref - l->role), sub = (size_t)(m[1].rm_eo - m[1].rm_so);
	const char *after = ref + 2;
	return strlen(role) == before + sub + strlen(after) && strncmp(role, l->role, before) == 0 &&
	       strncmp(role + before, sysuser + m[1].rm_so, sub) == 0 && strcmp(role + before + sub, after) == 0;
}

bool ident_map_allows(const struct ident_map *im, const char *mapname, const char *sysuser, const char *role)
{
	if (!im || !mapname || !sysuser || !role)
		return false;
	for (size_t i = 0; i < im->n; i++)
		if (strcmp(im->lines[i].map, mapname) == 0 && line_allows(&im->lines[i], sysuser, role))
			return true;
	return false;
}

bool ident_peer_user(int fd, uid_t *uid, char *name, size_t namelen, char *why, size_t whylen)
{
#ifdef SO_PEERCRED
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		snprintf(why, whylen, "could not get peer credentials: %s", strerror(errno));
		return false;
	}
	*uid = cred.uid;
#else
	gid_t gid;
	if (getpeereid(fd, uid, &gid) != 0) {
		snprintf(why, whylen, "could not get peer credentials: %s", strerror(errno));
		return false;
	}
#endif
	struct passwd pw, *found = NULL;
	char buf[4096];
	int rc = getpwuid_r(*uid, &pw, buf, sizeof(buf), &found);
	if (!found) {
		snprintf(why, whylen, "could not look up local user ID %ld: %s", (long)*uid,
		         rc ? strerror(rc) : "user does not exist");
		return false;
	}
	snprintf(name, namelen, "%s", pw.pw_name);
	return true;
}
