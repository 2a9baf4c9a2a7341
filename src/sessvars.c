/* SPDX-License-Identifier: PostgreSQL */
/* sessvars.c - see sessvars.h. */
#include "sessvars.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sqllex.h"
#include "util.h"
#include "varcache.h"

static uint64_t last_gen;

/* ---- the record ---- */

static void rehash(struct sessvars *rec)
{
	uint64_t h = 14695981039346656037ULL;
	for (size_t i = 0; i < rec->n; i++) {
		const struct sessvar *v = &rec->items[i];
		h = hash_fnv1a(h, v->name, strlen(v->name) + 1);
		h = hash_fnv1a(h, v->literal ? "L" : "R", 1);
		h = hash_fnv1a(h, v->value, strlen(v->value) + 1);
	}
	rec->hash = rec->n ? h : 0;
	rec->gen = rec->n ? ++last_gen : 0;
}

/* Index of name, or where it would go (*found false). */
static size_t find(const struct sessvars *rec, const char *name, bool *found)
{
	size_t lo = 0, hi = rec->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int cmp = strcmp(rec->items[mid].name, name);
		if (cmp == 0) {
			*found = true;
			return mid;
		}
		if (cmp < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

static void fold(char *s)
{
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s | 0x20);
}

const struct sessvar *sessvars_get(const struct sessvars *rec, const char *name)
{
	bool found;
	size_t i = find(rec, name, &found);
	return found ? &rec->items[i] : NULL;
}

static bool fits(const struct sessvars *rec, const char *name, const char *value)
{
	bool found;
	size_t i = find(rec, name, &found);
	size_t bytes = rec->bytes + strlen(name) + strlen(value);
	if (found)
		bytes -= strlen(rec->items[i].name) + strlen(rec->items[i].value);
	return (found || rec->n < SESSVARS_MAX_COUNT) && bytes <= SESSVARS_MAX_BYTES;
}

int sessvars_put(struct sessvars *rec, const char *name_in, const char *value, bool literal)
{
	char *name = strdup(name_in);
	if (!name)
		return -1;
	fold(name);
	bool found;
	size_t i = find(rec, name, &found);
	if (found && rec->items[i].literal == literal && strcmp(rec->items[i].value, value) == 0) {
		free(name);
		return 0;
	}
	if (!fits(rec, name, value)) {
		free(name);
		return -2;
	}
	char *copy = strdup(value);
	if (!copy) {
		free(name);
		return -1;
	}
	if (found) {
		struct sessvar *v = &rec->items[i];
		rec->bytes -= strlen(v->value);
		free(v->value);
		free(name);
		v->value = copy;
		v->literal = literal;
	} else {
		if (rec->n == rec->cap) {
			size_t cap = rec->cap ? rec->cap * 2 : 8;
			struct sessvar *items = realloc(rec->items, cap * sizeof(*items));
			if (!items) {
				free(name);
				free(copy);
				return -1;
			}
			rec->items = items;
			rec->cap = cap;
		}
		memmove(&rec->items[i + 1], &rec->items[i], (rec->n - i) * sizeof(rec->items[0]));
		rec->items[i] = (struct sessvar){ name, copy, literal };
		rec->n++;
		rec->bytes += strlen(name);
	}
	rec->bytes += strlen(copy);
	rehash(rec);
	return 0;
}

bool sessvars_del(struct sessvars *rec, const char *name)
{
	bool found;
	size_t i = find(rec, name, &found);
	if (!found)
		return false;
	struct sessvar *v = &rec->items[i];
	rec->bytes -= strlen(v->name) + strlen(v->value);
	free(v->name);
	free(v->value);
	memmove(&rec->items[i], &rec->items[i + 1], (rec->n - i - 1) * sizeof(rec->items[0]));
	rec->n--;
	rehash(rec);
	return true;
}

void sessvars_clear(struct sessvars *rec)
{
	for (size_t i = 0; i < rec->n; i++) {
		free(rec->items[i].name);
		free(rec->items[i].value);
	}
	free(rec->items);
	*rec = (struct sessvars){ 0 };
}

bool sessvars_equal(const struct sessvars *a, const struct sessvars *b)
{
	if (a->n != b->n || a->hash != b->hash || a->bytes != b->bytes)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (a->items[i].literal != b->items[i].literal || strcmp(a->items[i].name, b->items[i].name) != 0 ||
		    strcmp(a->items[i].value, b->items[i].value) != 0)
			return false;
	return true;
}

void sessvars_invalidate(struct sessvars *rec)
{
	rec->gen = ++last_gen;
}

bool sessvars_copy(struct sessvars *dst, const struct sessvars *src)
{
	if (dst == src || (dst->gen == src->gen && dst->gen != 0) || (dst->n == 0 && src->n == 0 && src->gen == 0)) {
		dst->gen = src->gen;
		return true;
	}
	sessvars_clear(dst);
	if (src->n == 0) {
		dst->gen = src->gen;
		return true;
	}
	dst->items = calloc(src->n, sizeof(*dst->items));
	if (!dst->items) {
		sessvars_invalidate(dst);
		return false;
	}
	dst->cap = src->n;
	for (size_t i = 0; i < src->n; i++) {
		dst->items[i].name = strdup(src->items[i].name);
		dst->items[i].value = strdup(src->items[i].value);
		dst->items[i].literal = src->items[i].literal;
		dst->n++;
		if (!dst->items[i].name || !dst->items[i].value) {
			sessvars_clear(dst);
			sessvars_invalidate(dst);
			return false;
		}
	}
	dst->bytes = src->bytes;
	dst->gen = src->gen;
	dst->hash = src->hash;
	return true;
}

bool sessvars_no_reset_all(const char *name)
{
	return strcmp(name, SESSVAR_ROLE) == 0 || strcmp(name, SESSVAR_SESSION_AUTHORIZATION) == 0;
}

/*
 * RESET ALL: every setting back to its startup value, but role and
 * session_authorization (GUC_NO_RESET_ALL, sql-reset.html) as they are.
 */
static int reset_all(struct sessvars *rec, const struct sessvars *startup)
{
	struct sessvar keep[2];
	size_t n_keep = 0;
	int rc = 0;
	for (size_t i = 0; i < rec->n; i++)
		if (sessvars_no_reset_all(rec->items[i].name))
			keep[n_keep++] = rec->items[i];
	for (size_t i = 0; i < n_keep; i++) {
		keep[i].name = strdup(keep[i].name);
		keep[i].value = strdup(keep[i].value);
		if (!keep[i].name || !keep[i].value)
			rc = -1;
	}
	if (rc == 0 && startup && !sessvars_copy(rec, startup))
		rc = -1;
	if (!startup)
		sessvars_clear(rec);
	if (rc == 0) {
		sessvars_del(rec, SESSVAR_ROLE);
		sessvars_del(rec, SESSVAR_SESSION_AUTHORIZATION);
	}
	for (size_t i = 0; i < n_keep; i++) {
		if (rc == 0)
			rc = sessvars_put(rec, keep[i].name, keep[i].value, keep[i].literal);
		free(keep[i].name);
		free(keep[i].value);
	}
	return rc;
}

int sessvars_apply(struct sessvars *rec, const struct sessvars *startup, const struct sessvar_op *op)
{
	/* SET SESSION AUTHORIZATION logically resets the role to NONE (variable.c
	 * show_role): the record says so by dropping it, the diff sets it again */
	if ((op->kind == SESSVAR_SET || op->kind == SESSVAR_SET_STRING || op->kind == SESSVAR_RESET) &&
	    strcmp(op->name, SESSVAR_SESSION_AUTHORIZATION) == 0)
		sessvars_del(rec, SESSVAR_ROLE);
	switch (op->kind) {
	case SESSVAR_SET:
	case SESSVAR_SET_STRING:
		return sessvars_put(rec, op->name, op->value, op->kind == SESSVAR_SET_STRING);
	case SESSVAR_RESET: {
		const struct sessvar *v = startup ? sessvars_get(startup, op->name) : NULL;
		if (v)
			return sessvars_put(rec, v->name, v->value, v->literal);
		sessvars_del(rec, op->name);
		return 0;
	}
	case SESSVAR_RESET_ALL:
		return reset_all(rec, startup);
	default:
		return 0;
	}
}

bool sessvars_fits(const struct sessvars *rec, const struct sessvar_op *op)
{
	if (op->kind != SESSVAR_SET && op->kind != SESSVAR_SET_STRING)
		return true;
	return fits(rec, op->name, op->value);
}

/* ---- the SQL that brings a server to a record ---- */

struct sbuf {
	char *p;
	size_t len, cap;
	bool failed;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (b->len + n + 1 > cap)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->failed = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

/* s doubled at every q: the body of a quoted identifier or literal. */
static void sb_quoted(struct sbuf *b, const char *s, char q, bool backslash)
{
	for (; *s; s++) {
		sb_add(b, s, 1);
		if (*s == q || (backslash && *s == '\\'))
			sb_add(b, s, 1);
	}
}

/* A setting name as one quoted identifier: "app.tenant" names the GUC app.tenant. */
static void sb_name(struct sbuf *b, const char *name)
{
	sb_str(b, "\"");
	sb_quoted(b, name, '"', false);
	sb_str(b, "\"");
}

static void sb_set(struct sbuf *b, const struct sessvar *v)
{
	if (!v->literal && strcmp(v->name, SESSVAR_ROLE) == 0) {
		sb_str(b, "SET ROLE ");      /* the value as written: a name or a 'string' */
		sb_str(b, v->value);
		sb_str(b, ";");
	} else if (!v->literal && strcmp(v->name, SESSVAR_SESSION_AUTHORIZATION) == 0) {
		sb_str(b, "SET SESSION AUTHORIZATION ");
		sb_str(b, v->value);
		sb_str(b, ";");
	} else if (v->literal) {
		/* E'' reads the same whatever standard_conforming_strings is */
		sb_str(b, "SELECT pg_catalog.set_config(E'");
		sb_quoted(b, v->name, '\'', true);
		sb_str(b, "', E'");
		sb_quoted(b, v->value, '\'', true);
		sb_str(b, "', false);");
	} else {
		sb_str(b, "SET ");
		sb_name(b, v->name);
		sb_str(b, " TO ");
		sb_str(b, v->value);
		sb_str(b, ";");
	}
}

static void sb_reset(struct sbuf *b, const char *name)
{
	if (strcmp(name, SESSVAR_ROLE) == 0) {
		sb_str(b, "RESET ROLE;");
	} else if (strcmp(name, SESSVAR_SESSION_AUTHORIZATION) == 0) {
		sb_str(b, "RESET SESSION AUTHORIZATION;");
	} else {
		sb_str(b, "RESET ");
		sb_name(b, name);
		sb_str(b, ";");
	}
}

static bool same_setting(const struct sessvar *a, const struct sessvar *b)
{
	if (!a || !b)
		return a == b;
	return a->literal == b->literal && strcmp(a->value, b->value) == 0;
}

char *sessvars_diff_sql(const struct sessvars *want, const struct sessvars *have, bool reset_all, int *count)
{
	struct sbuf b = { 0 };
	*count = 0;
	sb_add(&b, "", 0);
	if (reset_all) {
		sb_str(&b, SESSVARS_RESET_ALL_SQL);
		(*count) += 3;
		for (size_t i = 0; i < want->n; i++)
			if (!sessvars_no_reset_all(want->items[i].name)) {
				sb_set(&b, &want->items[i]);
				(*count)++;
			}
	} else if (want->gen != have->gen || (want->gen == 0 && have->n > 0)) {
		size_t i = 0, j = 0;
		while (i < want->n || j < have->n) {
			int cmp = i >= want->n ? 1 : j >= have->n ? -1 : strcmp(want->items[i].name, have->items[j].name);
			const char *name = cmp > 0 ? have->items[j].name : want->items[i].name;
			if (sessvars_no_reset_all(name)) {
				/* after the others, in their order (below) */
			} else if (cmp > 0) {
				sb_reset(&b, have->items[j].name);
				(*count)++;
			} else if (cmp < 0 || !same_setting(&want->items[i], &have->items[j])) {
				sb_set(&b, &want->items[i]);
				(*count)++;
			}
			if (cmp <= 0)
				i++;
			if (cmp >= 0)
				j++;
		}
	}
	/* session_authorization before role: SET SESSION AUTHORIZATION resets
	 * the role (miscinit.c SetSessionUserId), so a role is set again after it */
	const struct sessvar *want_sa = sessvars_get(want, SESSVAR_SESSION_AUTHORIZATION);
	const struct sessvar *want_role = sessvars_get(want, SESSVAR_ROLE);
	bool sa_sent = false;
	if (reset_all || !same_setting(want_sa, sessvars_get(have, SESSVAR_SESSION_AUTHORIZATION))) {
		if (want_sa) {
			sb_set(&b, want_sa);
			(*count)++;
			sa_sent = true;
		} else if (!reset_all) {
			sb_reset(&b, SESSVAR_SESSION_AUTHORIZATION);
			(*count)++;
			sa_sent = true;
		}
	}
	if (want_role && (reset_all || sa_sent || !same_setting(want_role, sessvars_get(have, SESSVAR_ROLE)))) {
		sb_set(&b, want_role);
		(*count)++;
	} else if (!want_role && !reset_all && (sa_sent || sessvars_get(have, SESSVAR_ROLE))) {
		sb_reset(&b, SESSVAR_ROLE);
		(*count)++;
	}
	if (b.failed) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

/* ---- recognizing the statements ---- */

/* One identifier (sqllex_ident) into out; 0 when none or too long for out. */
static size_t take_ident(struct sqllex *lx, char *out, size_t size, bool *quoted)
{
	size_t n = sqllex_ident(lx, out, size, quoted);
	return n < size ? n : 0;
}

/* A dotted name (a.b.c) into out; 0 when none. */
static size_t take_name(struct sqllex *lx, char *out, size_t size, bool *quoted)
{
	size_t n = take_ident(lx, out, size, quoted);
	while (n > 0 && sqllex_peek(lx, '.')) {
		lx->p++;
		bool q;
		if (n + 2 >= size)
			return 0;
		out[n++] = '.';
		size_t m = take_ident(lx, out + n, size - n, &q);
		if (m == 0)
			return 0;
		n += m;
		*quoted = *quoted || q;
	}
	if (n > 0)
		fold(out);    /* GUC names are case-insensitive (guc.c guc_name_compare) */
	return n;
}

/* One value of a SET: 'string', "identifier", number or bare word. */
static bool take_value(struct sqllex *lx)
{
	sqllex_skip_blanks(lx);
	if (lx->p >= lx->end)
		return false;
	if (*lx->p == '\'')
		return sqllex_string(lx, NULL);
	if (*lx->p == '"') {
		char buf[256];
		bool q;
		return take_ident(lx, buf, sizeof(buf), &q) > 0;
	}
	const char *start = lx->p;
	if (lx->p < lx->end && (*lx->p == '-' || *lx->p == '+'))
		lx->p++;
	while (lx->p < lx->end && ((sqllex_ident_cont((unsigned char)*lx->p) && *lx->p != '$') || *lx->p == '.'))
		lx->p++;
	return lx->p > start && !(lx->p == start + 1 && (*start == '-' || *start == '+'));
}

static bool word_is(const char *w, bool quoted, const char *word)
{
	return !quoted && strcmp(w, word) == 0;
}

/* Names not recorded: PostgreSQL reports them, or they are not settings of the session. */
static enum sessvar_kind name_kind(const char *name)
{
	if (varcache_index(name) >= 0)
		return SESSVAR_REPORTED;
	if (strncmp(name, "transaction_", 12) == 0)
		return SESSVAR_LOCAL;
	if (strncmp(name, "sluice.", 7) == 0)
		return SESSVAR_NONE;     /* answered by pgsluice (ai/session.c) */
	return SESSVAR_SET;
}

/*
 * The one value of SET ROLE or SET SESSION AUTHORIZATION (gram.y:
 * NonReservedWord_or_Sconst, or reset_word, NONE / DEFAULT, for a RESET).
 */
static enum sessvar_kind parse_role(struct sqllex *lx, struct sessvar_op *op, const char *name, const char *reset_word)
{
	sqllex_skip_blanks(lx);
	const char *start = lx->p;
	struct sqllex probe = *lx;
	char word[16];
	bool q;
	if (take_ident(&probe, word, sizeof(word), &q) > 0 && word_is(word, q, reset_word) && sqllex_at_end(&probe)) {
		op->name = strdup(name);
		return op->name ? SESSVAR_RESET : SESSVAR_UNKNOWN;
	}
	if (!take_value(lx))
		return SESSVAR_UNKNOWN;
	const char *last = lx->p;
	if (!sqllex_at_end(lx))
		return SESSVAR_UNKNOWN;
	op->name = strdup(name);
	op->value = strndup(start, (size_t)(last - start));
	return op->name && op->value ? SESSVAR_SET : SESSVAR_UNKNOWN;
}

static enum sessvar_kind parse_set(struct sqllex *lx, struct sessvar_op *op)
{
	char name[256];
	bool quoted;
	size_t n = take_name(lx, name, sizeof(name), &quoted);
	if (n == 0)
		return SESSVAR_UNKNOWN;
	if (word_is(name, quoted, "local") || word_is(name, quoted, "transaction") ||
	    word_is(name, quoted, "constraints"))
		return SESSVAR_LOCAL;
	if (word_is(name, quoted, "session")) {
		n = take_name(lx, name, sizeof(name), &quoted);
		if (n == 0 || word_is(name, quoted, "characteristics"))
			return SESSVAR_UNKNOWN;
		if (word_is(name, quoted, "authorization"))
			return parse_role(lx, op, SESSVAR_SESSION_AUTHORIZATION, "default");
	}
	if (word_is(name, quoted, "role")) {
		struct sqllex probe = *lx;
		char to[8];
		bool q;
		if (!sqllex_peek(&probe, '=') && !(take_ident(&probe, to, sizeof(to), &q) > 0 && word_is(to, q, "to")))
			return parse_role(lx, op, SESSVAR_ROLE, "none");
	}
	if (word_is(name, quoted, "time") || word_is(name, quoted, "names"))
		return SESSVAR_REPORTED;
	bool schema = word_is(name, quoted, "schema");
	if (schema) {
		memcpy(name, "search_path", sizeof("search_path"));
	} else {
		if (word_is(name, quoted, "xml") || word_is(name, quoted, "seed"))
			return SESSVAR_UNKNOWN;
		enum sessvar_kind k = name_kind(name);
		if (k != SESSVAR_SET)
			return k;
		if (sqllex_peek(lx, '=')) {
			lx->p++;
		} else {
			char to[8];
			if (take_ident(lx, to, sizeof(to), &quoted) == 0 || !word_is(to, quoted, "to"))
				return SESSVAR_UNKNOWN;
		}
	}
	sqllex_skip_blanks(lx);
	const char *start = lx->p;
	struct sqllex probe = *lx;
	char word[16];
	bool q;
	if (!schema && take_ident(&probe, word, sizeof(word), &q) > 0 && word_is(word, q, "default") &&
	    sqllex_at_end(&probe)) {
		op->name = strdup(name);
		return op->name ? SESSVAR_RESET : SESSVAR_UNKNOWN;
	}
	const char *last;
	for (;;) {
		if (!take_value(lx))
			return SESSVAR_UNKNOWN;
		last = lx->p;
		if (schema || !sqllex_peek(lx, ','))
			break;
		lx->p++;
	}
	if (!sqllex_at_end(lx))
		return SESSVAR_UNKNOWN;
	op->name = strdup(name);
	op->value = strndup(start, (size_t)(last - start));
	return op->name && op->value ? SESSVAR_SET : SESSVAR_UNKNOWN;
}

static enum sessvar_kind parse_reset(struct sqllex *lx, struct sessvar_op *op)
{
	char name[256];
	bool quoted;
	if (take_name(lx, name, sizeof(name), &quoted) == 0)
		return SESSVAR_UNKNOWN;
	if (word_is(name, quoted, "all"))
		return sqllex_at_end(lx) ? SESSVAR_RESET_ALL : SESSVAR_UNKNOWN;
	if (word_is(name, quoted, "session")) {
		if (take_name(lx, name, sizeof(name), &quoted) == 0 || !word_is(name, quoted, "authorization"))
			return SESSVAR_UNKNOWN;
		memcpy(name, SESSVAR_SESSION_AUTHORIZATION, sizeof(SESSVAR_SESSION_AUTHORIZATION));
		quoted = true;    /* a name now, no keyword */
	}
	if (word_is(name, quoted, "time"))
		return SESSVAR_REPORTED;
	enum sessvar_kind k = name_kind(name);
	if (k != SESSVAR_SET)
		return k;
	if (!sqllex_at_end(lx))
		return SESSVAR_UNKNOWN;
	op->name = strdup(name);
	return op->name ? SESSVAR_RESET : SESSVAR_UNKNOWN;
}

/*
 * One argument of set_config: a 'string' into *out, or (params) a parameter
 * $n, optionally cast ::text or ::varchar, into *param.
 */
static bool take_arg(struct sqllex *lx, char **out, uint16_t *param, bool params)
{
	*param = 0;
	if (!params || !sqllex_peek(lx, '$'))
		return sqllex_string(lx, out);
	unsigned n = 0;
	for (lx->p++; lx->p < lx->end && *lx->p >= '0' && *lx->p <= '9' && n < 65536; lx->p++)
		n = n * 10 + (unsigned)(*lx->p - '0');
	if (n == 0 || n > 65535)
		return false;
	if (lx->end - lx->p >= 2 && lx->p[0] == ':' && lx->p[1] == ':') {
		char type[16];
		bool q;
		lx->p += 2;
		if (take_ident(lx, type, sizeof(type), &q) == 0 || q ||
		    (strcmp(type, "text") != 0 && strcmp(type, "varchar") != 0))
			return false;
	}
	*param = (uint16_t)n;
	return true;
}

/* SELECT [pg_catalog.]set_config('name', 'value', false|true); with params, $n for a string */
static enum sessvar_kind parse_set_config(struct sqllex *lx, struct sessvar_op *op, bool params)
{
	char word[64];
	bool quoted;
	if (take_name(lx, word, sizeof(word), &quoted) == 0 ||
	    (strcmp(word, "set_config") != 0 && strcmp(word, "pg_catalog.set_config") != 0) || !sqllex_peek(lx, '('))
		return SESSVAR_NONE;
	lx->p++;
	char *name = NULL, *value = NULL;
	uint16_t name_param = 0, value_param = 0;
	enum sessvar_kind k = SESSVAR_NONE;
	if (!take_arg(lx, &name, &name_param, params) || !sqllex_peek(lx, ',') ||
	    (lx->p++, !take_arg(lx, &value, &value_param, params)) || !sqllex_peek(lx, ','))
		goto out;
	lx->p++;
	if (take_ident(lx, word, sizeof(word), &quoted) == 0 || quoted || !sqllex_peek(lx, ')'))
		goto out;
	lx->p++;
	if (!sqllex_at_end(lx))
		goto out;
	if (strcmp(word, "true") == 0) {
		k = SESSVAR_LOCAL;
		goto out;
	}
	if (strcmp(word, "false") != 0)
		goto out;
	if (name) {
		fold(name);
		k = name[0] ? name_kind(name) : SESSVAR_UNKNOWN;   /* PostgreSQL refuses '' */
		if (k != SESSVAR_SET)
			goto out;
	}
	op->name = name;
	op->value = value;
	op->name_param = name_param;
	op->value_param = value_param;
	return SESSVAR_SET_STRING;
out:
	free(name);
	free(value);
	return k;
}

static enum sessvar_kind parse_statement(const char *text, size_t len, struct sessvar_op *op, bool params)
{
	/* a Query's text ends at its NUL (protocol-message-formats.html, String) */
	const char *nul = memchr(text, '\0', len);
	struct sqllex lx;
	sqllex_init(&lx, text, nul ? (size_t)(nul - text) : len);
	char word[16];
	bool quoted;
	*op = (struct sessvar_op){ SESSVAR_NONE, NULL, NULL, 0, 0 };
	if (take_ident(&lx, word, sizeof(word), &quoted) == 0 || quoted)
		return SESSVAR_NONE;
	enum sessvar_kind k;
	if (strcmp(word, "set") == 0)
		k = parse_set(&lx, op);
	else if (strcmp(word, "reset") == 0)
		k = parse_reset(&lx, op);
	else if (strcmp(word, "select") == 0)
		k = parse_set_config(&lx, op, params);
	else
		return SESSVAR_NONE;
	if (k != SESSVAR_SET && k != SESSVAR_SET_STRING && k != SESSVAR_RESET)
		sessvar_op_free(op);
	op->kind = k;
	return k;
}

enum sessvar_kind sessvars_parse(const char *text, size_t len, struct sessvar_op *op)
{
	return parse_statement(text, len, op, false);
}

enum sessvar_kind sessvars_parse_template(const char *text, size_t len, struct sessvar_op *op)
{
	return parse_statement(text, len, op, true);
}

/* Parameter n (1-based) as a string, malloc'd; NULL when missing, NULL or holding a NUL. */
static char *param_text(uint16_t n, uint16_t n_params, const char *const *values, const uint32_t *lens)
{
	if (n == 0 || n > n_params || !values[n - 1] || memchr(values[n - 1], 0, lens[n - 1]))
		return NULL;
	return strndup(values[n - 1], lens[n - 1]);
}

enum sessvar_kind sessvars_bind(const struct sessvar_op *tmpl, uint16_t n_params, const char *const *values,
                                const uint32_t *lens, struct sessvar_op *out)
{
	*out = (struct sessvar_op){ SESSVAR_UNKNOWN, NULL, NULL, 0, 0 };
	out->name = tmpl->name_param ? param_text(tmpl->name_param, n_params, values, lens)
	                             : tmpl->name ? strdup(tmpl->name) : NULL;
	out->value = tmpl->value_param ? param_text(tmpl->value_param, n_params, values, lens)
	                               : tmpl->value ? strdup(tmpl->value) : NULL;
	if ((tmpl->name && !out->name) || (tmpl->name_param && !out->name) || (tmpl->value && !out->value) ||
	    (tmpl->value_param && !out->value)) {
		sessvar_op_free(out);
		return SESSVAR_UNKNOWN;
	}
	enum sessvar_kind k = tmpl->kind;
	if (tmpl->name_param) {
		fold(out->name);
		k = name_kind(out->name);
		if (k == SESSVAR_SET)
			k = SESSVAR_SET_STRING;
	}
	if (k != SESSVAR_SET && k != SESSVAR_SET_STRING && k != SESSVAR_RESET && k != SESSVAR_RESET_ALL) {
		sessvar_op_free(out);
		return out->kind = k == SESSVAR_NONE ? SESSVAR_UNKNOWN : k;
	}
	return out->kind = k;
}

struct sessvar_op *sessvar_op_dup(const struct sessvar_op *op)
{
	struct sessvar_op *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	*d = *op;
	d->name = op->name ? strdup(op->name) : NULL;
	d->value = op->value ? strdup(op->value) : NULL;
	if ((op->name && !d->name) || (op->value && !d->value)) {
		sessvar_op_free(d);
		free(d);
		return NULL;
	}
	return d;
}

void sessvar_op_free(struct sessvar_op *op)
{
	free(op->name);
	free(op->value);
	op->name = op->value = NULL;
}
