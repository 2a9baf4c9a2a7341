/* SPDX-License-Identifier: PostgreSQL */
/* sqllex.c - see sqllex.h. */
#include "sqllex.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CH_LETTER (SQLLEX_IDENT_START | SQLLEX_IDENT_CONT)
#define CH_RANGE_8(x) [x] = CH_LETTER, [x + 1] = CH_LETTER, [x + 2] = CH_LETTER, [x + 3] = CH_LETTER, \
	[x + 4] = CH_LETTER, [x + 5] = CH_LETTER, [x + 6] = CH_LETTER, [x + 7] = CH_LETTER
#define CH_RANGE_32(x) CH_RANGE_8(x), CH_RANGE_8(x + 8), CH_RANGE_8(x + 16), CH_RANGE_8(x + 24)
const unsigned char sqllex_char_class[256] = {
	['0'] = SQLLEX_IDENT_CONT, ['1'] = SQLLEX_IDENT_CONT, ['2'] = SQLLEX_IDENT_CONT, ['3'] = SQLLEX_IDENT_CONT,
	['4'] = SQLLEX_IDENT_CONT, ['5'] = SQLLEX_IDENT_CONT, ['6'] = SQLLEX_IDENT_CONT, ['7'] = SQLLEX_IDENT_CONT,
	['8'] = SQLLEX_IDENT_CONT, ['9'] = SQLLEX_IDENT_CONT, ['$'] = SQLLEX_IDENT_CONT,
	/* A-Z and a-z, in blocks of 8 from 'A' (0x41) and 'a' (0x61); '_' after Z */
	CH_RANGE_8(0x41), CH_RANGE_8(0x49), CH_RANGE_8(0x51), [0x59] = CH_LETTER, [0x5a] = CH_LETTER,
	CH_RANGE_8(0x61), CH_RANGE_8(0x69), CH_RANGE_8(0x71), [0x79] = CH_LETTER, [0x7a] = CH_LETTER,
	['_'] = CH_LETTER,
	/* any byte of a multibyte character */
	CH_RANGE_32(0x80), CH_RANGE_32(0xa0), CH_RANGE_32(0xc0), CH_RANGE_32(0xe0),
};

bool sqllex_is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool sqllex_is_newline(unsigned char c)
{
	return c == '\n' || c == '\r';
}

void sqllex_init(struct sqllex *lx, const char *text, size_t len)
{
	lx->p = text;
	lx->end = text + len;
	lx->bad = false;
}

void sqllex_skip_blanks(struct sqllex *lx)
{
	for (;;) {
		while (lx->p < lx->end && sqllex_is_space((unsigned char)*lx->p))
			lx->p++;
		if (lx->end - lx->p < 2)
			return;
		if (lx->p[0] == '-' && lx->p[1] == '-') {
			while (lx->p < lx->end && !sqllex_is_newline((unsigned char)*lx->p))
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

size_t sqllex_ident(struct sqllex *lx, char *out, size_t size, bool *quoted)
{
	size_t n = 0;
	sqllex_skip_blanks(lx);
	*quoted = false;
	out[0] = '\0';
	if (lx->p < lx->end && *lx->p == '"') {
		const char *p = lx->p + 1;
		for (;; p++) {
			if (p >= lx->end) {
				out[0] = '\0';    /* the bytes copied so far are no identifier */
				return 0;       /* unterminated */
			}
			if (*p == '"') {
				if (p + 1 >= lx->end || p[1] != '"')
					break;
				p++;
			}
			if (n + 1 < size)
				out[n] = *p;
			n++;
		}
		out[n < size ? n : size - 1] = '\0';
		if (n == 0)
			return 0;
		lx->p = p + 1;
		*quoted = true;
		return n;
	}
	if (lx->p >= lx->end || !sqllex_ident_start((unsigned char)*lx->p))
		return 0;
	while (lx->p < lx->end && sqllex_ident_cont((unsigned char)*lx->p)) {
		char c = *lx->p++;
		if (n + 1 < size)
			out[n] = (char)(c >= 'A' && c <= 'Z' ? c | 0x20 : c);
		n++;
	}
	out[n < size ? n : size - 1] = '\0';
	return n;
}

bool sqllex_peek(struct sqllex *lx, char c)
{
	sqllex_skip_blanks(lx);
	return lx->p < lx->end && *lx->p == c;
}

bool sqllex_keyword(struct sqllex *lx, const char *kw)
{
	sqllex_skip_blanks(lx);
	size_t n = strlen(kw);
	if ((size_t)(lx->end - lx->p) < n || strncasecmp(lx->p, kw, n) != 0)
		return false;
	if (lx->p + n < lx->end && sqllex_ident_cont((unsigned char)lx->p[n]))
		return false;
	lx->p += n;
	return true;
}

bool sqllex_string(struct sqllex *lx, char **out)
{
	sqllex_skip_blanks(lx);
	if (lx->p >= lx->end || *lx->p != '\'')
		return false;
	const char *start = lx->p + 1, *p = start;
	size_t quotes = 0;
	for (;; p++) {
		if (p >= lx->end || *p == '\\')
			return false;
		if (*p == '\'') {
			if (p + 1 < lx->end && p[1] == '\'') {
				p++;
				quotes++;
				continue;
			}
			break;
		}
	}
	size_t n = (size_t)(p - start);
	lx->p = p + 1;
	if (!out)
		return true;
	char *s = malloc(n - quotes + 1), *d = s;
	if (!s)
		return false;
	for (const char *q = start; q < start + n; q++) {
		*d++ = *q;
		if (*q == '\'')
			q++;
	}
	*d = '\0';
	*out = s;
	return true;
}

bool sqllex_at_end(struct sqllex *lx)
{
	if (sqllex_peek(lx, ';'))
		lx->p++;
	sqllex_skip_blanks(lx);
	return !lx->bad && lx->p == lx->end;
}

bool sqllex_word_is(const char *w, size_t n, const char *word)
{
	return strlen(word) == n && strncasecmp(w, word, n) == 0;
}
