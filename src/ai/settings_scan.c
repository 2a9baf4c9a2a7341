/* settings_scan.c - see settings_scan.h. */
#include "ai/settings_scan.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* The parameters PostgreSQL reports with ParameterStatus that pgsluice keys on (varcache.c). */
static const char *const reported[] = {
	"client_encoding", "datestyle", "timezone", "intervalstyle",
	"standard_conforming_strings", "application_name",
};

static bool is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_newline(unsigned char c)
{
	return c == '\n' || c == '\r';
}

/* First byte of an identifier (scan.l ident_start; any byte of a multibyte character). */
static bool is_ident_start(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

/* Later bytes of an identifier (scan.l ident_cont). */
static bool is_ident_cont(unsigned char c)
{
	return is_ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

static bool word_is(const char *w, size_t n, const char *word)
{
	return strlen(word) == n && strncasecmp(w, word, n) == 0;
}

/* ---- the one SET of a reported parameter, lexed exactly ---- */

struct lexer {
	const char *p, *end;
	bool bad;              /* an unterminated block comment */
};

/* Blanks and comments as scan.l: "--" to the end of the line, block comments nested. */
static void skip_blanks(struct lexer *lx)
{
	for (;;) {
		while (lx->p < lx->end && is_space((unsigned char)*lx->p))
			lx->p++;
		if (lx->end - lx->p < 2)
			return;
		if (lx->p[0] == '-' && lx->p[1] == '-') {
			while (lx->p < lx->end && !is_newline((unsigned char)*lx->p))
				lx->p++;
			continue;
		}
		if (lx->p[0] != '/' || lx->p[1] != '*')
			return;
		int depth = 1;
		lx->p += 2;
		while (depth > 0 && lx->end - lx->p >= 2) {
			if (lx->p[0] == '/' && lx->p[1] == '*') {
				depth++;
				lx->p += 2;
			} else if (lx->p[0] == '*' && lx->p[1] == '/') {
				depth--;
				lx->p += 2;
			} else {
				lx->p++;
			}
		}
		if (depth > 0) {
			lx->bad = true;
			lx->p = lx->end;
			return;
		}
	}
}

/* An identifier, bare or "quoted" ("" a quote), into out; its length, 0 when none or too long. */
static size_t take_ident(struct lexer *lx, char *out, size_t size)
{
	size_t n = 0;
	skip_blanks(lx);
	if (lx->p < lx->end && *lx->p == '"') {
		for (lx->p++;; lx->p++) {
			if (lx->p >= lx->end)
				return 0;
			if (*lx->p == '"') {
				if (lx->p + 1 >= lx->end || lx->p[1] != '"')
					break;
				lx->p++;
			}
			if (n + 1 >= size)
				return 0;
			out[n++] = *lx->p;
		}
		lx->p++;
	} else {
		if (lx->p >= lx->end || !is_ident_start((unsigned char)*lx->p))
			return 0;
		while (lx->p < lx->end && is_ident_cont((unsigned char)*lx->p)) {
			if (n + 1 >= size)
				return 0;
			out[n++] = *lx->p++;
		}
	}
	out[n] = '\0';
	return n;
}

/*
 * One value: a plain 'string' ('' a quote; no backslash, whose meaning
 * depends on standard_conforming_strings) or a bare word or number (no '$':
 * a dollar quote may hide anything).
 */
static bool take_value(struct lexer *lx)
{
	skip_blanks(lx);
	if (lx->p < lx->end && *lx->p == '\'') {
		for (lx->p++;; lx->p++) {
			if (lx->p >= lx->end || *lx->p == '\\')
				return false;
			if (*lx->p == '\'') {
				if (lx->p + 1 >= lx->end || lx->p[1] != '\'')
					break;
				lx->p++;
			}
		}
		lx->p++;
		return true;
	}
	const char *start = lx->p;
	while (lx->p < lx->end && ((is_ident_cont((unsigned char)*lx->p) && *lx->p != '$') || *lx->p == '.' || *lx->p == '+' ||
	                           (*lx->p == '-' && !(lx->p + 1 < lx->end && lx->p[1] == '-'))))
		lx->p++;
	return lx->p > start;
}

static bool is_reported_set(const char *text, size_t len)
{
	struct lexer lx = { text, text + len, false };
	char word[64];
	size_t n = take_ident(&lx, word, sizeof(word));
	if (!word_is(word, n, "set"))
		return false;
	n = take_ident(&lx, word, sizeof(word));
	if (word_is(word, n, "session"))
		n = take_ident(&lx, word, sizeof(word));
	bool known = false;
	for (size_t i = 0; i < sizeof(reported) / sizeof(reported[0]); i++)
		known = known || word_is(word, n, reported[i]);
	if (!known)
		return false;
	skip_blanks(&lx);
	if (lx.p < lx.end && *lx.p == '=') {
		lx.p++;
	} else {
		n = take_ident(&lx, word, sizeof(word));
		if (!word_is(word, n, "to"))
			return false;
	}
	for (;;) {
		if (!take_value(&lx))
			return false;
		skip_blanks(&lx);
		if (lx.p >= lx.end || *lx.p != ',')
			break;
		lx.p++;
	}
	if (lx.p < lx.end && *lx.p == ';') {
		lx.p++;
		skip_blanks(&lx);
	}
	return !lx.bad && lx.p == lx.end;
}

/* ---- words that may change settings ---- */

/*
 * Can the word at text[at] not begin a statement? Only when an identifier,
 * a quoted identifier or ')' comes before it, and not on an earlier line
 * that holds "--" (that line may end in a comment, the word then begin one).
 */
static bool continues_statement(const char *text, size_t at)
{
	size_t q = at;
	bool newline = false;
	while (q > 0 && is_space((unsigned char)text[q - 1])) {
		newline = newline || is_newline((unsigned char)text[q - 1]);
		q--;
	}
	if (q == 0)
		return false;
	unsigned char c = (unsigned char)text[q - 1];
	if (!(is_ident_cont(c) && c != '$') && c != '"' && c != ')')
		return false;
	if (!newline)
		return true;
	size_t line = q - 1;
	while (line > 0 && !is_newline((unsigned char)text[line - 1]))
		line--;
	for (size_t i = line; i + 1 < q; i++)
		if (text[i] == '-' && text[i + 1] == '-')
			return false;
	return true;
}

enum settings_effect settings_effect(const char *text, size_t len)
{
	static const char *const starters[] = { "set", "reset", "discard", "do", "call" };
	bool creates = false, temp = false;
	if (!text)
		return SETTINGS_NONE;
	if (is_reported_set(text, len))
		return SETTINGS_REPORTED;
	for (size_t i = 0; i < len;) {
		if (!is_ident_start((unsigned char)text[i])) {
			i++;
			continue;
		}
		size_t start = i;
		while (i < len && is_ident_cont((unsigned char)text[i]))
			i++;
		const char *w = text + start;
		size_t n = i - start;
		if (word_is(w, n, "set_config"))
			return SETTINGS_UNKNOWN;
		for (size_t k = 0; k < sizeof(starters) / sizeof(starters[0]); k++)
			if (word_is(w, n, starters[k]) && !continues_statement(text, start))
				return SETTINGS_UNKNOWN;
		creates = creates || word_is(w, n, "create") || word_is(w, n, "into");
		temp = temp || word_is(w, n, "temp") || word_is(w, n, "temporary") || word_is(w, n, "pg_temp");
	}
	return creates && temp ? SETTINGS_UNKNOWN : SETTINGS_NONE;
}
