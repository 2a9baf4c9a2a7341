/* SPDX-License-Identifier: PostgreSQL */
/*
 * sqllex.h - the lexical rules of PostgreSQL's scan.l that pgsluice needs to
 * recognise a statement: blanks and comments, identifiers (folded, or quoted),
 * keywords, plain 'strings'. Pure: no allocation but sqllex_string's copy, no I/O.
 */
#ifndef SLUICE_SQLLEX_H
#define SLUICE_SQLLEX_H

#include <stdbool.h>
#include <stddef.h>

/* A position in a statement text; need not be NUL-terminated. */
struct sqllex {
	const char *p, *end;
	bool bad;              /* an unterminated block comment: p is at end */
};

/* Byte classes (scan.l ident_start, ident_cont): one table lookup per byte. */
enum { SQLLEX_IDENT_START = 1, SQLLEX_IDENT_CONT = 2 };
extern const unsigned char sqllex_char_class[256];

/* First byte of an identifier: a letter, '_' or any byte >= 0x80 (scan.l ident_start). */
static inline bool sqllex_ident_start(unsigned char c)
{
	return sqllex_char_class[c] & SQLLEX_IDENT_START;
}

/* Later bytes of an identifier: also digits and '$' (scan.l ident_cont). */
static inline bool sqllex_ident_cont(unsigned char c)
{
	return sqllex_char_class[c] & SQLLEX_IDENT_CONT;
}

/* scan.l space: ' ', \t, \n, \r, \f, \v. */
bool sqllex_is_space(unsigned char c);

/* scan.l newline: \n or \r (where a "--" comment ends). */
bool sqllex_is_newline(unsigned char c);

/* lx at text[0..len). */
void sqllex_init(struct sqllex *lx, const char *text, size_t len);

/*
 * Skip blanks and comments as scan.l: "--" to the end of the line, block
 * comments nested. An unterminated block comment sets lx->bad and moves to
 * the end (PostgreSQL's error "unterminated block comment").
 */
void sqllex_skip_blanks(struct sqllex *lx);

/*
 * After blanks, one identifier: unquoted, folded to lower case (ASCII A-Z,
 * as downcase_identifier for single-byte letters); "quoted", as written with
 * "" a quote (*quoted true). Writes at most size-1 bytes and a NUL to out
 * (size > 0). Returns the identifier's whole length (more than size-1 when
 * cut), 0 when none is there (lx not moved past blanks), an unterminated
 * quoted one, or "" (zero-length: PostgreSQL's error). Source:
 * sql-syntax-lexical.html 4.1.1.
 */
size_t sqllex_ident(struct sqllex *lx, char *out, size_t size, bool *quoted);

/* After blanks, is the next byte c? (Not consumed.) */
bool sqllex_peek(struct sqllex *lx, char c);

/*
 * After blanks, is the keyword kw (lower case) next, unquoted, in any case
 * and not followed by an identifier byte? Consumed when it is.
 */
bool sqllex_keyword(struct sqllex *lx, const char *kw);

/*
 * After blanks, one plain 'string' ('' a quote). A backslash (its meaning
 * depends on standard_conforming_strings) or a missing end quote: false.
 * With out, its body ('' undoubled) malloc'd into *out (false on OOM).
 * Source: sql-syntax-lexical.html 4.1.2.1.
 */
bool sqllex_string(struct sqllex *lx, char **out);

/* The statement is over: an optional ';', then only blanks and comments (and no unterminated one). */
bool sqllex_at_end(struct sqllex *lx);

/* Is w[0..n) the word word (lower case), ASCII case-insensitively? */
bool sqllex_word_is(const char *w, size_t n, const char *word);

#endif
