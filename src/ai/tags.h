/* SPDX-License-Identifier: PostgreSQL */
/*
 * tags.h - the sqlcommenter parser (docs/ai-middleware.md): reads pgsluice's ai_ keys and
 * the W3C traceparent from the comments of a Query or Parse text. Pure
 * function, no allocation, no sockets; policy (limits, trust) lives elsewhere.
 */
#ifndef SLUICE_AI_TAGS_H
#define SLUICE_AI_TAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* An errbuf this large never truncates a tags_parse message. */
#define TAGS_ERRBUF_SIZE 256

/* ai_ttl bounds, seconds (one year at most). */
#define TAGS_TTL_MIN_S 1
#define TAGS_TTL_MAX_S 31536000

/*
 * Largest ai_tokens_in / ai_tokens_out (10^9 tokens per call) and
 * ai_latency_ms (one day). Bounded so that every accepted record fits
 * sluice.llm_usage: at the highest price sluice.model_prices can hold,
 * cost_cents stays below 10^12 (docs/schema.md).
 */
#define TAGS_TOKENS_MAX INT64_C(1000000000)
#define TAGS_LATENCY_MAX_MS INT64_C(86400000)

enum ai_cache_mode { AI_CACHE_NONE, AI_CACHE_LOOKUP, AI_CACHE_REFRESH };

/*
 * What a statement's tags say. Text fields are NUL-terminated, decoded
 * (URL-decoding and \' undone), valid UTF-8 without NUL, at most
 * sizeof(field) - 1 bytes; "" when the key is absent.
 */
struct ai_tags {
	/* the fixed-size fields first, then the texts (copies may stop at a text's NUL) */
	bool present;                 /* a key pgsluice reads, or a valid traceparent, was found */
	bool has_ai_key;              /* a known ai_ key was found: the statement is "attributed" */
	int64_t tokens_in, tokens_out;    /* ai_tokens_in, ai_tokens_out; -1 if absent */
	int64_t latency_ms;           /* ai_latency_ms, -1 if absent */
	enum ai_cache_mode cache;     /* ai_cache; AI_CACHE_NONE if absent */
	int64_t ttl_s;                /* ai_ttl, seconds; -1 if absent */
	int64_t tokens_estimate;      /* ai_tokens_estimate (0..TAGS_TOKENS_MAX); -1 if absent */
	double cost_estimate_cents;   /* ai_cost_estimate, cents (0..10^12, 6 decimals); -1 if absent */
	size_t comment_start, comment_end;  /* the last comment that gave a key is
	                                       text[comment_start..comment_end), from its "/" to the "/"
	                                       of its closing; 0, 0 unless TAGS_OK */
	const char *error_detail;     /* on TAGS_INVALID: a static DETAIL sentence for errbuf's
	                                 message, or NULL; NULL otherwise */
	/* strlen of user, model, conversation and traceparent, as the parser
	   knows them (unspecified after TAGS_INVALID) */
	uint16_t user_len, model_len, conversation_len, traceparent_len;
	char user[128];               /* ai_user */
	char model[128];              /* ai_model */
	char conversation[128];       /* ai_conversation */
	char traceparent[64];         /* "00-<32 hex>-<16 hex>-<2 hex>", lower-case hex; "" if absent or malformed */
};

enum tags_result { TAGS_NONE, TAGS_OK, TAGS_INVALID };

/*
 * Parse the tags of a statement text[0..len). Never reads past len; text
 * need not be NUL-terminated and may be NULL when len is 0. out is always
 * reset first (absent values as documented above), so it may be reused.
 *
 * Which comments: comments are found as C's are, without nesting, and every
 * complete "/ *...* /" pair is read, first to last; a key given in several
 * comments takes its last value (knex and drizzle put their comment first,
 * OpenTelemetry appends a traceparent comment last). A "/ *" inside an open
 * comment starts the comment anew, so of `/ * a / * b * / c * /` the pair
 * `/ * b * /` is the comment, and a stray "/ *" in a string literal before
 * the tag comment does not hide it. Nothing else about SQL is understood: a comment inside a
 * string literal or after "--" counts like any other, so an application
 * that inlines untrusted text into a statement after its tag comment (or
 * without one) lets that text choose the tags. An unterminated "/ *" and
 * what follows it are no comment; an earlier complete comment still counts.
 * (Spaces inside "/ *" and "* /" above are only to keep this C comment open.)
 * Cost: a text without "/ *" is one memchr scan for '/' (and a look at the
 * byte after each '/' found); text between comments is walked by memchr too,
 * and so is a comment (from '*' to '*'). A key or value without %, +, \,
 * NUL or bytes >= 0x80 is read in place, without decoding or a UTF-8 check.
 *
 * Comment body, parsed leniently as sqlcommenter emitters differ:
 * `key=value` items separated by commas, whitespace allowed around keys,
 * '=' and commas, empty items skipped. Keys are URL-decoded and compared
 * case-sensitively. A value is either single-quoted (inside, \' is a quote
 * and \\ a backslash) or plain (up to the next comma, outer whitespace
 * trimmed); then URL-decoded, '+' meaning a space. A repeated key: the
 * last one wins. A body that does not have this shape (`/ * plain english * /`,
 * an unterminated quote, text after a closing quote, a key without '=') is
 * no tag comment, TAGS_NONE, unless it names an ai_ key: a word starting
 * "ai_" anywhere in it (`/ * ai_user='o'brien' * /`). Such a comment was
 * meant for pgsluice, and ignoring it would run the statement unattributed,
 * outside its limits: TAGS_INVALID, with a message starting "invalid
 * sqlcommenter comment: " that says what is wrong, e.g.
 * `invalid sqlcommenter comment: unterminated quoted value of key "ai_user"`.
 *
 * Keys read: ai_user, ai_model, ai_conversation (text, 1..127 bytes),
 * ai_tokens_in, ai_tokens_out, ai_tokens_estimate (0..TAGS_TOKENS_MAX),
 * ai_cost_estimate (cents, digits with at most 6 decimals, 0..10^12), ai_latency_ms
 * (0..TAGS_LATENCY_MAX_MS) (plain decimal digits, no sign or spaces), ai_cache ("lookup" or "refresh", any
 * case), ai_ttl (TAGS_TTL_MIN_S..TAGS_TTL_MAX_S) and traceparent. Every
 * other key is ignored, including ai_ keys pgsluice does not know (so that
 * an application written for a newer pgsluice still runs; they do not make
 * the statement attributed either). A malformed traceparent (W3C version 00
 * only, lower-case hex, ids not all zero) is ignored: tracing is best
 * effort and never fails a statement.
 *
 * Returns TAGS_OK when out->present, TAGS_NONE when there is no comment or
 * it carries no key read here, TAGS_INVALID when the body is malformed and
 * names an ai_ key (above) or when a known ai_ key
 * has a bad value: malformed %-escape, not valid UTF-8 or containing NUL,
 * empty, too long, not a number, out of range, unknown cache mode. Then
 * errbuf (errlen bytes, may be NULL/0; written only on TAGS_INVALID) gets a
 * PostgreSQL-style primary message naming the key for the first bad value,
 * e.g. `invalid value for tag "ai_tokens_in": "ten"`,
 * `value too long for tag "ai_user" (limit 127 bytes)`,
 * `0 is outside the valid range for tag "ai_ttl" (1 .. 31536000)`;
 * a value is shown as written, non-printable bytes as \xNN, cut at 64
 * characters with "...". The caller sends it with SQLSTATE 22023 and
 * out->error_detail, when not NULL, as its DETAIL. After TAGS_INVALID the
 * other fields of out are unspecified.
 */
enum tags_result tags_parse(const char *text, size_t len, struct ai_tags *out,
                            char *errbuf, size_t errlen);

/*
 * *dst = *src for tags tags_parse filled, copying the texts only up to their
 * NULs (their lengths are in src): most are empty, and the whole struct is
 * some 600 bytes, so a memo's copy costs far less than a struct assignment.
 */
static inline void tags_copy_text(char *dst, const char *src, size_t len)
{
	if (len)
		memcpy(dst, src, len + 1);
	else
		dst[0] = '\0';    /* an empty text without a call to memcpy */
}

static inline void tags_copy(struct ai_tags *dst, const struct ai_tags *src)
{
	memcpy(dst, src, offsetof(struct ai_tags, user));    /* the fixed-size fields come first */
	tags_copy_text(dst->user, src->user, src->user_len);
	tags_copy_text(dst->model, src->model, src->model_len);
	tags_copy_text(dst->conversation, src->conversation, src->conversation_len);
	tags_copy_text(dst->traceparent, src->traceparent, src->traceparent_len);
}

/* Comment bytes (delimiters included) a struct tags_memo keeps. */
#define TAGS_MEMO_MAX 512

/*
 * The last comment tags_parse_memo parsed and what it gave: applications
 * tag their statements with the same comment again and again (an ORM's
 * per-request comment, a cache lookup's ai_cache, ai_user and ai_model),
 * around a text that differs (literals), so the comment alone is the key.
 * Zero-initialise before the first use; owned by the caller, not shared
 * between threads.
 */
struct tags_memo {
	bool valid;
	enum tags_result result;       /* TAGS_NONE or TAGS_OK: an invalid comment is parsed again */
	size_t comment_len;
	struct ai_tags tags;           /* comment_start, comment_end: those of this comment's text */
	char comment[TAGS_MEMO_MAX];
};

/*
 * tags_parse(text, len, out, errbuf, errlen), the same in every output,
 * with memo: when text has exactly one complete comment, and it is the
 * comment memo holds (compared byte for byte), out is memo's tags, copied
 * (tags_parse's result depends only on the comments' bytes, and with one
 * comment only on its own), and the comment's offsets set; the cost is the
 * scan for the comment, one compare and the copy. Otherwise tags_parse
 * runs, and a valid result of a text with one comment of at most
 * TAGS_MEMO_MAX bytes replaces memo's.
 */
enum tags_result tags_parse_memo(struct tags_memo *memo, const char *text, size_t len,
                                 struct ai_tags *out, char *errbuf, size_t errlen);

/*
 * True when s[0..n) is valid UTF-8 without NUL: what a text column of a
 * UTF8 database accepts (PostgreSQL's pg_verify_mbstr). Used for every
 * name that ends up in sluice.llm_usage or sluice.rate_counters, so that one
 * bad name cannot make their INSERTs fail.
 */
bool tags_text_is_clean(const char *s, size_t n);

#endif
