/* SPDX-License-Identifier: PostgreSQL */
/*
 * tags.c - the sqlcommenter parser: finds the comments of a statement text
 * and reads pgsluice's ai_ keys and the traceparent from all of them.
 */
#include "ai/tags.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Bytes of a bad value quoted in a message before "..." (fits TAGS_ERRBUF_SIZE). */
#define SHOWN_VALUE_MAX 64

/* Decoded keys longer than this are no key of ours (the longest is 15). */
#define KEY_MAX 32

/* Decoded values of non-text keys longer than this are invalid. */
#define VALUE_MAX 127

/* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define TRACEPARENT_LEN 55

enum tag_kind { TAG_TEXT, TAG_TOKENS, TAG_LATENCY, TAG_TTL, TAG_CACHE, TAG_TRACEPARENT, TAG_CENTS };

/* The keys pgsluice reads and where each goes in struct ai_tags. */
struct tag_def {
	const char *name;
	size_t name_len;
	enum tag_kind kind;
	size_t offset;                /* of the field in struct ai_tags (TEXT, COUNT, TTL) */
	size_t size;                  /* of a TEXT field, bytes including the NUL */
	size_t len_offset;            /* of a TEXT field's uint16_t length in struct ai_tags */
};

#define KEY(name) name, sizeof(name) - 1
#define TEXT_FIELD(f) offsetof(struct ai_tags, f), sizeof(((struct ai_tags *) 0)->f), offsetof(struct ai_tags, f##_len)
#define INT_FIELD(f) offsetof(struct ai_tags, f), 0, 0

/* Indexes of tag_defs, for match_key's dispatch. */
enum {
	DEF_USER, DEF_MODEL, DEF_TOKENS_IN, DEF_TOKENS_OUT, DEF_LATENCY, DEF_CONVERSATION, DEF_CACHE,
	DEF_TTL, DEF_TOKENS_ESTIMATE, DEF_COST_ESTIMATE, DEF_TRACEPARENT, N_DEFS
};

static const struct tag_def tag_defs[N_DEFS] = {
	[DEF_USER] = { KEY("ai_user"), TAG_TEXT, TEXT_FIELD(user) },
	[DEF_MODEL] = { KEY("ai_model"), TAG_TEXT, TEXT_FIELD(model) },
	[DEF_TOKENS_IN] = { KEY("ai_tokens_in"), TAG_TOKENS, INT_FIELD(tokens_in) },
	[DEF_TOKENS_OUT] = { KEY("ai_tokens_out"), TAG_TOKENS, INT_FIELD(tokens_out) },
	[DEF_LATENCY] = { KEY("ai_latency_ms"), TAG_LATENCY, INT_FIELD(latency_ms) },
	[DEF_CONVERSATION] = { KEY("ai_conversation"), TAG_TEXT, TEXT_FIELD(conversation) },
	[DEF_CACHE] = { KEY("ai_cache"), TAG_CACHE, 0, 0, 0 },
	[DEF_TTL] = { KEY("ai_ttl"), TAG_TTL, INT_FIELD(ttl_s) },
	[DEF_TOKENS_ESTIMATE] = { KEY("ai_tokens_estimate"), TAG_TOKENS, INT_FIELD(tokens_estimate) },
	[DEF_COST_ESTIMATE] = { KEY("ai_cost_estimate"), TAG_CENTS, 0, 0, 0 },
	[DEF_TRACEPARENT] = { KEY("traceparent"), TAG_TRACEPARENT, 0, 0, 0 },
};

struct tag_parser {
	struct ai_tags *out;
	bool failed;                  /* msg holds the first bad value's message */
	char msg[TAGS_ERRBUF_SIZE];   /* copied to the caller's errbuf only on TAGS_INVALID */
	const char *detail;           /* DETAIL sentence of msg, or NULL */
	char syntax[TAGS_ERRBUF_SIZE];   /* why the body is not sqlcommenter-shaped */
	const char *syntax_detail;
};

/* DETAIL sentences of the messages below. */
#define DETAIL_QUOTE "A quote inside a quoted value is written \\' or %27."
#define DETAIL_SHAPE "A sqlcommenter comment is a list of key='value' items separated by commas."
#define DETAIL_ESCAPE "A %-escape is % followed by two hexadecimal digits: %27 is a quote, %25 a percent sign."

/*
 * Byte classes for the comment body, one table lookup per byte instead of a
 * chain of compares (the body is walked once per statement).
 */
#define CC_SPACE  0x01   /* whitespace: ' ', \t, \n, \v, \f, \r */
#define CC_KEY    0x02   /* may be part of a key: printable but = , ' " (and bytes >= 0x80) */
#define CC_DECODE 0x04   /* decode() would change it: %, + and (in quotes) \ */
#define CC_HIGH   0x08   /* NUL or a byte >= 0x80: a text value needs the UTF-8/NUL check */
#define CC_QUOTE  0x10   /* ' : ends a quoted value (unless escaped) */

/* A key or value without CC_DECODE and CC_HIGH bytes decodes to itself and is clean text. */
#define CC_SLOW (CC_DECODE | CC_HIGH)

static const unsigned char cclass[256] = {
	[0] = CC_HIGH,
	['\t'] = CC_SPACE, ['\n'] = CC_SPACE, ['\v'] = CC_SPACE, ['\f'] = CC_SPACE, ['\r'] = CC_SPACE,
	[' '] = CC_SPACE,
	['\''] = CC_QUOTE,
	['!'] = CC_KEY, ['#' ... '$'] = CC_KEY, ['%'] = CC_KEY | CC_DECODE, ['&'] = CC_KEY,
	['(' ... '*'] = CC_KEY, ['+'] = CC_KEY | CC_DECODE, ['-' ... '<'] = CC_KEY,
	['>' ... '['] = CC_KEY, ['\\'] = CC_KEY | CC_DECODE, [']' ... '~'] = CC_KEY,
	[0x80 ... 0xff] = CC_KEY | CC_HIGH,
};

/* Absent values everywhere, touching only what a reader looks at. */
static void reset_tags(struct ai_tags *t)
{
	t->present = false;
	t->has_ai_key = false;
	t->user[0] = '\0';
	t->model[0] = '\0';
	t->tokens_in = -1;
	t->tokens_out = -1;
	t->latency_ms = -1;
	t->conversation[0] = '\0';
	t->cache = AI_CACHE_NONE;
	t->ttl_s = -1;
	t->tokens_estimate = -1;
	t->cost_estimate_cents = -1;
	t->traceparent[0] = '\0';
	t->user_len = t->model_len = t->conversation_len = t->traceparent_len = 0;
	t->comment_start = 0;
	t->comment_end = 0;
	t->error_detail = NULL;
}

/* ---- finding the comment ---- */

/* First "/" "*" in [p, end), or NULL: memchr for '/', then a look at the next byte. */
static const char *find_opener(const char *p, const char *end)
{
	while (end - p >= 2) {
		const char *slash = memchr(p, '/', (size_t) (end - p - 1));

		if (!slash)
			return NULL;
		if (slash[1] == '*')
			return slash;
		p = slash + 1;
	}
	return NULL;
}

/*
 * The first complete comment of text[from..len) as [*start, *end), delimiters
 * included. Between comments memchr does the walking; inside one, the next
 * closer ends it and another opener restarts it (innermost pair). A closer
 * outside a comment is ordinary text; an unterminated tail is no comment.
 * False when there is none.
 */
__attribute__((always_inline))    /* in tags_parse's loop, as when it had no other caller */
static inline bool find_comment(const char *text, size_t len, size_t from, size_t *start, size_t *end)
{
	const char *stop = text + len, *p = text + from, *open;

	if (!(open = find_opener(p, stop)))
		return false;
	/*
	 * Inside: every opener and closer has a '*', so memchr hops from star to
	 * star. A star at q is an opener's when q[-1] is a '/' inside the comment
	 * (checked first: at q-1 an opener comes before a closer at q in reading
	 * order), else a closer's when q[1] is '/'. A star in the last byte can be
	 * neither a closer nor followed by one: unterminated.
	 */
	for (p = open + 2; stop - p >= 2;) {
		const char *q = memchr(p, '*', (size_t) (stop - p - 1));

		if (!q)
			break;
		if (q - 1 >= p && q[-1] == '/') {
			open = q - 1;
		} else if (q[1] == '/') {
			*start = (size_t) (open - text);
			*end = (size_t) (q + 2 - text);
			return true;
		}
		p = q + 1;
	}
	return false;                 /* unterminated */
}

/* ---- decoding ---- */

static inline bool is_space(unsigned char c)
{
	return cclass[c] & CC_SPACE;
}

/* Anything printable but the delimiters; URL-encoded keys use a subset. */
static inline bool is_key_char(unsigned char c)
{
	return cclass[c] & CC_KEY;
}

static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * URL-decode raw[0..n): %XX is a byte, '+' a space; inside quotes also \'
 * is a quote and \\ a backslash (any other backslash stays). Writes at most
 * cap bytes to dst (no NUL added) and the full decoded length to *out_len,
 * which may exceed cap. False on a malformed %-escape.
 */
static bool decode(const char *raw, size_t n, bool quoted, char *dst, size_t cap, size_t *out_len)
{
	size_t i = 0, o = 0;

	while (i < n) {
		unsigned char c = (unsigned char) raw[i];

		if (c == '%') {
			int hi, lo;

			if (n - i < 3)
				return false;
			hi = hex_value((unsigned char) raw[i + 1]);
			lo = hex_value((unsigned char) raw[i + 2]);
			if (hi < 0 || lo < 0)
				return false;
			c = (unsigned char) (hi << 4 | lo);
			i += 3;
		} else if (c == '+') {
			c = ' ';
			i++;
		} else if (quoted && c == '\\' && i + 1 < n && (raw[i + 1] == '\'' || raw[i + 1] == '\\')) {
			c = (unsigned char) raw[i + 1];
			i += 2;
		} else {
			i++;
		}
		if (o < cap)
			dst[o] = (char) c;
		o++;
	}
	*out_len = o;
	return true;
}

static bool is_cont(unsigned char c)
{
	return (c & 0xc0) == 0x80;
}

/* Length of the well-formed UTF-8 character at s[0..n) (n >= 1), or 0. */
static size_t utf8_char_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return n >= 2 && is_cont(s[1]) ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		if (n < 3 || !is_cont(s[1]) || !is_cont(s[2]))
			return 0;
		if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f))
			return 0;             /* overlong, surrogate */
		return 3;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		if (n < 4 || !is_cont(s[1]) || !is_cont(s[2]) || !is_cont(s[3]))
			return 0;
		if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f))
			return 0;             /* overlong, above U+10FFFF */
		return 4;
	}
	return 0;
}

bool tags_text_is_clean(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		size_t k;

		if (s[i] == '\0')
			return false;
		k = utf8_char_len((const unsigned char *) s + i, n - i);
		if (k == 0)
			return false;
		i += k;
	}
	return true;
}

/*
 * raw[0..n) fit to quote in a message: printable ASCII and well-formed
 * UTF-8 as is, other bytes as \xNN; at most SHOWN_VALUE_MAX bytes of that,
 * then "..." if anything was left out. dst holds SHOWN_VALUE_MAX + 4 bytes.
 */
static void show_value(const char *raw, size_t n, char dst[SHOWN_VALUE_MAX + 4])
{
	size_t i = 0, o = 0;

	while (i < n) {
		const unsigned char *s = (const unsigned char *) raw + i;
		size_t k = utf8_char_len(s, n - i);

		if (k == 1 && (s[0] < 0x20 || s[0] == 0x7f))
			k = 0;
		if (o + (k == 0 ? 4 : k) > SHOWN_VALUE_MAX)
			break;
		if (k == 0) {
			snprintf(dst + o, 5, "\\x%02x", s[0]);
			o += 4;
			i++;
		} else {
			memcpy(dst + o, s, k);
			o += k;
			i += k;
		}
	}
	if (i < n) {
		memcpy(dst + o, "...", 3);
		o += 3;
	}
	dst[o] = '\0';
}

/* ---- reading keys ---- */

static void __attribute__((format(printf, 2, 3)))
fail(struct tag_parser *tp, const char *fmt, ...)
{
	va_list ap;

	if (tp->failed)
		return;               /* the first bad value is the one reported */
	tp->failed = true;
	va_start(ap, fmt);
	vsnprintf(tp->msg, sizeof tp->msg, fmt, ap);
	va_end(ap);
}

/* `invalid value for tag "key": "raw"`, raw as written in the comment. */
static void fail_invalid(struct tag_parser *tp, const struct tag_def *def, const char *raw, size_t n)
{
	char shown[SHOWN_VALUE_MAX + 4];

	show_value(raw, n, shown);
	fail(tp, "invalid value for tag \"%s\": \"%s\"", def->name, shown);
}

/* The def named key[0..n) exactly (a decoded key), or NULL. */
static const struct tag_def *lookup_tag(const char *key, size_t n)
{
	size_t i, j;

	for (i = 0; i < N_DEFS; i++) {
		if (tag_defs[i].name_len != n)
			continue;
		/* names are short: a byte loop beats a call to memcmp */
		for (j = 0; j < n && tag_defs[i].name[j] == key[j]; j++)
			;
		if (j == n)
			return &tag_defs[i];
	}
	return NULL;
}

/*
 * The def whose name is written at p, in [p, end), as a whole key (the byte
 * after it is no key byte), or NULL: then the key is scanned and looked up
 * the general way. Names are plain ASCII, so a key matched here is plain.
 * The dispatch on the fourth byte leaves one to three compares, each of a
 * constant length, which the compiler inlines.
 */
#define MATCH(name, def)                                                                    \
	do {                                                                                    \
		if (avail >= sizeof(name) - 1 && memcmp(p, name, sizeof(name) - 1) == 0 &&         \
		    (avail == sizeof(name) - 1 || !is_key_char((unsigned char) p[sizeof(name) - 1]))) \
			return &tag_defs[def];                                                          \
	} while (0)

static const struct tag_def *match_key(const char *p, const char *end)
{
	size_t avail = (size_t) (end - p);

	if (avail < 6)
		return NULL;              /* the shortest name is ai_ttl */
	if (p[0] == 't') {
		MATCH("traceparent", DEF_TRACEPARENT);
		return NULL;
	}
	if (p[0] != 'a' || p[1] != 'i' || p[2] != '_')
		return NULL;
	switch (p[3]) {
	case 'u':
		MATCH("ai_user", DEF_USER);
		break;
	case 'm':
		MATCH("ai_model", DEF_MODEL);
		break;
	case 't':
		MATCH("ai_tokens_in", DEF_TOKENS_IN);
		MATCH("ai_tokens_out", DEF_TOKENS_OUT);
		MATCH("ai_ttl", DEF_TTL);
		MATCH("ai_tokens_estimate", DEF_TOKENS_ESTIMATE);
		break;
	case 'l':
		MATCH("ai_latency_ms", DEF_LATENCY);
		break;
	case 'c':
		MATCH("ai_cache", DEF_CACHE);
		MATCH("ai_conversation", DEF_CONVERSATION);
		MATCH("ai_cost_estimate", DEF_COST_ESTIMATE);
		break;
	default:
		break;
	}
	return NULL;
}

#undef MATCH

/* The def of key raw[0..n) as written; plain: it has no byte decode() would change. */
static const struct tag_def *find_tag(const char *raw, size_t n, bool plain)
{
	char key[KEY_MAX];
	size_t key_len;

	if (plain)
		return n <= KEY_MAX ? lookup_tag(raw, n) : NULL;
	if (!decode(raw, n, false, key, sizeof key, &key_len) || key_len > sizeof key)
		return NULL;
	return lookup_tag(key, key_len);
}

static bool is_lower_hex(const char *s, size_t n, bool *all_zero)
{
	size_t i;

	*all_zero = true;
	for (i = 0; i < n; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
		if (s[i] != '0')
			*all_zero = false;
	}
	return true;
}

/* W3C Trace Context, version 00: 00-<trace-id>-<parent-id>-<flags>. */
static bool is_valid_traceparent(const char *s, size_t n)
{
	bool zero_trace, zero_parent, zero_flags;

	return n == TRACEPARENT_LEN && s[0] == '0' && s[1] == '0' && s[2] == '-' && s[35] == '-' &&
	       s[52] == '-' && is_lower_hex(s + 3, 32, &zero_trace) && !zero_trace &&
	       is_lower_hex(s + 36, 16, &zero_parent) && !zero_parent &&
	       is_lower_hex(s + 53, 2, &zero_flags);
}

static void read_traceparent(struct tag_parser *tp, const char *raw, size_t n, bool quoted, bool plain)
{
	char buf[TRACEPARENT_LEN];
	const char *value = raw;
	size_t len = n;

	/* malformed: ignored, never an error */
	if (!plain && !decode(raw, n, quoted, buf, sizeof buf, &len))
		return;
	if (!plain)
		value = buf;
	if (!is_valid_traceparent(value, len))
		return;
	memcpy(tp->out->traceparent, value, len);
	tp->out->traceparent[len] = '\0';
	tp->out->traceparent_len = (uint16_t) len;
	tp->out->present = true;
}

/*
 * value[0..len) (decoded from raw) as a decimal in [min, max] into def's
 * int64_t field; otherwise the error names the key.
 */
static void read_integer(struct tag_parser *tp, const struct tag_def *def, const char *value,
                         size_t len, const char *raw, size_t raw_len, int64_t min, int64_t max)
{
	int64_t v = 0;
	size_t i, digits = 0;

	if (len == 0) {
		fail_invalid(tp, def, raw, raw_len);
		return;
	}
	/* one pass: every byte a digit (else invalid, however long), the value of the first 18 significant ones */
	for (i = 0; i < len; i++) {
		unsigned d = (unsigned) ((unsigned char) value[i] - '0');

		if (d > 9) {
			fail_invalid(tp, def, raw, raw_len);
			return;
		}
		if (digits == 0 && d == 0)
			continue;             /* leading zeros do not count against the 18 digits */
		if (++digits <= 18)
			v = v * 10 + (int64_t) d;
	}
	if (digits > 18 || v < min || v > max) {
		char shown[SHOWN_VALUE_MAX + 4];

		show_value(value, len, shown);
		fail(tp, "%s is outside the valid range for tag \"%s\" (%lld .. %lld)", shown, def->name,
		     (long long) min, (long long) max);
		return;
	}
	memcpy((char *) tp->out + def->offset, &v, sizeof v);
}

/* value[0..len) as cents: digits with at most 6 decimals, 0 .. 10^12 (ai_cost_estimate). */
static void read_cents(struct tag_parser *tp, const struct tag_def *def, const char *value,
                       size_t len, const char *raw, size_t raw_len)
{
	double v = 0, scale = 1;
	size_t i, int_digits = 0, frac_digits = 0;
	bool dot = false;

	for (i = 0; i < len; i++) {
		if (value[i] == '.' && !dot) {
			dot = true;
		} else if (value[i] >= '0' && value[i] <= '9') {
			if (dot) {
				scale /= 10;
				v += (value[i] - '0') * scale;
				frac_digits++;
			} else {
				v = v * 10 + (value[i] - '0');
				int_digits++;
			}
		} else {
			fail_invalid(tp, def, raw, raw_len);
			return;
		}
	}
	if (int_digits + frac_digits == 0 || (dot && frac_digits == 0) || frac_digits > 6) {
		fail_invalid(tp, def, raw, raw_len);
		return;
	}
	if (v > 1e12) {
		char shown[SHOWN_VALUE_MAX + 4];

		show_value(value, len, shown);
		fail(tp, "%s is outside the valid range for tag \"%s\" (0 .. 1000000000000)", shown, def->name);
		return;
	}
	tp->out->cost_estimate_cents = v;
}

static bool equals_ci(const char *s, size_t n, const char *word)
{
	size_t i;

	if (strlen(word) != n)
		return false;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (c >= 'A' && c <= 'Z')
			c = (char) (c - 'A' + 'a');
		if (c != word[i])
			return false;
	}
	return true;
}

/*
 * One key=value item of the comment, of the key def (NULL: a key not read);
 * raw is the value as written, without quotes. raw_plain: no byte of it is
 * one decode() changes, NUL or >= 0x80 (most values are plain ASCII), so it
 * is its own decoding and clean text, and is read in place.
 */
static void read_item(struct tag_parser *tp, const struct tag_def *def, const char *raw, size_t raw_len,
                      bool quoted, bool raw_plain)
{
	char buf[VALUE_MAX + 1];
	const char *value = raw;
	size_t cap, len = raw_len;

	if (!def)
		return;               /* other keys, and ai_ keys we do not know */
	if (def->kind == TAG_TRACEPARENT) {
		read_traceparent(tp, raw, raw_len, quoted, raw_plain);
		return;
	}
	tp->out->present = true;
	tp->out->has_ai_key = true;
	cap = def->kind == TAG_TEXT ? def->size - 1 : VALUE_MAX;
	if (!raw_plain) {
		value = buf;
		if (!decode(raw, raw_len, quoted, buf, cap, &len)) {
			bool first = !tp->failed;

			fail_invalid(tp, def, raw, raw_len);
			if (first)
				tp->detail = DETAIL_ESCAPE;
			return;
		}
	}
	if (len > cap) {
		if (def->kind == TAG_TEXT)
			fail(tp, "value too long for tag \"%s\" (limit %zu bytes)", def->name, cap);
		else
			fail_invalid(tp, def, raw, raw_len);
		return;
	}
	switch (def->kind) {
	case TAG_TEXT:
		if (len == 0 || (!raw_plain && !tags_text_is_clean(value, len))) {
			fail_invalid(tp, def, raw, raw_len);
			return;
		}
		memcpy((char *) tp->out + def->offset, value, len);
		((char *) tp->out + def->offset)[len] = '\0';
		{
			uint16_t n16 = (uint16_t) len;    /* len <= 127 */

			memcpy((char *) tp->out + def->len_offset, &n16, sizeof n16);
		}
		break;
	case TAG_TOKENS:
		read_integer(tp, def, value, len, raw, raw_len, 0, TAGS_TOKENS_MAX);
		break;
	case TAG_LATENCY:
		read_integer(tp, def, value, len, raw, raw_len, 0, TAGS_LATENCY_MAX_MS);
		break;
	case TAG_TTL:
		read_integer(tp, def, value, len, raw, raw_len, TAGS_TTL_MIN_S, TAGS_TTL_MAX_S);
		break;
	case TAG_CACHE:
		if (equals_ci(value, len, "lookup"))
			tp->out->cache = AI_CACHE_LOOKUP;
		else if (equals_ci(value, len, "refresh"))
			tp->out->cache = AI_CACHE_REFRESH;
		else
			fail_invalid(tp, def, raw, raw_len);
		break;
	case TAG_CENTS:
		read_cents(tp, def, value, len, raw, raw_len);
		break;
	case TAG_TRACEPARENT:
		break;
	}
}

static inline const char *skip_space(const char *p, const char *end)
{
	while (p < end && is_space((unsigned char) *p))
		p++;
	return p;
}

/*
 * Why the body is no sqlcommenter list: "invalid sqlcommenter comment: "
 * and what, with the text at fault (shown as show_value does) in place of
 * the %s of what; and its DETAIL.
 */
static void syntax_error(struct tag_parser *tp, const char *detail, const char *what,
                         const char *at, size_t at_len)
{
	static const char prefix[] = "invalid sqlcommenter comment: ";
	char shown[SHOWN_VALUE_MAX + 4];

	show_value(at, at_len, shown);
	memcpy(tp->syntax, prefix, sizeof prefix);
	snprintf(tp->syntax + sizeof prefix - 1, sizeof tp->syntax - (sizeof prefix - 1), what, shown);
	tp->syntax_detail = detail;
}

/*
 * The comment body [p, end) as key=value items, each handed to read_item.
 * False when the body is not sqlcommenter-shaped (then it is no tag comment
 * and whatever read_item found is discarded by the caller); tp->syntax
 * then says why.
 */
static bool parse_body(struct tag_parser *tp, const char *p, const char *end)
{
	for (p = skip_space(p, end); p < end; p = skip_space(p, end)) {
		const char *key = p, *value;
		size_t key_len, value_len;
		bool quoted = false;
		unsigned char key_cc = 0, value_cc = 0;   /* the classes of their bytes, or'ed */
		const struct tag_def *def;

		if (*p == ',') {              /* empty item */
			p++;
			continue;
		}
		if ((def = match_key(p, end)) != NULL) {
			p += def->name_len;       /* what the scan below would find */
		} else {
			while (p < end && is_key_char((unsigned char) *p))
				key_cc |= cclass[(unsigned char) *p++];
		}
		key_len = (size_t) (p - key);
		if (key_len == 0) {
			syntax_error(tp, DETAIL_SHAPE, "expected a key at \"%s\"", key, (size_t) (end - key));
			return false;
		}
		p = skip_space(p, end);
		if (p == end || *p != '=') {
			syntax_error(tp, DETAIL_SHAPE, "missing \"=\" after key \"%s\"", key, key_len);
			return false;
		}
		p = skip_space(p + 1, end);
		if (p < end && *p == '\'') {
			quoted = true;
			value = ++p;
			/* the first quote ends the value unless a backslash comes before it */
			for (; p < end; p++) {
				unsigned char cc = cclass[(unsigned char) *p];

				if (cc & CC_QUOTE)
					break;
				value_cc |= cc;
			}
			if (value_cc & CC_DECODE) {
				/* \ is CC_DECODE: walk again, as \' is a quote inside */
				for (p = value; p < end && *p != '\'';)
					p += (*p == '\\' && end - p >= 2) ? 2 : 1;
			}
			if (p >= end) {
				syntax_error(tp, DETAIL_QUOTE, "unterminated quoted value of key \"%s\"", key, key_len);
				return false;
			}
			value_len = (size_t) (p - value);
			p = skip_space(p + 1, end);
			if (p < end && *p != ',') {
				syntax_error(tp, DETAIL_QUOTE, "unexpected text after the quoted value of key \"%s\"",
				             key, key_len);
				return false;
			}
		} else {
			value = p;
			while (p < end && *p != ',')
				value_cc |= cclass[(unsigned char) *p++];
			value_len = (size_t) (p - value);
			while (value_len > 0 && is_space((unsigned char) value[value_len - 1]))
				value_len--;      /* spaces are neither CC_DECODE nor CC_HIGH: value_cc stands */
		}
		if (!def)
			def = find_tag(key, key_len, !(key_cc & CC_SLOW));
		read_item(tp, def, value, value_len, quoted, !(value_cc & CC_SLOW));
		if (p < end)
			p++;                  /* the comma */
	}
	return true;
}

static bool is_word_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/*
 * Does the body [p, end) name an ai_ key anywhere: a word starting "ai_"
 * (not preceded by a letter, digit or underscore)? Such a comment was meant
 * for pgsluice, so it must not be ignored when it cannot be parsed.
 */
static bool mentions_ai_key(const char *p, const char *end)
{
	const char *start = p;

	while (end - p >= 3 && (p = memchr(p, 'a', (size_t) (end - p - 2))) != NULL) {
		if (p[1] == 'i' && p[2] == '_' && (p == start || !is_word_char((unsigned char) p[-1])))
			return true;
		p++;
	}
	return false;
}

static void copy_message(const char *msg, char *errbuf, size_t errlen)
{
	size_t n = strlen(msg);

	if (!errbuf || errlen == 0)
		return;
	if (n > errlen - 1)
		n = errlen - 1;
	memcpy(errbuf, msg, n);  /* cut, as snprintf would */
	errbuf[n] = '\0';
}

enum tags_result tags_parse(const char *text, size_t len, struct ai_tags *out,
                            char *errbuf, size_t errlen)
{
	struct tag_parser tp;
	size_t from = 0, start = 0, end = 0, won_start = 0, won_end = 0;

	reset_tags(out);
	tp.out = out;
	tp.failed = false;
	/* Every comment counts, in order, so a later value of a key wins (knex
	 * puts its comment first, OpenTelemetry appends a traceparent last). */
	while (text && !tp.failed && find_comment(text, len, from, &start, &end)) {
		/*
		 * A body that turns out not to be sqlcommenter-shaped contributes
		 * nothing, so what it read is undone. Until a comment gave a value
		 * (!out->present) out is still as reset_tags left it: resetting
		 * again undoes, and the copy of the whole struct (600 bytes, on
		 * every statement) is made only when there is more to keep.
		 */
		struct ai_tags before;
		bool was_present = out->present, had_ai_key = out->has_ai_key;

		if (was_present)
			before = *out;
		from = end;
		out->present = false;
		tp.detail = NULL;
		if (!parse_body(&tp, text + start + 2, text + end - 2)) {
			/* a value error before the syntax error names a known key: ai_ too */
			bool ours = (out->has_ai_key && !had_ai_key) ||
			            mentions_ai_key(text + start + 2, text + end - 2);

			if (ours) {
				reset_tags(out);
				/* the first problem in reading order: a bad value before the syntax error */
				copy_message(tp.failed ? tp.msg : tp.syntax, errbuf, errlen);
				out->error_detail = tp.failed ? tp.detail : tp.syntax_detail;
				return TAGS_INVALID;
			}
			if (was_present)
				*out = before;    /* no tag comment: contributes nothing */
			else
				reset_tags(out);
			tp.failed = false;
			continue;
		}
		if (out->present) {
			won_start = start;
			won_end = end;
		}
		out->present |= was_present;
	}
	if (tp.failed) {
		copy_message(tp.msg, errbuf, errlen);
		out->error_detail = tp.detail;
		return TAGS_INVALID;
	}
	if (!out->present) {
		reset_tags(out);
		return TAGS_NONE;
	}
	out->comment_start = won_start;
	out->comment_end = won_end;
	return TAGS_OK;
}

enum tags_result tags_parse_memo(struct tags_memo *memo, const char *text, size_t len,
                                 struct ai_tags *out, char *errbuf, size_t errlen)
{
	size_t start, end, next_start, next_end;

	if (!text || !find_comment(text, len, 0, &start, &end)) {
		reset_tags(out);
		return TAGS_NONE;     /* as tags_parse: no comment */
	}
	/* exactly one comment: what tags_parse's loop would find after it */
	bool sole = !find_comment(text, len, end, &next_start, &next_end);
	size_t n = end - start;

	if (sole && memo->valid && memo->comment_len == n && memcmp(memo->comment, text + start, n) == 0) {
		tags_copy(out, &memo->tags);
		if (memo->result == TAGS_OK) {
			out->comment_start = start;
			out->comment_end = end;
		}
		return memo->result;
	}
	enum tags_result r = tags_parse(text, len, out, errbuf, errlen);

	memo->valid = sole && r != TAGS_INVALID && n <= sizeof memo->comment;
	if (memo->valid) {
		memo->result = r;
		memo->comment_len = n;
		memo->tags = *out;
		memcpy(memo->comment, text + start, n);
	}
	return r;
}
