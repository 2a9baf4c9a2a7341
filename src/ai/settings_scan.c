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
#define WORD(w, k) { w, sizeof(w) - 1, k }
	static const struct { const char *word; size_t len; enum word_kind kind; } words[] = {
		WORD("do", WORD_STARTER), WORD("set", WORD_STARTER), WORD("call", WORD_STARTER),
		WORD("into", WORD_CREATE), WORD("temp", WORD_TEMP), WORD("reset", WORD_STARTER),
		WORD("create", WORD_CREATE), WORD("discard", WORD_STARTER), WORD("pg_temp", WORD_TEMP),
		WORD("temporary", WORD_TEMP), WORD("set_config", WORD_SET_CONFIG),
	};
#undef WORD
	if (n < 2 || n > 10)
		return WORD_OTHER;
	switch (w[0] | 0x20) {    /* ASCII lower case; other bytes match no entry */
	case 'c': case 'd': case 'i': case 'p': case 'r': case 's': case 't':
		break;
	default:
		return WORD_OTHER;
	}
	char lower[10];
	for (size_t i = 0; i < n; i++)
		lower[i] = (char)(w[i] >= 'A' && w[i] <= 'Z' ? w[i] | 0x20 : w[i]);
	for (size_t k = 0; k < sizeof(words) / sizeof(words[0]); k++)
		if (words[k].len == n && memcmp(lower, words[k].word, n) == 0)
			return words[k].kind;
	return WORD_OTHER;
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
	if (lead < len && ((text[lead] | 0x20) == 's' || text[lead] == '/' || text[lead] == '-') &&
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
