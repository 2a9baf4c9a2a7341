/* SPDX-License-Identifier: PostgreSQL */
/*
 * cache_proto.h - the completion cache's keys and records (docs/ai-middleware.md):
 * keys built from Query and Parse/Bind messages, statement descriptions, a
 * fill stored when its request completes. Writing hits and capturing a
 * server's answer are the core's (cacheio.h).
 */
#ifndef SLUICE_AI_CACHE_PROTO_H
#define SLUICE_AI_CACHE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ai_tags;
struct cache;
struct cache_entry;

struct cache_key_memo;

/*
 * Whose answer a key names (filled by the core, client_step.c): the
 * client's database and login role, the values of every parameter pgsluice
 * tracks (varcache.h: client_encoding, DateStyle, TimeZone, IntervalStyle,
 * standard_conforming_strings, application_name, track_extra_parameters; NULL
 * when unset) and the hash of its recorded settings (settings.h). All borrowed.
 *
 * Every key starts with these fields, and they rarely change during a
 * client's life: memo, when not NULL, is where the client keeps them as a
 * key writes them (made on first use, freed with cache_key_memo_free), so
 * that its next key copies them instead of writing each field again. It is
 * used while vars_gen (varcache.h gen: equal numbers mean equal values),
 * settings_hash, n_vars and the database and user pointers are the same;
 * database and user must therefore be the client's own strings, fixed for
 * its life.
 */
struct cache_key_owner {
	const char *database;
	const char *user;
	char *const *vars;
	int n_vars;
	uint64_t vars_gen;
	uint64_t settings_hash;
	struct cache_key_memo **memo;
};

/* Free a client's memo (cache_key_owner.memo; NULL is ignored). */
void cache_key_memo_free(struct cache_key_memo *m);

/*
 * The statement's part of a key: its text without the tag comment, then its
 * parameter type OIDs. Kept per prepared statement by the client; free().
 */
struct cache_stmt {
	size_t len;                    /* bytes of data */
	uint8_t data[];
};

/*
 * The statement part for text[0..len) whose tags (TAGS_OK, ai_cache set)
 * say where the comment is, with n_types parameter type OIDs at types (int32
 * in network order, as in Parse; NULL when 0). NULL when out of memory.
 */
struct cache_stmt *cache_stmt_new(const char *text, size_t len, const struct ai_tags *tags,
                                  const uint8_t *types, uint16_t n_types);

/*
 * Keys are built in a struct msgbuf (proto.h) used as a plain byte buffer:
 * msg_init it, pass it here, read its data/len, msg_free it. A key of up to
 * 256 bytes needs no allocation.
 */
struct msgbuf;

/*
 * The key of the simple Query text[0..len) run by client c
 * (cache_key_owner): its statement part as cache_stmt_new(text, len, tags,
 * NULL, 0) makes it, then no parameters and text results. Written without
 * making the cache_stmt: a simple Query's text is looked up once, so the
 * intermediate copy (a malloc and a free per lookup) is not kept. tags
 * (TAGS_OK) say where the comment is. False when out of memory.
 */
bool cache_key_query_text(struct msgbuf *k, const struct cache_key_owner *c, const char *text, size_t len,
                          const struct ai_tags *tags);

/*
 * The key of statement st bound by the Bind message body[0..len) (after the
 * length word): parameter values and formats, result formats (protocol-
 * message-formats.html, Bind). Format lists are normalised as PostgreSQL
 * reads them, so "no codes" and "all text" are one key. False when out of
 * memory or the Bind is malformed.
 */
bool cache_key_bind(struct msgbuf *k, const struct cache_key_owner *c, const struct cache_stmt *st,
                    const uint8_t *body, size_t len);

/*
 * A statement's description (a Parse or Describe of the statement answered
 * without a server, issue 14 item 8) is a cache record of its own, under the
 * statement's key: what cache_key_bind starts with, then int16 -1, which no
 * Bind or Query key has. Its rowdesc is the RowDescription with every format
 * code 0 (protocol-message-formats.html: a statement's RowDescription does
 * not know them yet); its rows are the ParameterDescription, or empty when
 * pgsluice does not know the parameter types. It is stored with every
 * answer of the statement, so its presence says PostgreSQL accepted the
 * statement's text and types under this key.
 */
bool cache_key_statement(struct msgbuf *k, const struct cache_key_owner *c, const struct cache_stmt *st);

/*
 * On fill, a Bind's fill of statement st (its Bind body[0..len)) made after
 * the statement key sk: remember what its description needs, to be stored
 * with the answer (cache_fill_done). The ParameterDescription is known when
 * the Parse gave a non-zero type OID for each of the Bind's parameters.
 */
void cache_fill_statement(struct cache_entry *fill, const struct msgbuf *sk, const struct cache_stmt *st,
                          const uint8_t *body, size_t len);

/*
 * A hit of READY answer e for statement st (statement key sk, Bind body):
 * store the statement's description when the cache lacks it (it was evicted
 * or expired before the answer), else mark it recently used.
 */
void cache_note_statement(struct cache *cache, const struct msgbuf *sk, const struct cache_stmt *st,
                          const uint8_t *body, size_t len, const struct cache_entry *e, int64_t ttl);

/*
 * A Describe of lookup statement (statement key sk) goes to a server: the
 * fill its ParameterDescription and RowDescription are captured into, stored
 * as the statement's description when the Describe completes (the types
 * PostgreSQL inferred for parameters the Parse left unspecified). Never
 * published: nobody waits for it. NULL when out of memory.
 */
struct cache_entry *cache_describe_begin(struct cache *cache, const struct msgbuf *sk, int64_t ttl);

/*
 * A fill leaves the reply queue (ai_settle): stored when keep (its request
 * completed in a cacheable state) and its last capturer completed it, else
 * dropped. Takes the fill reference the queue held.
 */
void cache_fill_done(struct cache *cache, struct cache_entry *fill, bool keep);

#endif
