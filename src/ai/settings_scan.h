/* SPDX-License-Identifier: PostgreSQL */
/*
 * settings_scan.h - does a statement text change the session's settings?
 * The completion cache (docs/ai-middleware.md) answers a lookup only with rows the
 * same statement would return on the client's own session, so it must know
 * when a client's session stops being the one its key describes. Pure
 * function: no allocation, no sockets.
 */
#ifndef SLUICE_AI_SETTINGS_SCAN_H
#define SLUICE_AI_SETTINGS_SCAN_H

#include <stddef.h>

enum settings_effect {
	SETTINGS_NONE,       /* changes no setting pgsluice cannot see */
	SETTINGS_REPORTED,   /* exactly one SET of a setting PostgreSQL reports with ParameterStatus */
	SETTINGS_UNKNOWN,    /* may change settings or session state in ways pgsluice does not track */
};

/*
 * What running text[0..len) (a simple Query's string or a Parse's text; need
 * not be NUL-terminated) may do to the session's settings.
 *
 * SETTINGS_REPORTED: the text is one statement
 * SET [SESSION] name {= | TO} value [, ...] [;] with name one of
 * client_encoding, DateStyle, TimeZone, IntervalStyle,
 * standard_conforming_strings, application_name (the parameters PostgreSQL
 * always reports, sql-set.html; protocol-flow.html 55.2.7) and values bare
 * words or plain 'quoted' strings; comments allowed.
 *
 * SETTINGS_UNKNOWN, erring on the side of UNKNOWN: the word set_config
 * anywhere; SET, RESET, DISCARD, DO or CALL where a statement may begin
 * (anything but an identifier, a quoted identifier or ')' on the same line
 * before it, so UPDATE t SET and ON CONFLICT (k) DO are not); TEMP,
 * TEMPORARY or PG_TEMP in a text that says CREATE or INTO (a temporary
 * table shadows a table of the same name). String literals and comments
 * are not skipped: no quoting trick hides a word, and a word inside a
 * literal may count when it need not. Words are case-insensitive.
 *
 * Functions are not looked into: one that runs SET or set_config() changes
 * settings unseen (documented in docs/ai-middleware.md).
 */
enum settings_effect settings_effect(const char *text, size_t len);

/* How settings_effect looks at the words: for the unit tests, which check that every path agrees. */
enum settings_scan_path {
	SETTINGS_SCAN_BYTES,   /* a byte at a time (machines without SSE2) */
	SETTINGS_SCAN_SSE2,    /* 16 bytes at a time (every x86-64) */
	SETTINGS_SCAN_AVX2,    /* 32 bytes at a time where the CPU has AVX2: what settings_effect uses */
};

/*
 * settings_effect(text, len) by the given path; a path this machine lacks
 * falls back to the next narrower one (AVX2 to SSE2, SSE2 to bytes).
 */
enum settings_effect settings_effect_by(const char *text, size_t len, enum settings_scan_path path);

/*
 * A memo of settings_effect for the statement texts seen last: applications
 * send the same few statements over and over, and a Parse is looked at
 * before and after its server is linked. Direct-mapped by length; texts
 * longer than SETTINGS_MEMO_TEXT bytes are not kept. Zeroed = empty. The
 * caller owns it (one per event loop; not for several threads at once).
 */
#define SETTINGS_MEMO_SLOTS 16
#define SETTINGS_MEMO_TEXT 240
struct settings_memo_slot {
	unsigned short len;            /* 0: empty */
	unsigned char effect;          /* enum settings_effect */
	char text[SETTINGS_MEMO_TEXT];
};
struct settings_memo {
	struct settings_memo_slot slot[SETTINGS_MEMO_SLOTS];
};

/*
 * settings_effect(text, len), from memo when the same text was seen last in
 * its slot (a memcmp instead of a scan), else computed and remembered.
 */
enum settings_effect settings_effect_memo(struct settings_memo *memo, const char *text, size_t len);

#endif
