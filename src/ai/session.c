/* SPDX-License-Identifier: PostgreSQL */
/* session.c - see session.h. */
#include "ai/session.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ai/tags.h"
#include "sessvars.h"
#include "util.h"
#include "varcache.h"

/* Which field of s a setting name is, or NULL. */
static char *field_of(struct ai_session *s, const char *name, size_t n)
{
	if (n == 11 && strncasecmp(name, "sluice.user", n) == 0)
		return s->user;
	if (n == 12 && strncasecmp(name, "sluice.model", n) == 0)
		return s->model;
	return NULL;
}

static bool set_field(char *field, const char *value, size_t n, const char *name,
                      char *errbuf, size_t errlen)
{
	if (n >= AI_NAME_MAX) {
		snprintf(errbuf, errlen, "value for \"%s\" is too long (at most %d bytes)", name, AI_NAME_MAX - 1);
		return false;
	}
	if (!tags_text_is_clean(value, n)) {
		/* it would be stored in sluice.llm_usage, a UTF8 text column */
		snprintf(errbuf, errlen, "invalid value for parameter \"%s\": not valid UTF-8", name);
		return false;
	}
	memcpy(field, value, n);
	field[n] = '\0';
	return true;
}

/* One "name=value" setting from options; ignored as ai_session_apply_options says. */
static bool apply_setting(struct ai_session *s, struct varcache *vars, struct sessvars *rec, const char *setting,
                          const char *ignored, char *errbuf, size_t errlen)
{
	const char *eq = strchr(setting, '=');
	if (!eq || eq == setting) {
		/* PgBouncer 1.25's texts for options it cannot use */
		snprintf(errbuf, errlen, "unsupported options startup parameter: only '-c config=val' and "
		         "'--config=val' are allowed");
		return false;
	}
	char name[64];
	size_t n = (size_t)(eq - setting);
	if (n >= sizeof(name)) {
		snprintf(errbuf, errlen, "setting name too long in startup options");
		return false;
	}
	memcpy(name, setting, n);
	name[n] = '\0';
	char *field = field_of(s, name, n);
	if (field)
		return set_field(field, eq + 1, strlen(eq + 1), name, errbuf, errlen);
	if (varcache_index(name) >= 0)
		return varcache_set(vars, name, eq + 1);
	if (str_list_contains(ignored, name) || str_list_contains(ignored, "options"))
		return true;
	/* any other setting follows the client onto its servers (settings.h) */
	int rc = sessvars_put(rec, name, eq + 1, true);
	if (rc == 0)
		return true;
	snprintf(errbuf, errlen, rc == -2 ? "too many settings in startup options" : "out of memory");
	return false;
}

/* Split options into words: blanks separate, "\ " is a blank inside a word. */
static const char *next_word(const char *p, char *word, size_t size)
{
	size_t n = 0;
	while (*p && isspace((unsigned char)*p))
		p++;
	while (*p && !isspace((unsigned char)*p)) {
		if (*p == '\\' && p[1])
			p++;
		if (n + 1 < size)
			word[n++] = *p;
		p++;
	}
	word[n] = '\0';
	return p;
}

bool ai_session_apply_options(struct ai_session *s, struct varcache *vars, struct sessvars *rec,
                              const char *options, const char *ignored, char *errbuf, size_t errlen)
{
	char word[512];
	const char *p = options;
	for (;;) {
		p = next_word(p, word, sizeof(word));
		if (!word[0])
			return true;
		const char *setting = NULL;
		if (strcmp(word, "-c") == 0) {
			p = next_word(p, word, sizeof(word));
			setting = word;
		} else if (strncmp(word, "-c", 2) == 0) {
			setting = word + 2;
		} else if (strncmp(word, "--", 2) == 0) {
			setting = word + 2;
		}
		if (!setting || !apply_setting(s, vars, rec, setting, ignored, errbuf, errlen)) {
			if (!setting)
				snprintf(errbuf, errlen, "unsupported options startup parameter: only '-c config=val' and "
				         "'--config=val' are allowed");
			return false;
		}
	}
}

/* ---- SET / RESET ---- */

struct lexer {
	const char *p, *end;
	bool bad_comment;    /* an unterminated block comment: PostgreSQL's error, not ours */
};

/* A "--" comment or a block comment starts at p. */
static bool at_comment(const struct lexer *lx, const char *p)
{
	return lx->end - p >= 2 && ((p[0] == '-' && p[1] == '-') || (p[0] == '/' && p[1] == '*'));
}

/*
 * Skip blanks and comments as PostgreSQL's scanner does (scan.l): "--" up to
 * the end of the line, block comments nested. OpenTelemetry and sqlcommenter
 * append a comment to every statement; it must not change what a SET means.
 */
static void skip_blanks(struct lexer *lx)
{
	for (;;) {
		while (lx->p < lx->end && isspace((unsigned char)*lx->p))
			lx->p++;
		if (!at_comment(lx, lx->p))
			return;
		if (lx->p[0] == '-') {
			while (lx->p < lx->end && *lx->p != '\n' && *lx->p != '\r')
				lx->p++;
			continue;
		}
		const char *q = lx->p + 2;
		int depth = 1;
		while (depth > 0 && lx->end - q >= 2) {
			if (q[0] == '/' && q[1] == '*') {
				depth++;
				q += 2;
			} else if (q[0] == '*' && q[1] == '/') {
				depth--;
				q += 2;
			} else {
				q++;
			}
		}
		if (depth > 0) {
			lx->bad_comment = true;
			return;
		}
		lx->p = q;
	}
}

/* Consume keyword kw (case-insensitive, whole word). */
static bool take_word(struct lexer *lx, const char *kw)
{
	skip_blanks(lx);
	size_t n = strlen(kw);
	if ((size_t)(lx->end - lx->p) < n || strncasecmp(lx->p, kw, n) != 0)
		return false;
	if (lx->p + n < lx->end && (isalnum((unsigned char)lx->p[n]) || lx->p[n] == '_' || lx->p[n] == '.'))
		return false;
	lx->p += n;
	return true;
}

/*
 * A setting name as PostgreSQL reads it: dot-separated identifiers, each
 * bare (folded to lower case) or "double quoted" ("" for a quote), so
 * sluice.user, "sluice.user" and sluice."user" are the same name. Written
 * into out (size bytes); returns its length, 0 when there is none or it is
 * too long.
 */
static size_t take_name(struct lexer *lx, char *out, size_t size)
{
	size_t n = 0;
	skip_blanks(lx);
	for (;;) {
		if (lx->p < lx->end && *lx->p == '"') {
			lx->p++;
			for (;;) {
				if (lx->p >= lx->end)
					return 0;
				if (*lx->p == '"') {
					if (lx->p + 1 < lx->end && lx->p[1] == '"')
						lx->p++;
					else
						break;
				}
				if (n + 1 >= size)
					return 0;
				out[n++] = *lx->p++;
			}
			lx->p++;
		} else {
			size_t start = n;
			while (lx->p < lx->end && (isalnum((unsigned char)*lx->p) || *lx->p == '_')) {
				if (n + 1 >= size)
					return 0;
				out[n++] = (char)tolower((unsigned char)*lx->p++);
			}
			if (n == start)
				return 0;
		}
		if (lx->p < lx->end && *lx->p == '.') {
			if (n + 1 >= size)
				return 0;
			out[n++] = *lx->p++;
			continue;
		}
		out[n] = '\0';
		return n;
	}
}

/* Only blanks and one optional ';' may follow. */
static bool at_end(struct lexer *lx)
{
	skip_blanks(lx);
	if (lx->p < lx->end && *lx->p == ';')
		lx->p++;
	skip_blanks(lx);
	while (lx->p < lx->end && *lx->p == '\0')
		lx->p++;
	return lx->p == lx->end;
}

/* 'quoted '' value' or a bare word into out; false when malformed. */
static bool take_value(struct lexer *lx, char *out, size_t size, size_t *len)
{
	skip_blanks(lx);
	size_t n = 0;
	if (lx->p < lx->end && *lx->p == '\'') {
		lx->p++;
		for (;;) {
			if (lx->p >= lx->end)
				return false;
			if (*lx->p == '\'') {
				if (lx->p + 1 < lx->end && lx->p[1] == '\'')
					lx->p++;
				else
					break;
			}
			if (n + 1 >= size)
				return false;
			out[n++] = *lx->p++;
		}
		lx->p++;
	} else {
		while (lx->p < lx->end && (isalnum((unsigned char)*lx->p) || strchr("_.-@:", *lx->p)) &&
		       !at_comment(lx, lx->p)) {
			if (n + 1 >= size)
				return false;
			out[n++] = *lx->p++;
		}
		if (n == 0)
			return false;
	}
	out[n] = '\0';
	*len = n;
	return true;
}

enum ai_set_result ai_session_match_set(struct ai_session *s, const char *text, size_t len,
                                        const char **tag, char *errbuf, size_t errlen)
{
	struct lexer lx = { text, text + len, false };
	char name_z[64];
	size_t n;
	bool show = false, reset = take_word(&lx, "RESET");
	if (!reset && !(show = take_word(&lx, "SHOW"))) {
		if (!take_word(&lx, "SET"))
			return AI_SET_NONE;
		take_word(&lx, "SESSION");
	}
	n = take_name(&lx, name_z, sizeof(name_z));
	if (n < 7 || strncmp(name_z, "sluice.", 7) != 0)
		return AI_SET_NONE;
	char *field = field_of(s, name_z, n);
	if (!field) {
		snprintf(errbuf, errlen, "unrecognized configuration parameter \"%s\"", name_z);
		return AI_SET_INVALID;
	}
	if (reset || show) {
		if (!at_end(&lx) || lx.bad_comment)
			return AI_SET_NONE;
		if (show) {
			*tag = field == s->user ? "sluice.user" : "sluice.model";
			return AI_SET_SHOW;
		}
		field[0] = '\0';
		*tag = "RESET";
		return AI_SET_DONE;
	}
	if (!take_word(&lx, "TO")) {
		skip_blanks(&lx);
		if (lx.p >= lx.end || *lx.p != '=')
			return AI_SET_NONE;
		lx.p++;
	}
	char value[AI_NAME_MAX];
	size_t vlen;
	struct lexer save = lx;
	if (take_word(&lx, "DEFAULT") && at_end(&lx)) {
		field[0] = '\0';
		*tag = "SET";
		return AI_SET_DONE;
	}
	lx = save;
	if (!take_value(&lx, value, sizeof(value), &vlen) || !at_end(&lx)) {
		if (lx.bad_comment)
			return AI_SET_NONE;    /* PostgreSQL reports the unterminated comment (42601) */
		snprintf(errbuf, errlen, "invalid value for parameter \"%s\" (at most %d bytes, one value)",
		         name_z, AI_NAME_MAX - 1);
		return AI_SET_INVALID;
	}
	if (!tags_text_is_clean(value, vlen)) {
		snprintf(errbuf, errlen, "invalid value for parameter \"%s\": not valid UTF-8", name_z);
		return AI_SET_INVALID;
	}
	memcpy(field, value, vlen + 1);
	*tag = "SET";
	return AI_SET_DONE;
}
