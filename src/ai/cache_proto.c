/* SPDX-License-Identifier: PostgreSQL */
/*
 * cache_proto.c - see cache_proto.h. Keys are length-prefixed fields so
 * that no two different statements can share one.
 */
#include "ai/cache_proto.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ai/cache.h"
#include "ai/tags.h"
#include "proto.h"
#include "util.h"

/* ---- keys ---- */

struct cache_stmt *cache_stmt_new(const char *text, size_t len, const struct ai_tags *tags,
                                  const uint8_t *types, uint16_t n_types)
{
	size_t cut_from = tags->comment_start, cut_to = tags->comment_end;
	if (cut_to < cut_from || cut_to > len)
		cut_from = cut_to = 0;
	size_t text_len = len - (cut_to - cut_from);
	size_t n = 4 + text_len + 2 + (size_t)n_types * 4;
	struct cache_stmt *st = malloc(sizeof(*st) + n);
	if (!st)
		return NULL;
	uint8_t *p = st->data;
	uint32_t be = htonl((uint32_t)text_len);
	memcpy(p, &be, 4);
	p += 4;
	memcpy(p, text, cut_from);
	p += cut_from;
	memcpy(p, text + cut_to, len - cut_to);
	p += len - cut_to;
	uint16_t nt = htons(n_types);
	memcpy(p, &nt, 2);
	p += 2;
	if (n_types)
		memcpy(p, types, (size_t)n_types * 4);
	st->len = n;
	return st;
}

/*
 * Keys are written straight into the msgbuf when its room suffices (the
 * usual case: a key of a short statement fits its 256 inline bytes), field
 * by field with msg_add_* otherwise; both write the same bytes. A lookup
 * builds a key for every statement, and msg_add_* per field cost more than
 * the rest of a hit (a bounds check, a call to memcpy and a byte swap each).
 */

/* Where n more bytes of k go when they fit without growing (k->len is advanced), else NULL. */
static inline uint8_t *key_room(struct msgbuf *k, size_t n)
{
	if (k->failed || k->cap - k->len < n)
		return NULL;
	uint8_t *p = k->data + k->len;
	k->len += n;
	return p;
}

/* Copy n bytes to dst; a short field (most of a key's) without a call to memcpy. Returns dst + n. */
static inline uint8_t *put(uint8_t *dst, const void *src, size_t n)
{
	const uint8_t *s = src;
	if (n > 16) {
		memcpy(dst, s, n);
	} else if (n >= 8) {
		memcpy(dst, s, 8);    /* two 8-byte copies that overlap */
		memcpy(dst + n - 8, s + n - 8, 8);
	} else if (n >= 4) {
		memcpy(dst, s, 4);
		memcpy(dst + n - 4, s + n - 4, 4);
	} else {
		for (size_t i = 0; i < n; i++)
			dst[i] = s[i];
	}
	return dst + n;
}

static inline uint8_t *put16(uint8_t *dst, int16_t v)
{
	uint16_t be = htons((uint16_t)v);
	memcpy(dst, &be, 2);
	return dst + 2;
}

static inline uint8_t *put32(uint8_t *dst, int32_t v)
{
	uint32_t be = htonl((uint32_t)v);
	memcpy(dst, &be, 4);
	return dst + 4;
}

/* The fields of a key's head: database, role and each tracked parameter. */
#define HEAD_MAX_FIELDS 32

/* A client's head as its last key wrote it, and what it was written from (cache_key_owner). */
struct cache_key_memo {
	const char *database, *user;   /* compared as pointers: the client's own */
	uint64_t vars_gen, settings_hash;
	int n_vars;
	size_t len, cap;               /* bytes in head, bytes it has room for */
	uint8_t head[];
};

void cache_key_memo_free(struct cache_key_memo *m)
{
	free(m);
}

/* Does c's memo hold the head c would write? */
static const struct cache_key_memo *memo_of(const struct cache_key_owner *c)
{
	const struct cache_key_memo *m = c->memo ? *c->memo : NULL;
	if (m && m->vars_gen == c->vars_gen && m->settings_hash == c->settings_hash && m->n_vars == c->n_vars &&
	    m->database == c->database && m->user == c->user)
		return m;
	return NULL;
}

/* Keep head[0..len), written from c, in c's memo (nothing when out of memory: the next key writes it again). */
static void memo_keep(const struct cache_key_owner *c, const uint8_t *head, size_t len)
{
	struct cache_key_memo *m = *c->memo;
	if (!m || m->cap < len) {
		free(m);
		*c->memo = m = malloc(sizeof(*m) + len);
		if (!m)
			return;
		m->cap = len;
	}
	m->database = c->database;
	m->user = c->user;
	m->vars_gen = c->vars_gen;
	m->settings_hash = c->settings_hash;
	m->n_vars = c->n_vars;
	m->len = len;
	memcpy(m->head, head, len);
}

/*
 * Database, role, every setting pgsluice tracks (client_encoding, DateStyle,
 * TimeZone, IntervalStyle, standard_conforming_strings, application_name and
 * track_extra_parameters: a statement may read any of them, e.g. with
 * current_setting()), each length-prefixed so that no two different field
 * lists make one key, then the hash of the recorded settings: what every
 * key starts with. A client with other settings gets its own answer; one
 * that may have changed settings pgsluice does not track makes no key at all
 * (client_step.c).
 */
static void write_owner_fields(struct msgbuf *k, const struct cache_key_owner *c)
{
	const char *f[HEAD_MAX_FIELDS];
	size_t n[HEAD_MAX_FIELDS];
	int nf = c->n_vars + 2;
	if (nf <= HEAD_MAX_FIELDS) {
		size_t total = sizeof(c->settings_hash) + 4 * (size_t)nf;
		f[0] = c->database;
		f[1] = c->user;
		for (int i = 0; i < c->n_vars; i++)
			f[2 + i] = c->vars[i] ? c->vars[i] : "";
		for (int i = 0; i < nf; i++)
			total += n[i] = strlen(f[i]);
		uint8_t *p = key_room(k, total);
		if (p) {
			for (int i = 0; i < nf; i++)
				p = put(put32(p, (int32_t)n[i]), f[i], n[i]);
			memcpy(p, &c->settings_hash, sizeof(c->settings_hash));
			return;
		}
	}
	for (int i = 0; i < nf; i++) {
		const char *s = i == 0 ? c->database : i == 1 ? c->user : c->vars[i - 2] ? c->vars[i - 2] : "";
		size_t len = strlen(s);
		msg_add_int32(k, (int32_t)len);
		msg_add_bytes(k, s, len);
	}
	/* the recorded settings (settings.h), by their hash: search_path, app.tenant... */
	msg_add_bytes(k, &c->settings_hash, sizeof(c->settings_hash));
}

/* The owner's fields of a key: copied from c's memo when it holds them, else written (and kept there). */
static void key_owner_fields(struct msgbuf *k, const struct cache_key_owner *c)
{
	const struct cache_key_memo *m = memo_of(c);
	if (m) {
		uint8_t *p = key_room(k, m->len);
		if (p)
			memcpy(p, m->head, m->len);
		else
			msg_add_bytes(k, m->head, m->len);
		return;
	}
	size_t start = k->len;
	write_owner_fields(k, c);
	if (c->memo && !k->failed)
		memo_keep(c, k->data + start, k->len - start);
}

/* What every key starts with: the owner's fields, then the statement. */
static void key_head(struct msgbuf *k, const struct cache_key_owner *c, const struct cache_stmt *st)
{
	key_owner_fields(k, c);
	msg_add_bytes(k, st->data, st->len);
}

/* Two int16 fields (a count and a format code), in place when there is room. */
static void key_int16_pair(struct msgbuf *k, int16_t a, int16_t b)
{
	uint8_t *p = key_room(k, 4);
	if (p) {
		put16(put16(p, a), b);
	} else {
		msg_add_int16(k, a);
		msg_add_int16(k, b);
	}
}

bool cache_key_query_text(struct msgbuf *k, const struct cache_key_owner *c, const char *text, size_t len,
                          const struct ai_tags *tags)
{
	size_t cut_from = tags->comment_start, cut_to = tags->comment_end;
	if (cut_to < cut_from || cut_to > len)
		cut_from = cut_to = 0;
	size_t text_len = len - (cut_to - cut_from);
	key_owner_fields(k, c);
	/* cache_stmt_new's data, then no parameters and text results */
	uint8_t *p = key_room(k, 4 + text_len + 2 + 4);
	if (p) {
		p = put32(p, (int32_t)text_len);
		p = put(p, text, cut_from);
		p = put(p, text + cut_to, len - cut_to);
		p = put16(p, 0);    /* no parameter types */
		put16(put16(p, 0), 0);
	} else {
		msg_add_int32(k, (int32_t)text_len);
		msg_add_bytes(k, text, cut_from);
		msg_add_bytes(k, text + cut_to, len - cut_to);
		msg_add_int16(k, 0);
		key_int16_pair(k, 0, 0);
	}
	return !k->failed;
}

/* Format code i of a Bind's list of n codes (protocol-message-formats.html). */
static int16_t format_of(const uint8_t *codes, int16_t n, int i)
{
	if (n == 0)
		return 0;
	const uint8_t *p = codes + 2 * (n == 1 ? 0 : i);
	return (int16_t)((p[0] << 8) | p[1]);
}

bool cache_key_bind(struct msgbuf *k, const struct cache_key_owner *c, const struct cache_stmt *st,
                    const uint8_t *body, size_t len)
{
	struct msgreader r;
	mr_init(&r, body, len);
	mr_string(&r);    /* portal */
	mr_string(&r);    /* statement */
	int16_t n_formats = mr_int16(&r);
	const uint8_t *formats = n_formats > 0 ? mr_bytes(&r, (size_t)n_formats * 2) : NULL;
	int16_t n_params = mr_int16(&r);
	if (r.bad || n_formats < 0 || n_params < 0 || (n_formats > 1 && n_formats != n_params))
		return false;
	key_head(k, c, st);
	uint8_t *p = key_room(k, 2);
	if (p)
		put16(p, n_params);
	else
		msg_add_int16(k, n_params);
	for (int i = 0; i < n_params && !r.bad; i++) {
		int16_t f = format_of(formats, n_formats, i);
		int32_t vlen = mr_int32(&r);
		const uint8_t *v = vlen > 0 ? mr_bytes(&r, (size_t)vlen) : NULL;
		size_t vn = v ? (size_t)vlen : 0;
		if ((p = key_room(k, 6 + vn)) != NULL) {
			put(put32(put16(p, f), vlen), v, vn);
		} else {
			msg_add_int16(k, f);
			msg_add_int32(k, vlen);    /* -1: NULL */
			if (v)
				msg_add_bytes(k, v, vn);
		}
	}
	int16_t n_results = mr_int16(&r);
	const uint8_t *results = n_results > 0 ? mr_bytes(&r, (size_t)n_results * 2) : NULL;
	if (r.bad || n_results < 0)
		return false;
	bool all_text = true;
	for (int i = 0; i < n_results; i++)
		all_text = all_text && format_of(results, n_results, i) == 0;
	if (all_text && (p = key_room(k, 2)) != NULL) {
		put16(p, 0);
		return true;
	}
	msg_add_int16(k, all_text ? 0 : n_results);
	if (!all_text)
		msg_add_bytes(k, results, (size_t)n_results * 2);
	return !k->failed;
}

/* ---- a statement's description ---- */

bool cache_key_statement(struct msgbuf *k, const struct cache_key_owner *c, const struct cache_stmt *st)
{
	key_head(k, c, st);
	uint8_t *p = key_room(k, 2);
	if (p)
		put16(p, -1);    /* no Bind or Query key has a negative parameter count */
	else
		msg_add_int16(k, -1);
	return !k->failed;
}

/* The ParameterDescription of st bound with n_params parameters, in m; false when the types are not all known. */
static bool statement_paramdesc(struct msgbuf *m, const struct cache_stmt *st, int16_t n_params)
{
	uint32_t text_len;
	uint16_t n_types;
	memcpy(&text_len, st->data, 4);
	text_len = ntohl(text_len);
	if (4 + (size_t)text_len + 2 > st->len)
		return false;
	memcpy(&n_types, st->data + 4 + text_len, 2);
	n_types = ntohs(n_types);
	const uint8_t *types = st->data + 4 + text_len + 2;
	if (n_params < 0 || n_types != (uint16_t)n_params || 4 + (size_t)text_len + 2 + (size_t)n_types * 4 > st->len)
		return false;
	for (uint16_t i = 0; i < n_types; i++)
		if (memcmp(types + 4 * i, "\0\0\0\0", 4) == 0)
			return false;    /* "unspecified": PostgreSQL infers it, pgsluice cannot */
	msg_begin(m, 't');
	msg_add_int16(m, (int16_t)n_types);
	if (n_types)
		msg_add_bytes(m, types, (size_t)n_types * 4);
	msg_end(m);
	return !m->failed;
}

/* The parameter count of a Bind body (-1 when malformed). */
static int16_t bind_n_params(const uint8_t *body, size_t len)
{
	struct msgreader r;
	mr_init(&r, body, len);
	mr_string(&r);
	mr_string(&r);
	int16_t n_formats = mr_int16(&r);
	if (n_formats > 0)
		mr_bytes(&r, (size_t)n_formats * 2);
	int16_t n = mr_int16(&r);
	return r.bad || n_formats < 0 ? -1 : n;
}

void cache_fill_statement(struct cache_entry *fill, const struct msgbuf *sk, const struct cache_stmt *st,
                          const uint8_t *body, size_t len)
{
	if (!fill || sk->failed || sk->len < 2 || fill->stmt_key_len)
		return;
	struct msgbuf m;
	msg_init(&m);
	if (statement_paramdesc(&m, st, bind_n_params(body, len))) {
		fill->stmt_paramdesc = malloc(m.len);
		if (fill->stmt_paramdesc) {
			memcpy(fill->stmt_paramdesc, m.data, m.len);
			fill->stmt_paramdesc_len = m.len;
		}
	}
	msg_free(&m);
	fill->stmt_key_len = (uint32_t)(sk->len - 2);
}

/* Store the description under key[0..key_len): e's RowDescription with text formats, and paramdesc. */
static void put_statement(struct cache *cache, const uint8_t *key, size_t key_len, const struct cache_entry *e,
                          const uint8_t *paramdesc, size_t paramdesc_len, int64_t ttl)
{
	uint8_t stack[1024], *rd = NULL;
	size_t rd_len = e->rowdesc ? e->rowdesc_len : 0;
	if (rd_len) {
		rd = rd_len <= sizeof(stack) ? stack : malloc(rd_len);
		if (!rd)
			return;
		memcpy(rd, e->rowdesc, rd_len);
		/* RowDescription: int16 fields; each: name, table oid, attnum, type oid, typlen, typmod, format */
		size_t off = PROTO_HEADER_LEN + 2;
		uint16_t n = rd_len >= off ? (uint16_t)((rd[5] << 8) | rd[6]) : 0;
		for (uint16_t i = 0; i < n && off < rd_len; i++) {
			const uint8_t *nul = memchr(rd + off, 0, rd_len - off);
			if (!nul)
				break;
			off = (size_t)(nul - rd) + 1 + 4 + 2 + 4 + 2 + 4;
			if (off + 2 > rd_len)
				break;
			rd[off] = rd[off + 1] = 0;
			off += 2;
		}
	}
	cache_put_record(cache, key, key_len, ttl, now_usec(), rd, rd_len, paramdesc, paramdesc_len);
	if (rd && rd != stack)
		free(rd);
}

/*
 * A stored answer of a Bind's fill e: store its statement's description too.
 * Parameter types it does not know are kept from the description there is
 * (a server's ParameterDescription captured by cache_describe_begin).
 */
static void statement_stored(struct cache *cache, const struct cache_entry *e)
{
	if (!e->stmt_key_len || e->stmt_key_len > e->key_len)
		return;
	struct msgbuf k;
	msg_init(&k);
	msg_add_bytes(&k, e->key, e->stmt_key_len);
	msg_add_int16(&k, -1);
	struct cache_entry *old = NULL;
	if (!e->stmt_paramdesc && !k.failed &&
	    cache_lookup(cache, k.data, k.len, now_usec(), &old) == CACHE_FOUND_READY && old->rows_len > 0) {
		if (!old->rowdesc || (e->rowdesc && old->rowdesc_len == e->rowdesc_len))
			put_statement(cache, k.data, k.len, e, old->rows, old->rows_len, e->ttl);
	} else if (!k.failed) {
		put_statement(cache, k.data, k.len, e, e->stmt_paramdesc, e->stmt_paramdesc_len, e->ttl);
	}
	cache_entry_release(cache, old);
	msg_free(&k);
}

struct cache_entry *cache_describe_begin(struct cache *cache, const struct msgbuf *sk, int64_t ttl)
{
	if (sk->failed)
		return NULL;
	struct cache_entry *e = cache_fill_begin(cache, sk->data, sk->len, ttl, false);
	if (e)
		e->describes = true;
	return e;
}

void cache_note_statement(struct cache *cache, const struct msgbuf *sk, const struct cache_stmt *st,
                          const uint8_t *body, size_t len, const struct cache_entry *e, int64_t ttl)
{
	struct cache_entry *d = NULL;
	if (sk->failed)
		return;
	if (cache_lookup(cache, sk->data, sk->len, now_usec(), &d) == CACHE_FOUND_READY) {
		cache_entry_release(cache, d);
		return;
	}
	struct msgbuf m;
	msg_init(&m);
	bool typed = statement_paramdesc(&m, st, bind_n_params(body, len));
	put_statement(cache, sk->data, sk->len, e, typed ? m.data : NULL, typed ? m.len : 0, ttl);
	msg_free(&m);
}

void cache_fill_done(struct cache *cache, struct cache_entry *fill, bool keep)
{
	if (!keep)
		cache_fill_fail(fill);
	if (fill->describes) {
		/* a statement's description: a record, never an answer */
		if (!fill->unusable && fill->complete && fill->rowdesc && fill->rows_len)
			put_statement(cache, fill->key, fill->key_len, fill, fill->rows, fill->rows_len, fill->ttl);
		cache_fill_fail(fill);
	}
	cache_entry_hold(fill);    /* its bytes are read once it is stored */
	if (cache_fill_drop(cache, fill, now_usec()))
		statement_stored(cache, fill);
	cache_entry_release(cache, fill);
}
