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

/*
 * One word of the text, w = text[start..start+n), n in 2..10 and its first
 * letter one of keyword_first's: true when it makes the answer
 * SETTINGS_UNKNOWN at once; notes CREATE/INTO and TEMP words.
 */
static inline bool word_decides(const char *text, size_t start, size_t n, bool *creates, bool *temp)
{
	switch (classify(text + start, n)) {
	case WORD_SET_CONFIG:
		return true;
	case WORD_STARTER:
		return !continues_statement(text, start);
	case WORD_CREATE:
		*creates = true;
		return false;
	case WORD_TEMP:
		*temp = true;
		return false;
	case WORD_OTHER:
		return false;
	}
	return false;
}

/*
 * The words of text[0..len), byte by byte: a word begins at an identifier's
 * first character (letter, '_', a multibyte character's byte) and runs over
 * the identifier characters after it (also digits and '$'). True as soon as
 * a word makes the answer SETTINGS_UNKNOWN.
 */
static bool words_bytewise(const char *text, size_t len, bool *creates, bool *temp)
{
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
		if (word_decides(text, (size_t)(word - (const unsigned char *)text), n, creates, temp))
			return true;
	}
	return false;
}

#if defined(__SSE2__)
#include <immintrin.h>

/*
 * Does a word begin at text[i], whose character is a letter and whose
 * previous character is no identifier start? Yes unless that previous
 * character is a digit or '$' of a word begun earlier ("x1set": the loop of
 * words_bytewise is inside "x1set" at 's'; "1set": it begins "set" there).
 */
static inline bool begins_word(const unsigned char *t, size_t i)
{
	while (i > 0 && (sqllex_char_class[t[i - 1]] & SQLLEX_IDENT_CONT)) {
		if (sqllex_char_class[t[i - 1]] & SQLLEX_IDENT_START)
			return false;
		i--;
	}
	return true;
}

/*
 * words_bytewise's answer, 16 bytes at a time (SSE2, which every x86-64 has):
 * only the letters that follow no identifier start are looked at one by one
 * (a letter that begins no keyword in two instructions). Every simple Query passes
 * here, and most of its bytes begin no keyword: the byte loop cost about
 * 10 instructions a byte.
 */
static bool words_sse2(const char *text, size_t len, bool *creates, bool *temp)
{
	const unsigned char *t = (const unsigned char *)text;
	unsigned carry = 0;    /* 1: the byte before this block is an identifier start */
	for (size_t base = 0; base < len; base += 16) {
		__m128i v;
		unsigned shift = 0;   /* the last block: bytes already seen, loaded again */
		if (len - base >= 16) {
			v = _mm_loadu_si128((const __m128i *)(t + base));
		} else if (len >= 16) {
			/* the 16 bytes that end the text; the mask bits of those before base are shifted out */
			shift = (unsigned)(16 - (len - base));
			v = _mm_loadu_si128((const __m128i *)(t + len - 16));
		} else {
			unsigned char tail[16] = { 0 };   /* NUL begins nothing */
			memcpy(tail, t + base, len - base);
			v = _mm_loadu_si128((const __m128i *)tail);
		}
		__m128i low = _mm_or_si128(v, _mm_set1_epi8(0x20));   /* ASCII letters in lower case */
		__m128i letter = _mm_and_si128(_mm_cmpgt_epi8(low, _mm_set1_epi8('a' - 1)),
		                               _mm_cmplt_epi8(low, _mm_set1_epi8('z' + 1)));
		/* identifier starts: letters, '_' and bytes >= 0x80 (their sign bit) */
		__m128i start = _mm_or_si128(letter, _mm_cmpeq_epi8(v, _mm_set1_epi8('_')));
		unsigned starts = ((unsigned)_mm_movemask_epi8(start) | (unsigned)_mm_movemask_epi8(v)) >> shift;
		/* identifier characters: starts, digits and '$' */
		__m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('0' - 1)), _mm_cmplt_epi8(v, _mm_set1_epi8('9' + 1)));
		unsigned conts = starts | ((unsigned)_mm_movemask_epi8(_mm_or_si128(digit, _mm_cmpeq_epi8(v, _mm_set1_epi8('$')))) >> shift);
		/* words begin at letters after no identifier start; keyword_first is asked one by one */
		unsigned cand = ((unsigned)_mm_movemask_epi8(letter) >> shift) & ~((starts << 1) | carry);
		carry = (starts >> 15) & 1u;
		while (cand) {
			unsigned bit = (unsigned)__builtin_ctz(cand);
			size_t i = base + bit;
			cand &= cand - 1;
			if (!keyword_first[t[i]])
				continue;
			if (i > 0 && (sqllex_char_class[t[i - 1]] & SQLLEX_IDENT_CONT) && !begins_word(t, i))
				continue;
			/* the word's length from the mask while it ends in this block */
			size_t n = (size_t)__builtin_ctz(~(conts >> bit));
			if (bit + n >= 16)
				while (n <= 10 && i + n < len && (sqllex_char_class[t[i + n]] & SQLLEX_IDENT_CONT))
					n++;
			if (n < 2 || n > 10)
				continue;
			if (word_decides(text, i, n, creates, temp))
				return true;
		}
	}
	return false;
}

/*
 * words_sse2, 32 bytes at a time (AVX2, on the CPUs that have it: the
 * block's work is the same count of instructions for twice the bytes).
 */
__attribute__((target("avx2"))) static bool words_avx2(const char *text, size_t len, bool *creates, bool *temp)
{
	const unsigned char *t = (const unsigned char *)text;
	/* the constants once, out of the loop */
	const __m256i to_lower = _mm256_set1_epi8(0x20), under = _mm256_set1_epi8('_'), dollar = _mm256_set1_epi8('$');
	const __m256i a_minus = _mm256_set1_epi8('a'), twenty_five = _mm256_set1_epi8(25);
	const __m256i zero = _mm256_set1_epi8('0'), nine = _mm256_set1_epi8(9), nibble = _mm256_set1_epi8(0x0f);
	/* the letters that begin some keyword (keyword_first: c d i p r s t), by a
	 * table of the low half of each lower-cased byte and one of its high half:
	 * bit 0 for 0x6_ (c d i), bit 1 for 0x7_ (p r s t) */
	const __m256i lo_tab = _mm256_setr_epi8(2, 0, 2, 3, 3, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
	                                        2, 0, 2, 3, 3, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0);
	const __m256i hi_tab = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0,
	                                        0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0);
	unsigned carry = 0;    /* 1: the byte before this block is an identifier start */
	for (size_t base = 0; base < len; base += 32) {
		__m256i v;
		unsigned shift = 0;   /* the last block: bytes already seen, loaded again */
		if (len - base >= 32) {
			v = _mm256_loadu_si256((const __m256i *)(t + base));
		} else if (len >= 32) {
			/* the 32 bytes that end the text; the mask bits of those before base are shifted out */
			shift = (unsigned)(32 - (len - base));
			v = _mm256_loadu_si256((const __m256i *)(t + len - 32));
		} else {
			unsigned char tail[32] = { 0 };   /* NUL begins nothing */
			memcpy(tail, t + base, len - base);
			v = _mm256_loadu_si256((const __m256i *)tail);
		}
		__m256i low = _mm256_or_si256(v, to_lower);   /* ASCII letters in lower case */
		/* x - 'a' <= 25 (unsigned): a letter */
		__m256i off = _mm256_sub_epi8(low, a_minus);
		__m256i letter = _mm256_cmpeq_epi8(_mm256_min_epu8(off, twenty_five), off);
		/* identifier starts: letters, '_' and bytes >= 0x80 (their sign bit) */
		unsigned starts = (unsigned)_mm256_movemask_epi8(_mm256_or_si256(_mm256_or_si256(letter, v),
		                                                                 _mm256_cmpeq_epi8(v, under))) >> shift;
		/* identifier characters: starts, digits and '$' */
		__m256i doff = _mm256_sub_epi8(v, zero);
		__m256i digit = _mm256_cmpeq_epi8(_mm256_min_epu8(doff, nine), doff);
		unsigned conts = starts |
		                 ((unsigned)_mm256_movemask_epi8(_mm256_or_si256(digit, _mm256_cmpeq_epi8(v, dollar))) >> shift);
		__m256i kf = _mm256_and_si256(_mm256_shuffle_epi8(lo_tab, _mm256_and_si256(low, nibble)),
		                              _mm256_shuffle_epi8(hi_tab, _mm256_and_si256(_mm256_srli_epi16(low, 4), nibble)));
		kf = _mm256_andnot_si256(_mm256_cmpeq_epi8(kf, _mm256_setzero_si256()), letter);
		/* words begin at such letters after no identifier start */
		unsigned cand = ((unsigned)_mm256_movemask_epi8(kf) >> shift) & ~((starts << 1) | carry);
		carry = starts >> 31;
		while (cand) {
			unsigned bit = (unsigned)__builtin_ctz(cand);
			size_t i = base + bit;
			cand &= cand - 1;
			if (i > 0 && (sqllex_char_class[t[i - 1]] & SQLLEX_IDENT_CONT) && !begins_word(t, i))
				continue;
			/* the word's length from the mask while it ends in this block */
			size_t n = (size_t)__builtin_ctzll(~((unsigned long long)conts >> bit));   /* 64 bits: never all ones */
			if (bit + n >= 32)
				while (n <= 10 && i + n < len && (sqllex_char_class[t[i + n]] & SQLLEX_IDENT_CONT))
					n++;
			if (n < 2 || n > 10)
				continue;
			if (word_decides(text, i, n, creates, temp))
				return true;
		}
	}
	return false;
}

/* Does this CPU have AVX2? Asked once. */
static bool have_avx2(void)
{
	static int have = -1;
	if (have < 0)
		have = __builtin_cpu_supports("avx2") ? 1 : 0;
	return have == 1;
}
#endif

/* The lead SET of a reported parameter, then every word (words_bytewise's rules) by path. */
static enum settings_effect effect_of_text(const char *text, size_t len, enum settings_scan_path path)
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
	bool unknown;
#if defined(__SSE2__)
	if (path == SETTINGS_SCAN_AVX2 && have_avx2())
		unknown = words_avx2(text, len, &creates, &temp);
	else if (path != SETTINGS_SCAN_BYTES)
		unknown = words_sse2(text, len, &creates, &temp);
	else
		unknown = words_bytewise(text, len, &creates, &temp);
#else
	(void)path;
	unknown = words_bytewise(text, len, &creates, &temp);
#endif
	if (unknown)
		return SETTINGS_UNKNOWN;
	return creates && temp ? SETTINGS_UNKNOWN : SETTINGS_NONE;
}

enum settings_effect settings_effect(const char *text, size_t len)
{
	return effect_of_text(text, len, SETTINGS_SCAN_AVX2);
}

enum settings_effect settings_effect_by(const char *text, size_t len, enum settings_scan_path path)
{
	return effect_of_text(text, len, path);
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
