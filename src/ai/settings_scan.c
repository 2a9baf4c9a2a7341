/* SPDX-License-Identifier: PostgreSQL */
/* settings_scan.c - see settings_scan.h. */
#include "ai/settings_scan.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "sqllex.h"

/* The parameters PostgreSQL reports with ParameterStatus that pgsluice keys on (varcache.c). */
static const char *const reported[] = {
	"client_encoding", "datestyle", "timezone", "intervalstyle",
	"standard_conforming_strings", "application_name",
};


/* ---- the one SET of a reported parameter, lexed exactly ---- */

/* An identifier (sqllex_ident) into out; its length, 0 when none or too long. */
static size_t take_ident(struct sqllex *lx, char *out, size_t size)
{
	bool quoted;
	size_t n = sqllex_ident(lx, out, size, &quoted);
	return n < size ? n : 0;
}

/*
 * One value: a plain 'string' ('' a quote; no backslash, whose meaning
 * depends on standard_conforming_strings) or a bare word or number (no '$':
 * a dollar quote may hide anything).
 */
static bool take_value(struct sqllex *lx)
{
	sqllex_skip_blanks(lx);
	if (lx->p < lx->end && *lx->p == '\'')
		return sqllex_string(lx, NULL);
	const char *start = lx->p;
	while (lx->p < lx->end && ((sqllex_ident_cont((unsigned char)*lx->p) && *lx->p != '$') || *lx->p == '.' || *lx->p == '+' ||
	                           (*lx->p == '-' && !(lx->p + 1 < lx->end && lx->p[1] == '-'))))
		lx->p++;
	return lx->p > start;
}

static bool is_reported_set(const char *text, size_t len)
{
	struct sqllex lx;
	sqllex_init(&lx, text, len);
	char word[64];
	size_t n = take_ident(&lx, word, sizeof(word));
	if (!sqllex_word_is(word, n, "set"))
		return false;
	n = take_ident(&lx, word, sizeof(word));
	if (sqllex_word_is(word, n, "session"))
		n = take_ident(&lx, word, sizeof(word));
	bool known = false;
	for (size_t i = 0; i < sizeof(reported) / sizeof(reported[0]); i++)
		known = known || sqllex_word_is(word, n, reported[i]);
	if (!known)
		return false;
	sqllex_skip_blanks(&lx);
	if (lx.p < lx.end && *lx.p == '=') {
		lx.p++;
	} else {
		n = take_ident(&lx, word, sizeof(word));
		if (!sqllex_word_is(word, n, "to"))
			return false;
	}
	for (;;) {
		if (!take_value(&lx))
			return false;
		sqllex_skip_blanks(&lx);
		if (lx.p >= lx.end || *lx.p != ',')
			break;
		lx.p++;
	}
	if (lx.p < lx.end && *lx.p == ';') {
		lx.p++;
		sqllex_skip_blanks(&lx);
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
	while (q > 0 && sqllex_is_space((unsigned char)text[q - 1])) {
		newline = newline || sqllex_is_newline((unsigned char)text[q - 1]);
		q--;
	}
	if (q == 0)
		return false;
	unsigned char c = (unsigned char)text[q - 1];
	if (!(sqllex_ident_cont(c) && c != '$') && c != '"' && c != ')')
		return false;
	if (!newline)
		return true;
	size_t line = q - 1;
	while (line > 0 && !sqllex_is_newline((unsigned char)text[line - 1]))
		line--;
	for (size_t i = line; i + 1 < q; i++)
		if (text[i] == '-' && text[i + 1] == '-')
			return false;
	return true;
}

/* Is w[0..n) the lower-case ASCII word kw[0..n), in any case? Stops at the first difference. */
static bool same_word(const char *w, const char *kw, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)w[i];
		if ((ch >= 'A' && ch <= 'Z' ? ch | 0x20 : ch) != (unsigned char)kw[i])
			return false;
	}
	return true;
}

/* The words settings_effect looks for; WORD_OTHER for every other word. */
/* First letters of classify's words (c d i p r s t, either case). */
static const bool keyword_first[256] = {
	['c'] = true, ['d'] = true, ['i'] = true, ['p'] = true, ['r'] = true, ['s'] = true, ['t'] = true,
	['C'] = true, ['D'] = true, ['I'] = true, ['P'] = true, ['R'] = true, ['S'] = true, ['T'] = true,
};

enum word_kind { WORD_OTHER, WORD_STARTER, WORD_SET_CONFIG, WORD_CREATE, WORD_TEMP };

/*
 * Classify w[0..n) case-insensitively. Runs for every word of every simple
 * Query and Parse, so it rejects most words on their length and first
 * letter before comparing anything.
 */
static enum word_kind classify(const char *w, size_t n)
{
	/* by length first: most words have no keyword of their length and first letter */
	switch (n) {
	case 2:
		return same_word(w, "do", 2) ? WORD_STARTER : WORD_OTHER;
	case 3:
		return same_word(w, "set", 3) ? WORD_STARTER : WORD_OTHER;
	case 4:
		if (same_word(w, "call", 4))
			return WORD_STARTER;
		if (same_word(w, "into", 4))
			return WORD_CREATE;
		return same_word(w, "temp", 4) ? WORD_TEMP : WORD_OTHER;
	case 5:
		return same_word(w, "reset", 5) ? WORD_STARTER : WORD_OTHER;
	case 6:
		return same_word(w, "create", 6) ? WORD_CREATE : WORD_OTHER;
	case 7:
		if (same_word(w, "discard", 7))
			return WORD_STARTER;
		return same_word(w, "pg_temp", 7) ? WORD_TEMP : WORD_OTHER;
	case 9:
		return same_word(w, "temporary", 9) ? WORD_TEMP : WORD_OTHER;
	case 10:
		return same_word(w, "set_config", 10) ? WORD_SET_CONFIG : WORD_OTHER;
	default:
		return WORD_OTHER;
	}
}

/*
 * Does t[0..n) begin with the word SET (any case)? The cheap test that keeps
 * every other statement (SELECT first of all) out of is_reported_set's lexer.
 */
static bool starts_with_set(const char *t, size_t n)
{
	return n >= 3 && (t[0] | 0x20) == 's' && (t[1] | 0x20) == 'e' && (t[2] | 0x20) == 't' &&
	       (n == 3 || !sqllex_ident_cont((unsigned char)t[3]));
}

enum settings_effect settings_effect(const char *text, size_t len)
{
	bool creates = false, temp = false;
	if (!text)
		return SETTINGS_NONE;
	/* A SET of a reported parameter begins with "set" (after blanks or comments). */
	size_t lead = 0;
	while (lead < len && sqllex_is_space((unsigned char)text[lead]))
		lead++;
	if (lead < len && (text[lead] == '/' || text[lead] == '-' || starts_with_set(text + lead, len - lead)) &&
	    is_reported_set(text, len))
		return SETTINGS_REPORTED;
	/* Every statement passes here: a word is looked at only when its first
	 * letter begins some keyword (classify's list) and its length fits. */
	const unsigned char *p = (const unsigned char *)text, *end = p + len;
	while (p < end) {
		if (!(sqllex_char_class[*p] & SQLLEX_IDENT_START)) {
			p++;
			continue;
		}
		const unsigned char *word = p++;
		while (p < end && (sqllex_char_class[*p] & SQLLEX_IDENT_CONT))
			p++;
		size_t n = (size_t)(p - word);
		if (n < 2 || n > 10 || !keyword_first[*word])
			continue;
		size_t start = (size_t)(word - (const unsigned char *)text);
		switch (classify(text + start, n)) {
		case WORD_SET_CONFIG:
			return SETTINGS_UNKNOWN;
		case WORD_STARTER:
			if (!continues_statement(text, start))
				return SETTINGS_UNKNOWN;
			break;
		case WORD_CREATE:
			creates = true;
			break;
		case WORD_TEMP:
			temp = true;
			break;
		case WORD_OTHER:
			break;
		}
	}
	return creates && temp ? SETTINGS_UNKNOWN : SETTINGS_NONE;
}

enum settings_effect settings_effect_memo(struct settings_memo *memo, const char *text, size_t len)
{
	if (!text || len == 0 || len > SETTINGS_MEMO_TEXT)
		return settings_effect(text, len);
	struct settings_memo_slot *slot = &memo->slot[len % SETTINGS_MEMO_SLOTS];
	if (slot->len == len && memcmp(slot->text, text, len) == 0)
		return (enum settings_effect)slot->effect;
	enum settings_effect effect = settings_effect(text, len);
	slot->len = (unsigned short)len;
	slot->effect = (unsigned char)effect;
	memcpy(slot->text, text, len);
	return effect;
}
