/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_cache.c - the completion cache's store: lookups (miss, READY,
 * FILLING), fills that are stored and fills that are not (empty, incomplete,
 * failed, two result sets, too large), TTL expiry, waiters and their wakes,
 * several capturers, refresh fills, LRU eviction under max_memory, references
 * that outlive eviction and flush, reconfiguration, byte accounting, the
 * hit/miss counters and a table that grows; keys (ai/cache_proto.h) as
 * their documented layout, whichever way they are written (in place, field
 * by field past the msgbuf's room, from a client's memo) and keys of every
 * length told apart by the table's hash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ai/cache.h"
#include "ai/cache_proto.h"
#include "ai/tags.h"
#include "proto.h"

#define SEC 1000000LL                 /* microseconds */
#define T0 (1000 * SEC)               /* a monotonic "now" */
#define TTL (60 * SEC)
#define BIG ((size_t)1 << 30)         /* bounds that never bite */

/* ---- fake PostgreSQL messages (the store copies them, it never parses them) ---- */

static size_t put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return 4;
}

static size_t put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
	return 2;
}

/* Fill in the length word of the message starting at msg, ending at end. */
static size_t finish_msg(uint8_t *msg, size_t end)
{
	put_u32(msg + 1, (uint32_t)(end - 1));
	return end;
}

/* One RowDescription of a single text column "answer". */
static size_t rowdesc_msg(uint8_t *p)
{
	size_t n = 0;
	p[n++] = 'T';
	n += 4;
	n += put_u16(p + n, 1);
	memcpy(p + n, "answer", 7);
	n += 7;
	n += put_u32(p + n, 0);            /* table oid */
	n += put_u16(p + n, 0);            /* attnum */
	n += put_u32(p + n, 25);           /* text */
	n += put_u16(p + n, 0xffff);       /* typlen -1 */
	n += put_u32(p + n, 0xffffffff);   /* typmod -1 */
	n += put_u16(p + n, 0);            /* text format */
	return finish_msg(p, n);
}

/* One DataRow holding the text value. */
static size_t datarow_msg(uint8_t *p, const char *value)
{
	size_t n = 0, len = strlen(value);
	p[n++] = 'D';
	n += 4;
	n += put_u16(p + n, 1);
	n += put_u32(p + n, (uint32_t)len);
	memcpy(p + n, value, len);
	n += len;
	return finish_msg(p, n);
}

/* One CommandComplete "SELECT rows". */
static size_t complete_msg(uint8_t *p, unsigned rows)
{
	size_t n = 0;
	p[n++] = 'C';
	n += 4;
	n += (size_t)sprintf((char *)p + n, "SELECT %u", rows) + 1;
	return finish_msg(p, n);
}

struct answer {
	uint8_t rowdesc[64];
	size_t rowdesc_len;
	uint8_t rows[64 * 1024];
	size_t rows_len;
	uint32_t n_rows;
};

/* An answer of n_rows DataRows of value, then its CommandComplete. */
static void build_answer(struct answer *a, uint32_t n_rows, const char *value)
{
	memset(a, 0, sizeof(*a));
	a->rowdesc_len = rowdesc_msg(a->rowdesc);
	for (uint32_t i = 0; i < n_rows; i++) {
		assert_true(a->rows_len + 32 + strlen(value) < sizeof(a->rows));
		a->rows_len += datarow_msg(a->rows + a->rows_len, value);
	}
	a->rows_len += complete_msg(a->rows + a->rows_len, n_rows);
	a->n_rows = n_rows;
}

/* ---- helpers ---- */

static const uint8_t *K(const char *s)
{
	return (const uint8_t *)s;
}

/* Capture answer a into FILLING e as the caller would, completing it. */
static void capture(struct cache *cache, struct cache_entry *e, const struct answer *a)
{
	assert_true(cache_fill_rowdesc(cache, e, a->rowdesc, a->rowdesc_len));
	assert_true(cache_fill_rows(cache, e, a->rows, a->rows_len));
	e->n_rows = a->n_rows;
	e->complete = true;
}

/* Fill key with an answer of n_rows rows of value and finish at now. */
static void put_value(struct cache *cache, const char *key, uint32_t n_rows, const char *value, int64_t ttl,
                      int64_t now)
{
	static struct answer a;
	build_answer(&a, n_rows, value);
	struct cache_entry *e = cache_fill_begin(cache, K(key), strlen(key), ttl, true);
	assert_non_null(e);
	capture(cache, e, &a);
	cache_fill_drop(cache, e, now);
}

static void put(struct cache *cache, const char *key, int64_t now)
{
	put_value(cache, key, 1, "42", TTL, now);
}

/* What a lookup of key finds at now; a reference taken is released. */
static enum cache_find find(struct cache *cache, const char *key, int64_t now)
{
	struct cache_entry *e = (struct cache_entry *)1;
	enum cache_find r = cache_lookup(cache, K(key), strlen(key), now, &e);
	if (r == CACHE_FOUND_MISS)
		assert_null(e);
	else
		assert_non_null(e);
	if (r == CACHE_FOUND_READY)
		cache_entry_release(cache, e);
	return r;
}

/* The entry size of key's answer as put_value() stores it. */
static size_t value_size(const char *key, uint32_t n_rows, const char *value)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct cache_entry *e;
	put_value(cache, key, n_rows, value, TTL, T0);
	assert_int_equal(cache_lookup(cache, K(key), strlen(key), T0, &e), CACHE_FOUND_READY);
	size_t size = cache_entry_size(e);
	cache_entry_release(cache, e);
	cache_free(cache);
	return size;
}

/* The entry size of key's answer as put() stores it. */
static size_t put_size(const char *key)
{
	return value_size(key, 1, "42");
}

/* Assert e holds exactly answer a. */
static void assert_answer(const struct cache_entry *e, const struct answer *a)
{
	assert_int_equal(e->rowdesc_len, a->rowdesc_len);
	assert_memory_equal(e->rowdesc, a->rowdesc, a->rowdesc_len);
	assert_int_equal(e->rows_len, a->rows_len);
	assert_memory_equal(e->rows, a->rows, a->rows_len);
	assert_int_equal(e->n_rows, a->n_rows);
	assert_true(e->complete);
}

struct test_waiter {
	struct cache_waiter w;
	int woken;
	bool filled;
	/* when cache is set, the wake looks key up and records what it found */
	struct cache *cache;
	const char *key;
	int64_t now;
	enum cache_find seen;
};

static void on_wake(struct cache_waiter *w, bool filled)
{
	struct test_waiter *t = (struct test_waiter *)((char *)w - offsetof(struct test_waiter, w));
	assert_null(w->on);    /* it left the entry before the wake */
	t->woken++;
	t->filled = filled;
	if (t->cache)
		t->seen = find(t->cache, t->key, t->now);
}

static void waiter_init(struct test_waiter *t)
{
	memset(t, 0, sizeof(*t));
	t->w.wake = on_wake;
}

/* Start a published fill of key with n waiters waiting on it. */
static struct cache_entry *fill_with_waiters(struct cache *cache, const char *key, struct test_waiter *ws, int n)
{
	struct cache_entry *e = cache_fill_begin(cache, K(key), strlen(key), TTL, true);
	assert_non_null(e);
	for (int i = 0; i < n; i++) {
		struct cache_entry *f;
		waiter_init(&ws[i]);
		assert_int_equal(cache_lookup(cache, K(key), strlen(key), T0, &f), CACHE_FOUND_FILLING);
		assert_ptr_equal(f, e);
		cache_wait(f, &ws[i].w);
		assert_ptr_equal(ws[i].w.on, e);
	}
	return e;
}

static void assert_all_woken(const struct test_waiter *ws, int n, bool filled)
{
	for (int i = 0; i < n; i++) {
		assert_int_equal(ws[i].woken, 1);
		assert_int_equal(ws[i].filled, filled);
		assert_null(ws[i].w.on);
	}
}

/* ---- lookups ---- */

static void test_lookup_misses_on_an_empty_cache(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	assert_non_null(cache);
	assert_int_equal(find(cache, "SELECT 1", T0), CACHE_FOUND_MISS);
	struct cache_stats st = cache_stats(cache);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(st.hits, 0);
	assert_int_equal(st.misses, 0);
	assert_int_equal(st.evictions, 0);
	cache_free(cache);
}

static void test_published_fill_is_found_filling_without_a_reference(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct cache_entry *e = cache_fill_begin(cache, K("q"), 1, TTL, true), *f;
	assert_non_null(e);
	assert_int_equal(e->state, CACHE_FILLING);
	int refs = e->refs;
	assert_int_equal(cache_lookup(cache, K("q"), 1, T0, &f), CACHE_FOUND_FILLING);
	assert_ptr_equal(f, e);
	assert_int_equal(e->refs, refs);
	assert_int_equal(cache_stats(cache).entries, 0);    /* FILLING is not counted */
	assert_int_equal(cache_stats(cache).bytes, 0);
	assert_int_equal(find(cache, "other", T0), CACHE_FOUND_MISS);
	cache_fill_fail(e);
	cache_fill_drop(cache, e, T0);
	assert_int_equal(find(cache, "q", T0), CACHE_FOUND_MISS);
	cache_free(cache);
}

static void test_fill_with_rows_is_ready_and_found(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct answer a;
	build_answer(&a, 3, "hello world");
	struct cache_entry *e = cache_fill_begin(cache, K("SELECT ai()"), 11, TTL, true), *f;
	capture(cache, e, &a);
	cache_fill_drop(cache, e, T0);

	assert_int_equal(cache_lookup(cache, K("SELECT ai()"), 11, T0 + 1, &f), CACHE_FOUND_READY);
	assert_ptr_equal(f, e);
	assert_int_equal(f->state, CACHE_READY);
	assert_true(f->in_table);
	assert_int_equal(f->expires, T0 + TTL);
	assert_int_equal(f->key_len, 11);
	assert_memory_equal(f->key, "SELECT ai()", 11);
	assert_answer(f, &a);
	struct cache_stats st = cache_stats(cache);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.bytes, cache_entry_size(f));
	cache_entry_release(cache, f);
	cache_free(cache);
}

static void test_rows_may_arrive_in_pieces(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct answer a;
	build_answer(&a, 50, "a longer value, so that the row buffer has to grow past its first size");
	struct cache_entry *e = cache_fill_begin(cache, K("k"), 1, TTL, true), *f;
	assert_true(cache_fill_rowdesc(cache, e, a.rowdesc, a.rowdesc_len));
	for (size_t off = 0; off < a.rows_len;) {
		size_t n = a.rows_len - off < 7 ? a.rows_len - off : 7;   /* messages split anywhere */
		assert_true(cache_fill_rows(cache, e, a.rows + off, n));
		off += n;
	}
	assert_true(cache_fill_rows(cache, e, a.rows, 0));
	e->n_rows = a.n_rows;
	e->complete = true;
	cache_fill_drop(cache, e, T0);
	assert_int_equal(cache_lookup(cache, K("k"), 1, T0, &f), CACHE_FOUND_READY);
	assert_answer(f, &a);
	cache_entry_release(cache, f);
	cache_free(cache);
}

static void test_keys_are_bytes(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	static const uint8_t k1[] = { 'a', 0, 'b' }, k2[] = { 'a', 0, 'c' };
	struct answer a;
	struct cache_entry *e, *f;
	build_answer(&a, 1, "x");

	e = cache_fill_begin(cache, k1, sizeof(k1), TTL, true);
	capture(cache, e, &a);
	cache_fill_drop(cache, e, T0);
	e = cache_fill_begin(cache, K(""), 0, TTL, true);    /* an empty key is a key */
	capture(cache, e, &a);
	cache_fill_drop(cache, e, T0);

	assert_int_equal(cache_lookup(cache, k1, sizeof(k1), T0, &f), CACHE_FOUND_READY);
	cache_entry_release(cache, f);
	assert_int_equal(cache_lookup(cache, k2, sizeof(k2), T0, &f), CACHE_FOUND_MISS);
	assert_int_equal(cache_lookup(cache, k1, 2, T0, &f), CACHE_FOUND_MISS);     /* a prefix */
	assert_int_equal(cache_lookup(cache, K("a"), 1, T0, &f), CACHE_FOUND_MISS);
	assert_int_equal(cache_lookup(cache, K(""), 0, T0, &f), CACHE_FOUND_READY);
	assert_int_equal(f->key_len, 0);
	cache_entry_release(cache, f);
	assert_int_equal(cache_stats(cache).entries, 2);
	cache_free(cache);
}

static void test_fill_copies_the_key(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	char key[] = "SELECT 1";
	struct answer a;
	build_answer(&a, 1, "1");
	struct cache_entry *e = cache_fill_begin(cache, K(key), strlen(key), TTL, true);
	memset(key, 'x', strlen(key));
	capture(cache, e, &a);
	cache_fill_drop(cache, e, T0);
	assert_int_equal(find(cache, "SELECT 1", T0), CACHE_FOUND_READY);
	assert_int_equal(find(cache, key, T0), CACHE_FOUND_MISS);
	cache_free(cache);
}

/* ---- expiry ---- */

static void test_entry_expires_when_now_reaches_expires(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	put(cache, "a", T0);
	put(cache, "b", T0 + 10);
	size_t b_size = put_size("b");
	assert_int_equal(cache_stats(cache).entries, 2);

	assert_int_equal(find(cache, "a", T0 + TTL - 1), CACHE_FOUND_READY);
	assert_int_equal(find(cache, "a", T0 + TTL), CACHE_FOUND_MISS);     /* now == expires */
	struct cache_stats st = cache_stats(cache);
	assert_int_equal(st.entries, 1);                                      /* dropped, not just hidden */
	assert_int_equal(st.bytes, b_size);
	assert_int_equal(st.evictions, 0);                                    /* expiry is no eviction */
	assert_int_equal(find(cache, "a", T0), CACHE_FOUND_MISS);           /* gone even for an earlier now */

	assert_int_equal(find(cache, "b", T0 + TTL + 11), CACHE_FOUND_MISS);
	st = cache_stats(cache);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	cache_free(cache);
}

static void test_zero_ttl_is_never_found(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	put_value(cache, "a", 1, "v", 0, T0);
	assert_int_equal(find(cache, "a", T0), CACHE_FOUND_MISS);
	assert_int_equal(cache_stats(cache).entries, 0);
	cache_free(cache);
}

static void test_expired_entry_held_reference_stays_readable(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct answer a;
	struct cache_entry *e;
	build_answer(&a, 2, "kept");
	put_value(cache, "a", 2, "kept", TTL, T0);
	assert_int_equal(cache_lookup(cache, K("a"), 1, T0, &e), CACHE_FOUND_READY);
	assert_int_equal(find(cache, "a", T0 + TTL), CACHE_FOUND_MISS);
	assert_int_equal(e->state, CACHE_DEAD);
	assert_false(e->in_table);
	assert_answer(e, &a);
	cache_entry_release(cache, e);
	cache_free(cache);
}

/* ---- fills that are not stored ---- */

static void test_empty_result_is_not_stored(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct test_waiter ws[2];
	struct answer a;
	build_answer(&a, 0, "");
	struct cache_entry *e = fill_with_waiters(cache, "q", ws, 2);
	capture(cache, e, &a);    /* RowDescription and CommandComplete, no DataRow */
	cache_fill_drop(cache, e, T0);
	assert_all_woken(ws, 2, false);
	assert_int_equal(find(cache, "q", T0), CACHE_FOUND_MISS);
	assert_int_equal(cache_stats(cache).entries, 0);
	assert_int_equal(cache_stats(cache).bytes, 0);
	cache_free(cache);
}

static void test_incomplete_fill_is_not_stored(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct test_waiter ws[2];
	struct answer a;
	build_answer(&a, 3, "v");
	struct cache_entry *e = fill_with_waiters(cache, "q", ws, 2);
	capture(cache, e, &a);
	e->complete = false;    /* the CommandComplete never came (the server went away) */
	cache_fill_drop(cache, e, T0);
	assert_all_woken(ws, 2, false);
	assert_int_equal(find(cache, "q", T0), CACHE_FOUND_MISS);
	assert_int_equal(cache_stats(cache).entries, 0);
	cache_free(cache);
}

static void test_failed_fill_is_not_stored(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct test_waiter ws[2];
	struct answer a;
	build_answer(&a, 3, "v");
	struct cache_entry *e = fill_with_waiters(cache, "q", ws, 2);
	capture(cache, e, &a);
	cache_fill_fail(e);    /* an ErrorResponse */
	assert_true(e->unusable);
	assert_null(e->rows);
	assert_null(e->rowdesc);
	assert_false(cache_fill_rows(cache, e, a.rows, a.rows_len));
	assert_false(cache_fill_rowdesc(cache, e, a.rowdesc, a.rowdesc_len));
	cache_fill_drop(cache, e, T0);
	assert_all_woken(ws, 2, false);
	assert_int_equal(find(cache, "q", T0), CACHE_FOUND_MISS);
	assert_int_equal(cache_stats(cache).entries, 0);
	cache_free(cache);
}

static void test_second_row_description_is_not_stored(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct test_waiter ws[2];
	struct answer a;
	build_answer(&a, 1, "v");
	struct cache_entry *e = fill_with_waiters(cache, "q", ws, 2);
	capture(cache, e, &a);
	assert_false(cache_fill_rowdesc(cache, e, a.rowdesc, a.rowdesc_len));    /* SELECT 1; SELECT 2 */
	assert_true(e->unusable);
	assert_false(cache_fill_rows(cache, e, a.rows, a.rows_len));
	e->n_rows = 2;
	cache_fill_drop(cache, e, T0);
	assert_all_woken(ws, 2, false);
	assert_int_equal(find(cache, "q", T0), CACHE_FOUND_MISS);
	assert_int_equal(cache_stats(cache).entries, 0);
	cache_free(cache);
}

static void test_rows_past_max_entry_are_not_stored(void **state)
{
	struct answer a;
	build_answer(&a, 10, "0123456789");
	size_t max_entry = a.rowdesc_len + a.rows_len - 1;
	struct cache *cache = cache_new(BIG, max_entry);
	struct test_waiter ws[2];
	struct cache_entry *e = fill_with_waiters(cache, "q", ws, 2);
	assert_true(cache_fill_rowdesc(cache, e, a.rowdesc, a.rowdesc_len));
	assert_true(cache_fill_rows(cache, e, a.rows, a.rows_len - 1));
	assert_false(cache_fill_rows(cache, e, a.rows + a.rows_len - 1, 1));    /* one byte too many */
	assert_true(e->unusable);
	assert_null(e->rows);                                                    /* its buffers are freed */
	assert_null(e->rowdesc);
	assert_int_equal(e->rows_len + e->rowdesc_len, 0);
	assert_false(cache_fill_rows(cache, e, a.rows, 1));
	e->n_rows = a.n_rows;
	e->complete = true;
	cache_fill_drop(cache, e, T0);
	assert_all_woken(ws, 2, false);
	assert_int_equal(find(cache, "q", T0), CACHE_FOUND_MISS);
	assert_int_equal(cache_stats(cache).entries, 0);
	cache_free(cache);
}

static void test_row_description_past_max_entry_is_not_stored(void **state)
{
	struct answer a;
	build_answer(&a, 1, "v");
	struct cache *cache = cache_new(BIG, a.rowdesc_len - 1);
	struct cache_entry *e = cache_fill_begin(cache, K("q"), 1, TTL, true);
	assert_false(cache_fill_rowdesc(cache, e, a.rowdesc, a.rowdesc_len));
	assert_true(e->unusable);
	assert_false(cache_fill_rows(cache, e, a.rows, 1));
	e->n_rows = 1;
	e->complete = true;
	cache_fill_drop(cache, e, T0);
	assert_int_equal(find(cache, "q", T0), CACHE_FOUND_MISS);
	cache_free(cache);
}

static void test_answer_of_exactly_max_entry_is_stored(void **state)
{
	struct answer a;
	build_answer(&a, 10, "0123456789");
	struct cache *cache = cache_new(BIG, a.rowdesc_len + a.rows_len);
	struct cache_entry *e = cache_fill_begin(cache, K("q"), 1, TTL, true), *f;
	capture(cache, e, &a);
	cache_fill_drop(cache, e, T0);
	assert_int_equal(cache_lookup(cache, K("q"), 1, T0, &f), CACHE_FOUND_READY);
	assert_answer(f, &a);
	cache_entry_release(cache, f);
	cache_free(cache);
}

static void test_max_entry_shrunk_during_a_fill_is_not_stored(void **state)
{
	struct answer a;
	build_answer(&a, 10, "0123456789");
	struct cache *cache = cache_new(BIG, BIG);
	struct cache_entry *e = cache_fill_begin(cache, K("q"), 1, TTL, true);
	capture(cache, e, &a);
	cache_configure(cache, BIG, a.rowdesc_len + a.rows_len - 1);    /* a reload mid-fill */
	cache_fill_drop(cache, e, T0);
	assert_int_equal(find(cache, "q", T0), CACHE_FOUND_MISS);
	assert_int_equal(cache_stats(cache).entries, 0);
	cache_free(cache);
}

static void test_entry_larger_than_max_memory_is_not_stored(void **state)
{
	size_t size = put_size("a");
	struct cache *cache = cache_new(2 * size, BIG);
	put(cache, "a", T0);
	put(cache, "b", T0);
	struct test_waiter ws[1];
	struct answer big;
	build_answer(&big, 200, "a row of a large answer");
	struct cache_entry *e = fill_with_waiters(cache, "big", ws, 1);
	capture(cache, e, &big);
	assert_true(cache_entry_size(e) > 2 * size);
	cache_fill_drop(cache, e, T0);
	assert_all_woken(ws, 1, false);
	assert_int_equal(find(cache, "big", T0), CACHE_FOUND_MISS);
	/* and it did not evict what could never make room for it */
	assert_int_equal(find(cache, "a", T0), CACHE_FOUND_READY);
	assert_int_equal(find(cache, "b", T0), CACHE_FOUND_READY);
	assert_int_equal(cache_stats(cache).evictions, 0);
	cache_free(cache);
}

/* ---- waiters ---- */

static void test_waiters_are_woken_filled_once_each(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct test_waiter ws[5];
	struct answer a;
	build_answer(&a, 1, "v");
	struct cache_entry *e = fill_with_waiters(cache, "q", ws, 5);
	capture(cache, e, &a);
	for (int i = 0; i < 5; i++)
		assert_int_equal(ws[i].woken, 0);
	cache_fill_drop(cache, e, T0);
	assert_all_woken(ws, 5, true);
	assert_int_equal(e->state, CACHE_READY);
	assert_true(TAILQ_EMPTY(&e->waiters));
	/* a later end of another fill does not wake them again */
	put(cache, "q", T0 + 1);
	put(cache, "other", T0 + 1);
	for (int i = 0; i < 5; i++)
		assert_int_equal(ws[i].woken, 1);
	cache_free(cache);
}

static void test_woken_waiter_finds_the_answer_ready(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct test_waiter ws[2];
	struct answer a;
	build_answer(&a, 1, "v");
	struct cache_entry *e = fill_with_waiters(cache, "q", ws, 2);
	for (int i = 0; i < 2; i++) {
		ws[i].cache = cache;
		ws[i].key = "q";
		ws[i].now = T0;
		ws[i].seen = CACHE_FOUND_MISS;
	}
	capture(cache, e, &a);
	cache_fill_drop(cache, e, T0);
	assert_all_woken(ws, 2, true);
	assert_int_equal(ws[0].seen, CACHE_FOUND_READY);
	assert_int_equal(ws[1].seen, CACHE_FOUND_READY);
	cache_free(cache);
}

static void test_woken_waiter_of_a_failed_fill_finds_a_miss(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct test_waiter ws[1];
	struct cache_entry *e = fill_with_waiters(cache, "q", ws, 1);
	ws[0].cache = cache;
	ws[0].key = "q";
	ws[0].now = T0;
	ws[0].seen = CACHE_FOUND_READY;
	cache_fill_fail(e);
	cache_fill_drop(cache, e, T0);
	assert_all_woken(ws, 1, false);
	assert_int_equal(ws[0].seen, CACHE_FOUND_MISS);    /* free to start its own fill */
	cache_free(cache);
}

static void test_unwait_removes_one_waiter(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct test_waiter ws[3];
	struct answer a;
	build_answer(&a, 1, "v");
	struct cache_entry *e = fill_with_waiters(cache, "q", ws, 3);
	cache_unwait(&ws[1].w);
	assert_null(ws[1].w.on);
	cache_unwait(&ws[1].w);    /* not waiting: a no-op */
	assert_null(ws[1].w.on);
	assert_ptr_equal(ws[0].w.on, e);
	assert_ptr_equal(ws[2].w.on, e);
	capture(cache, e, &a);
	cache_fill_drop(cache, e, T0);
	assert_int_equal(ws[0].woken, 1);
	assert_int_equal(ws[1].woken, 0);
	assert_int_equal(ws[2].woken, 1);
	assert_true(ws[0].filled);
	assert_true(ws[2].filled);
	cache_free(cache);
}

static void test_unwait_of_every_waiter_then_fill(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct test_waiter ws[2];
	struct cache_entry *e = fill_with_waiters(cache, "q", ws, 2);
	cache_unwait(&ws[0].w);
	cache_unwait(&ws[1].w);
	assert_true(TAILQ_EMPTY(&e->waiters));
	cache_fill_fail(e);
	cache_fill_drop(cache, e, T0);
	assert_int_equal(ws[0].woken + ws[1].woken, 0);
	cache_free(cache);
}

/* ---- several capturers ---- */

static void test_two_capturers_store_when_the_last_drops(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct test_waiter ws[1];
	struct answer a;
	build_answer(&a, 2, "v");
	struct cache_entry *e = fill_with_waiters(cache, "q", ws, 1), *f;
	int refs = e->refs;
	cache_fill_hold(e);
	assert_int_equal(e->refs, refs + 1);
	assert_int_equal(e->fill_refs, 2);
	capture(cache, e, &a);

	cache_fill_drop(cache, e, T0);    /* the first capturer is done */
	assert_int_equal(e->state, CACHE_FILLING);
	assert_int_equal(e->fill_refs, 1);
	assert_int_equal(ws[0].woken, 0);
	assert_int_equal(cache_lookup(cache, K("q"), 1, T0, &f), CACHE_FOUND_FILLING);
	assert_int_equal(cache_stats(cache).entries, 0);

	cache_fill_drop(cache, e, T0 + 5);    /* the last */
	assert_all_woken(ws, 1, true);
	assert_int_equal(cache_lookup(cache, K("q"), 1, T0 + 5, &f), CACHE_FOUND_READY);
	assert_ptr_equal(f, e);
	assert_int_equal(f->expires, T0 + 5 + TTL);
	assert_answer(f, &a);
	cache_entry_release(cache, f);
	assert_int_equal(cache_stats(cache).entries, 1);
	cache_free(cache);
}

static void test_two_capturers_one_fails(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct test_waiter ws[1];
	struct answer a;
	build_answer(&a, 2, "v");
	struct cache_entry *e = fill_with_waiters(cache, "q", ws, 1);
	cache_fill_hold(e);
	capture(cache, e, &a);
	cache_fill_fail(e);
	cache_fill_drop(cache, e, T0);
	assert_int_equal(ws[0].woken, 0);
	cache_fill_drop(cache, e, T0);
	assert_all_woken(ws, 1, false);
	assert_int_equal(find(cache, "q", T0), CACHE_FOUND_MISS);
	cache_free(cache);
}

static void test_unpublished_two_capturers(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct answer a;
	build_answer(&a, 1, "v");
	struct cache_entry *e = cache_fill_begin(cache, K("q"), 1, TTL, false);
	cache_fill_hold(e);
	capture(cache, e, &a);
	cache_fill_drop(cache, e, T0);
	assert_int_equal(find(cache, "q", T0), CACHE_FOUND_MISS);
	cache_fill_drop(cache, e, T0);
	assert_int_equal(find(cache, "q", T0), CACHE_FOUND_READY);
	cache_free(cache);
}

/* ---- refresh (publish = false) ---- */

static void test_refresh_fill_is_not_seen_filling(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct answer a;
	build_answer(&a, 1, "v");
	struct cache_entry *e = cache_fill_begin(cache, K("q"), 1, TTL, false);
	assert_non_null(e);
	assert_false(e->in_table);
	assert_int_equal(find(cache, "q", T0), CACHE_FOUND_MISS);
	capture(cache, e, &a);
	assert_int_equal(find(cache, "q", T0), CACHE_FOUND_MISS);
	cache_fill_drop(cache, e, T0);
	assert_int_equal(find(cache, "q", T0), CACHE_FOUND_READY);    /* stored */
	assert_int_equal(cache_stats(cache).entries, 1);
	cache_free(cache);
}

static void test_refresh_replaces_a_ready_entry_when_stored(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct answer old_a, new_a;
	struct cache_entry *old, *f;
	build_answer(&old_a, 1, "old");
	build_answer(&new_a, 2, "new!");
	put_value(cache, "q", 1, "old", TTL, T0);
	assert_int_equal(cache_lookup(cache, K("q"), 1, T0, &old), CACHE_FOUND_READY);

	struct cache_entry *e = cache_fill_begin(cache, K("q"), 1, TTL, false);
	capture(cache, e, &new_a);
	/* until it is stored, lookups still answer from the old entry */
	assert_int_equal(cache_lookup(cache, K("q"), 1, T0 + 1, &f), CACHE_FOUND_READY);
	assert_ptr_equal(f, old);
	cache_entry_release(cache, f);

	cache_fill_drop(cache, e, T0 + 2);
	assert_int_equal(cache_lookup(cache, K("q"), 1, T0 + 3, &f), CACHE_FOUND_READY);
	assert_ptr_equal(f, e);
	assert_answer(f, &new_a);
	assert_int_equal(f->expires, T0 + 2 + TTL);
	struct cache_stats st = cache_stats(cache);
	assert_int_equal(st.entries, 1);                        /* replaced, not added */
	assert_int_equal(st.bytes, cache_entry_size(f));
	assert_int_equal(st.evictions, 0);
	cache_entry_release(cache, f);

	/* the replaced entry is out of the table but its holder can still read it */
	assert_int_equal(old->state, CACHE_DEAD);
	assert_false(old->in_table);
	assert_answer(old, &old_a);
	cache_entry_release(cache, old);
	cache_free(cache);
}

static void test_failed_refresh_keeps_the_ready_entry(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	put(cache, "q", T0);
	struct cache_entry *e = cache_fill_begin(cache, K("q"), 1, TTL, false);
	cache_fill_fail(e);
	cache_fill_drop(cache, e, T0);
	assert_int_equal(find(cache, "q", T0), CACHE_FOUND_READY);
	assert_int_equal(cache_stats(cache).entries, 1);
	cache_free(cache);
}

static void test_published_fill_keeps_a_fresh_ready_entry_until_stored(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct answer new_a;
	struct cache_entry *f;
	build_answer(&new_a, 1, "new");
	put_value(cache, "q", 1, "old", TTL, T0);
	struct cache_entry *e = cache_fill_begin(cache, K("q"), 1, TTL, true);
	assert_int_equal(cache_lookup(cache, K("q"), 1, T0, &f), CACHE_FOUND_READY);
	assert_true(f != e);
	cache_entry_release(cache, f);
	capture(cache, e, &new_a);
	cache_fill_drop(cache, e, T0 + 1);
	assert_int_equal(cache_lookup(cache, K("q"), 1, T0 + 1, &f), CACHE_FOUND_READY);
	assert_ptr_equal(f, e);
	assert_answer(f, &new_a);
	cache_entry_release(cache, f);
	assert_int_equal(cache_stats(cache).entries, 1);
	cache_free(cache);
}

static void test_refresh_of_an_expired_entry_replaces_it(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	put(cache, "q", T0);
	size_t size = put_size("q");
	struct answer a;
	build_answer(&a, 1, "42");
	struct cache_entry *e = cache_fill_begin(cache, K("q"), 1, TTL, false);
	capture(cache, e, &a);
	cache_fill_drop(cache, e, T0 + TTL + 1);    /* the old one expired meanwhile, never looked up */
	struct cache_stats st = cache_stats(cache);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.bytes, size);
	assert_int_equal(find(cache, "q", T0 + TTL + 2), CACHE_FOUND_READY);
	cache_free(cache);
}

/* ---- LRU eviction ---- */

static void test_eviction_keeps_bytes_under_max_memory(void **state)
{
	size_t size = put_size("k00");
	struct cache *cache = cache_new(5 * size + size / 2, BIG);
	char key[8];
	for (int i = 0; i < 20; i++) {
		snprintf(key, sizeof(key), "k%02d", i);
		put(cache, key, T0 + i);
		struct cache_stats st = cache_stats(cache);
		assert_true(st.bytes <= 5 * size + size / 2);
		assert_int_equal(st.entries, i < 5 ? i + 1 : 5);
		assert_int_equal(st.bytes, st.entries * size);
		assert_int_equal(st.evictions, i < 5 ? 0 : i - 4);
	}
	/* the five most recent stay, the older were evicted oldest first */
	for (int i = 0; i < 20; i++) {
		snprintf(key, sizeof(key), "k%02d", i);
		assert_int_equal(find(cache, key, T0 + 20), i >= 15 ? CACHE_FOUND_READY : CACHE_FOUND_MISS);
	}
	cache_free(cache);
}

static void test_lookup_refreshes_recency(void **state)
{
	size_t size = put_size("a");
	struct cache *cache = cache_new(3 * size, BIG);
	put(cache, "a", T0);
	put(cache, "b", T0);
	put(cache, "c", T0);
	assert_int_equal(find(cache, "a", T0), CACHE_FOUND_READY);    /* a is now the most recent: b the least */
	put(cache, "d", T0);
	assert_int_equal(cache_stats(cache).evictions, 1);
	assert_int_equal(find(cache, "b", T0), CACHE_FOUND_MISS);
	assert_int_equal(find(cache, "a", T0), CACHE_FOUND_READY);
	assert_int_equal(find(cache, "c", T0), CACHE_FOUND_READY);
	assert_int_equal(find(cache, "d", T0), CACHE_FOUND_READY);
	/* recency now a, c, d (oldest first); a FILLING lookup does not count */
	struct cache_entry *e = cache_fill_begin(cache, K("e"), 1, TTL, true);
	assert_int_equal(find(cache, "e", T0), CACHE_FOUND_FILLING);
	cache_fill_fail(e);
	cache_fill_drop(cache, e, T0);
	put(cache, "f", T0);
	assert_int_equal(find(cache, "a", T0), CACHE_FOUND_MISS);
	assert_int_equal(cache_stats(cache).evictions, 2);
	assert_int_equal(cache_stats(cache).entries, 3);
	cache_free(cache);
}

static void test_replacing_an_entry_makes_it_most_recent(void **state)
{
	size_t size = put_size("a");
	struct cache *cache = cache_new(3 * size, BIG);
	put(cache, "a", T0);
	put(cache, "b", T0);
	put(cache, "c", T0);
	put(cache, "a", T0 + 1);    /* a again: replaced, now most recent */
	assert_int_equal(cache_stats(cache).entries, 3);
	assert_int_equal(cache_stats(cache).evictions, 0);
	put(cache, "d", T0 + 1);
	assert_int_equal(find(cache, "b", T0 + 1), CACHE_FOUND_MISS);
	assert_int_equal(find(cache, "a", T0 + 1), CACHE_FOUND_READY);
	cache_free(cache);
}

static void test_eviction_of_a_large_entry_makes_room_for_several(void **state)
{
	size_t size = put_size("a"), big = value_size("big", 40, "0123456789");
	assert_true(big >= 2 * size);
	struct cache *cache = cache_new(big + size, BIG);
	put_value(cache, "big", 40, "0123456789", TTL, T0);
	put(cache, "a", T0);
	assert_int_equal(cache_stats(cache).evictions, 0);
	put(cache, "b", T0);    /* big is the least recent: it goes, and makes room for c too */
	put(cache, "c", T0);
	struct cache_stats st = cache_stats(cache);
	assert_int_equal(st.evictions, 1);
	assert_int_equal(st.entries, 3);
	assert_int_equal(st.bytes, 3 * size);
	assert_int_equal(find(cache, "big", T0), CACHE_FOUND_MISS);
	cache_free(cache);
}

/* ---- references ---- */

static void test_reference_outlives_eviction(void **state)
{
	size_t size = put_size("a");
	struct cache *cache = cache_new(2 * size, BIG);
	struct answer a;
	struct cache_entry *e;
	build_answer(&a, 1, "42");
	put(cache, "a", T0);
	assert_int_equal(cache_lookup(cache, K("a"), 1, T0, &e), CACHE_FOUND_READY);
	put(cache, "b", T0);
	put(cache, "c", T0);    /* evicts a: the least recently used */
	assert_int_equal(cache_stats(cache).evictions, 1);
	assert_int_equal(find(cache, "a", T0), CACHE_FOUND_MISS);
	assert_int_equal(e->state, CACHE_DEAD);
	assert_false(e->in_table);
	assert_answer(e, &a);    /* still readable: a hit being written out */
	assert_memory_equal(e->key, "a", 1);
	assert_int_equal(cache_stats(cache).bytes, 2 * size);    /* no longer counted */
	cache_entry_release(cache, e);
	cache_entry_release(cache, NULL);    /* ignored */
	cache_free(cache);
}

static void test_reference_outlives_flush(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct answer a;
	struct cache_entry *e1, *e2;
	build_answer(&a, 1, "42");
	put(cache, "a", T0);
	assert_int_equal(cache_lookup(cache, K("a"), 1, T0, &e1), CACHE_FOUND_READY);
	assert_int_equal(cache_lookup(cache, K("a"), 1, T0, &e2), CACHE_FOUND_READY);    /* two hits */
	assert_ptr_equal(e1, e2);
	assert_int_equal(cache_flush(cache), 1);
	assert_int_equal(e1->state, CACHE_DEAD);
	assert_answer(e1, &a);
	cache_entry_release(cache, e1);
	assert_answer(e2, &a);
	cache_entry_release(cache, e2);
	cache_free(cache);
}

/* ---- flush ---- */

static void test_flush_drops_ready_entries_only(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct test_waiter ws[1];
	struct answer a;
	build_answer(&a, 1, "v");
	put(cache, "a", T0);
	put(cache, "b", T0);
	put(cache, "c", T0);
	struct cache_entry *e = fill_with_waiters(cache, "filling", ws, 1);
	struct cache_entry *r = cache_fill_begin(cache, K("refresh"), 7, TTL, false);

	assert_int_equal(cache_flush(cache), 3);
	struct cache_stats st = cache_stats(cache);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(st.evictions, 0);    /* a flush is not an eviction */
	assert_int_equal(find(cache, "a", T0), CACHE_FOUND_MISS);
	assert_int_equal(find(cache, "filling", T0), CACHE_FOUND_FILLING);    /* fills go on */
	assert_int_equal(ws[0].woken, 0);

	capture(cache, e, &a);
	cache_fill_drop(cache, e, T0);
	capture(cache, r, &a);
	cache_fill_drop(cache, r, T0);
	assert_all_woken(ws, 1, true);
	assert_int_equal(find(cache, "filling", T0), CACHE_FOUND_READY);
	assert_int_equal(find(cache, "refresh", T0), CACHE_FOUND_READY);
	assert_int_equal(cache_stats(cache).entries, 2);
	assert_int_equal(cache_flush(cache), 2);
	assert_int_equal(cache_flush(cache), 0);
	cache_free(cache);
}

/* ---- configure ---- */

static void test_configure_shrinking_evicts_least_recent(void **state)
{
	size_t size = put_size("a");
	struct cache *cache = cache_new(BIG, BIG);
	const char *keys[] = { "a", "b", "c", "d", "e" };
	for (int i = 0; i < 5; i++)
		put(cache, keys[i], T0);
	assert_int_equal(find(cache, "a", T0), CACHE_FOUND_READY);    /* order now b c d e a */
	cache_configure(cache, 2 * size + size / 2, BIG);
	struct cache_stats st = cache_stats(cache);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.bytes, 2 * size);
	assert_int_equal(st.evictions, 3);
	assert_int_equal(find(cache, "e", T0), CACHE_FOUND_READY);
	assert_int_equal(find(cache, "a", T0), CACHE_FOUND_READY);
	assert_int_equal(find(cache, "b", T0), CACHE_FOUND_MISS);
	assert_int_equal(find(cache, "c", T0), CACHE_FOUND_MISS);
	assert_int_equal(find(cache, "d", T0), CACHE_FOUND_MISS);

	/* growing evicts nothing; zero evicts everything and stores nothing after */
	cache_configure(cache, BIG, BIG);
	assert_int_equal(cache_stats(cache).entries, 2);
	cache_configure(cache, 0, BIG);
	assert_int_equal(cache_stats(cache).entries, 0);
	assert_int_equal(cache_stats(cache).bytes, 0);
	assert_int_equal(cache_stats(cache).evictions, 5);
	put(cache, "a", T0);
	assert_int_equal(find(cache, "a", T0), CACHE_FOUND_MISS);
	assert_int_equal(cache_stats(cache).entries, 0);
	cache_free(cache);
}

/* ---- accounting ---- */

/* A record (a statement's description, issue 14 item 8): READY at once, found, packed,
 * counted in bytes but not in entries, replaced under its key, dropped by a flush. */
static void test_a_record_is_stored_at_once_and_counted_in_bytes_only(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	static const uint8_t rd[] = { 'T', 0, 0, 0, 6, 0, 0 }, pd[] = { 't', 0, 0, 0, 6, 0, 0 };
	struct cache_entry *d;
	assert_true(cache_put_record(cache, K("stmt"), 4, TTL, T0, rd, sizeof(rd), pd, sizeof(pd)));
	assert_int_equal(cache_lookup(cache, K("stmt"), 4, T0 + 1, &d), CACHE_FOUND_READY);
	assert_true(d->record);
	assert_true(d->packed);
	assert_memory_equal(d->rowdesc, rd, sizeof(rd));
	assert_memory_equal(d->rows, pd, sizeof(pd));
	assert_int_equal(d->expires, T0 + TTL);
	struct cache_stats st = cache_stats(cache);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, cache_entry_size(d));
	cache_entry_release(cache, d);
	assert_true(cache_put_record(cache, K("stmt"), 4, TTL, T0 + 2, NULL, 0, pd, sizeof(pd)));
	assert_int_equal(cache_lookup(cache, K("stmt"), 4, T0 + 3, &d), CACHE_FOUND_READY);
	assert_null(d->rowdesc);
	cache_entry_release(cache, d);
	put(cache, "a", T0);
	assert_int_equal(cache_stats(cache).entries, 1);
	assert_int_equal(cache_flush(cache), 1);    /* answers dropped; the record went too */
	assert_int_equal(cache_stats(cache).bytes, 0);
	assert_int_equal(find(cache, "stmt", T0 + 4), CACHE_FOUND_MISS);
	/* larger than max_entry: not stored */
	cache_configure(cache, BIG, 4);
	assert_false(cache_put_record(cache, K("stmt"), 4, TTL, T0, rd, sizeof(rd), NULL, 0));
	cache_free(cache);
}


static void test_bytes_are_the_sum_of_ready_entry_sizes(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	char key[48], value[64];
	struct cache_entry *held[8];
	size_t sum = 0;
	for (int i = 0; i < 8; i++) {
		snprintf(key, sizeof(key), "key-%.*s", i * 3 + 1, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
		snprintf(value, sizeof(value), "%.*s", i * 5 + 1, "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv");
		put_value(cache, key, (uint32_t)i + 1, value, TTL, T0);
	}
	/* a FILLING entry and a refresh in flight are not counted */
	struct answer a;
	build_answer(&a, 4, "not counted");
	struct cache_entry *f1 = cache_fill_begin(cache, K("filling"), 7, TTL, true);
	struct cache_entry *f2 = cache_fill_begin(cache, K("refresh"), 7, TTL, false);
	capture(cache, f1, &a);
	capture(cache, f2, &a);

	for (int i = 0; i < 8; i++) {
		snprintf(key, sizeof(key), "key-%.*s", i * 3 + 1, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
		assert_int_equal(cache_lookup(cache, K(key), strlen(key), T0, &held[i]), CACHE_FOUND_READY);
		size_t size = cache_entry_size(held[i]);
		/* what malloc holds: two chunks (the struct; key and answer in one block), each the
		 * bytes asked plus an 8-byte header rounded up to 16 (issue 14, item 9) */
		size_t block = held[i]->key_len + held[i]->rowdesc_len + held[i]->rows_len + 1;
		assert_true(held[i]->packed);
		assert_ptr_equal(held[i]->rows, held[i]->key + held[i]->key_len + held[i]->rowdesc_len);
		assert_int_equal(size, ((sizeof(struct cache_entry) + 8 + 15) & ~(size_t)15) + ((block + 8 + 15) & ~(size_t)15));
		assert_true(size >= sizeof(struct cache_entry) + block + 16);
		sum += size;
	}
	struct cache_stats st = cache_stats(cache);
	assert_int_equal(st.entries, 8);
	assert_int_equal(st.bytes, sum);

	/* storing the two fills adds exactly their sizes */
	cache_fill_drop(cache, f1, T0);
	cache_fill_drop(cache, f2, T0);
	struct cache_entry *g;
	assert_int_equal(cache_lookup(cache, K("filling"), 7, T0, &g), CACHE_FOUND_READY);
	sum += cache_entry_size(g);
	cache_entry_release(cache, g);
	assert_int_equal(cache_lookup(cache, K("refresh"), 7, T0, &g), CACHE_FOUND_READY);
	sum += cache_entry_size(g);
	cache_entry_release(cache, g);
	assert_int_equal(cache_stats(cache).bytes, sum);

	/* expiring, flushing: back to zero, held references notwithstanding */
	size_t f1_size = cache_entry_size(f1);    /* f1 is freed when it expires */
	assert_int_equal(find(cache, "filling", T0 + TTL), CACHE_FOUND_MISS);
	sum -= f1_size;
	assert_int_equal(cache_stats(cache).bytes, sum);
	assert_int_equal(cache_flush(cache), 9);    /* the eight and "refresh" */
	assert_int_equal(cache_stats(cache).bytes, 0);
	assert_int_equal(cache_stats(cache).entries, 0);
	for (int i = 0; i < 8; i++)
		cache_entry_release(cache, held[i]);
	cache_free(cache);
}

/* ---- counters ---- */

static void test_hit_and_miss_counters(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	put(cache, "a", T0);
	/* lookups count nothing */
	assert_int_equal(find(cache, "a", T0), CACHE_FOUND_READY);
	assert_int_equal(find(cache, "b", T0), CACHE_FOUND_MISS);
	assert_int_equal(cache_stats(cache).hits, 0);
	assert_int_equal(cache_stats(cache).misses, 0);
	for (int i = 0; i < 3; i++)
		cache_note_hit(cache);
	for (int i = 0; i < 5; i++)
		cache_note_miss(cache);
	struct cache_stats st = cache_stats(cache);
	assert_int_equal(st.hits, 3);
	assert_int_equal(st.misses, 5);
	/* flush and reconfiguration keep them */
	cache_flush(cache);
	cache_configure(cache, 0, 0);
	st = cache_stats(cache);
	assert_int_equal(st.hits, 3);
	assert_int_equal(st.misses, 5);
	cache_free(cache);
}

/* ---- scale ---- */

static void test_many_keys_grow_the_table(void **state)
{
	enum { N = 10000 };
	struct cache *cache = cache_new(BIG, BIG);
	char key[32];
	struct cache_entry *filling[100];
	/* FILLING entries are in the table too while it grows */
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "filling-%d", i);
		filling[i] = cache_fill_begin(cache, K(key), strlen(key), TTL, true);
		assert_non_null(filling[i]);
	}
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "SELECT ai(%d)", i);
		put(cache, key, T0);
	}
	struct cache_stats st = cache_stats(cache);
	assert_int_equal(st.entries, N);
	assert_int_equal(st.evictions, 0);
	for (int i = 0; i < N; i++) {
		struct cache_entry *e;
		snprintf(key, sizeof(key), "SELECT ai(%d)", i);
		assert_int_equal(cache_lookup(cache, K(key), strlen(key), T0, &e), CACHE_FOUND_READY);
		assert_int_equal(e->key_len, strlen(key));
		assert_memory_equal(e->key, key, strlen(key));
		cache_entry_release(cache, e);
	}
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "filling-%d", i);
		assert_int_equal(find(cache, key, T0), CACHE_FOUND_FILLING);
	}
	assert_int_equal(find(cache, "SELECT ai(10000)", T0), CACHE_FOUND_MISS);

	/* half of them expire (by lookup), the rest are still found */
	for (int i = 0; i < N; i += 2) {
		snprintf(key, sizeof(key), "SELECT ai(%d)", i);
		assert_int_equal(find(cache, key, T0 + TTL), CACHE_FOUND_MISS);
	}
	assert_int_equal(cache_stats(cache).entries, N / 2);
	for (int i = 0; i < 100; i++) {
		cache_fill_fail(filling[i]);
		cache_fill_drop(cache, filling[i], T0);
	}
	assert_int_equal(cache_flush(cache), N / 2);
	cache_free(cache);
}

/* ---- free ---- */

static void test_free_with_fills_in_flight_and_waiters(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct test_waiter ws[2];
	put(cache, "a", T0);
	fill_with_waiters(cache, "q", ws, 2);    /* its owner goes away with the cache */
	cache_free(cache);
	assert_int_equal(ws[0].woken + ws[1].woken, 0);    /* not woken */
	assert_null(ws[0].w.on);
	assert_null(ws[1].w.on);
	cache_free(NULL);
}

/* ---- keys (ai/cache_proto.h) ---- */

/* A key as cache_proto.h lays it out, written byte by byte: the reference. */
struct refkey {
	uint8_t b[4096];
	size_t n;
};

static void ref_bytes(struct refkey *r, const void *p, size_t n)
{
	assert_true(r->n + n <= sizeof(r->b));
	if (n > 0)    /* p may be NULL when n is 0 (memcpy's arguments must not be) */
		memcpy(r->b + r->n, p, n);
	r->n += n;
}

static void ref_u32(struct refkey *r, uint32_t v)
{
	r->n += put_u32(r->b + r->n, v);
}

static void ref_u16(struct refkey *r, uint16_t v)
{
	r->n += put_u16(r->b + r->n, v);
}

static void ref_str(struct refkey *r, const char *s)
{
	ref_u32(r, (uint32_t)strlen(s));
	ref_bytes(r, s, strlen(s));
}

/* The owner's fields, then the statement part of text with text[cut_from..cut_to) left out. */
static void ref_head(struct refkey *r, const struct cache_key_owner *o, const char *text, size_t cut_from,
                     size_t cut_to, uint16_t n_types, const uint8_t *types)
{
	r->n = 0;
	ref_str(r, o->database);
	ref_str(r, o->user);
	for (int i = 0; i < o->n_vars; i++)
		ref_str(r, o->vars[i] ? o->vars[i] : "");
	ref_bytes(r, &o->settings_hash, sizeof(o->settings_hash));
	ref_u32(r, (uint32_t)(strlen(text) - (cut_to - cut_from)));
	ref_bytes(r, text, cut_from);
	ref_bytes(r, text + cut_to, strlen(text) - cut_to);
	ref_u16(r, n_types);
	ref_bytes(r, types, (size_t)n_types * 4);
}

/* The simple Query key of text (comment at cut_from..cut_to) for owner o, after skip junk bytes in k. */
static void check_query_key(const struct cache_key_owner *o, const char *text, size_t cut_from, size_t cut_to,
                            size_t skip)
{
	struct ai_tags tags;
	memset(&tags, 0, sizeof(tags));
	tags.comment_start = cut_from;
	tags.comment_end = cut_to;
	struct refkey r;
	ref_head(&r, o, text, cut_from, cut_to, 0, NULL);
	ref_u16(&r, 0);    /* no parameters */
	ref_u16(&r, 0);    /* text results */
	struct msgbuf k;
	msg_init(&k);
	for (size_t i = 0; i < skip; i++)
		msg_add_byte(&k, 'j');
	assert_true(cache_key_query_text(&k, o, text, strlen(text), &tags));
	assert_int_equal(k.len, skip + r.n);
	assert_memory_equal(k.data + skip, r.b, r.n);
	msg_free(&k);
}

#define QTEXT "SELECT answer FROM llm_cache WHERE k = 42 /*ai_cache='lookup'*/"
#define QCUT_FROM 42
#define QCUT_TO (sizeof(QTEXT) - 1)

static void test_query_key_is_its_documented_layout(void **state)
{
	char *vars[] = { "UTF8", NULL, "ISO, MDY", "on", "a-much-longer-application-name-value" };
	struct cache_key_owner o = { .database = "bench", .user = "bench-user", .vars = vars, .n_vars = 5,
	                             .vars_gen = 3, .settings_hash = 0x0123456789abcdefULL };
	check_query_key(&o, QTEXT, QCUT_FROM, QCUT_TO, 0);
	check_query_key(&o, QTEXT, 0, 0, 0);                /* no comment to leave out */
	check_query_key(&o, QTEXT, QCUT_FROM, QCUT_TO, 200); /* past the msgbuf's inline room: field by field */
	check_query_key(&o, QTEXT, QCUT_FROM, QCUT_TO, 252);
	check_query_key(&o, "", 0, 0, 0);
	o.n_vars = 0;
	check_query_key(&o, QTEXT, QCUT_FROM, QCUT_TO, 0);
}

static void test_query_key_of_long_fields(void **state)
{
	char big[600];
	memset(big, 'v', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	char *vars[] = { "UTF8", big };
	struct cache_key_owner o = { .database = "db", .user = "u", .vars = vars, .n_vars = 2 };
	check_query_key(&o, QTEXT, QCUT_FROM, QCUT_TO, 0);
	vars[1] = "short";
	char text[1200];
	memset(text, 's', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	check_query_key(&o, text, 10, 20, 0);    /* a statement longer than the inline room */
}

static void test_key_memo_gives_the_key_its_fields_give(void **state)
{
	struct cache_key_memo *memo = NULL;
	char *vars[] = { "UTF8", "ISO, MDY" };
	char db[] = "bench";
	struct cache_key_owner o = { .database = db, .user = "bench-user", .vars = vars, .n_vars = 2,
	                             .vars_gen = 5, .settings_hash = 77, .memo = &memo };
	check_query_key(&o, QTEXT, QCUT_FROM, QCUT_TO, 0);
	assert_non_null(memo);                                 /* kept */
	check_query_key(&o, QTEXT, QCUT_FROM, QCUT_TO, 0);    /* from it */
	check_query_key(&o, "SELECT 2", 0, 0, 250);            /* from it, past the room */

	char *other[] = { "LATIN1", "ISO, MDY" };    /* a change of values takes a new gen (varcache.h) */
	o.vars = other;
	o.vars_gen = 6;
	check_query_key(&o, QTEXT, QCUT_FROM, QCUT_TO, 0);
	check_query_key(&o, QTEXT, QCUT_FROM, QCUT_TO, 0);
	o.settings_hash = 78;
	check_query_key(&o, QTEXT, QCUT_FROM, QCUT_TO, 0);
	o.n_vars = 1;                                 /* track_extra_parameters reloaded */
	check_query_key(&o, QTEXT, QCUT_FROM, QCUT_TO, 0);
	char big[400];
	memset(big, 'b', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	o.database = big;                             /* another owner: its own fields, a larger memo */
	check_query_key(&o, QTEXT, QCUT_FROM, QCUT_TO, 0);
	check_query_key(&o, QTEXT, QCUT_FROM, QCUT_TO, 0);
	o.database = db;
	check_query_key(&o, QTEXT, QCUT_FROM, QCUT_TO, 0);
	cache_key_memo_free(memo);
	cache_key_memo_free(NULL);
}

/* Bind body: unnamed portal and statement, n_formats codes, values (NULL: SQL NULL), n_results codes. */
static size_t bind_body(uint8_t *p, int16_t n_formats, const int16_t *formats, int n_params, const char *const *values,
                        int16_t n_results, const int16_t *results)
{
	size_t n = 0;
	p[n++] = 0;
	p[n++] = 0;
	n += put_u16(p + n, (uint16_t)n_formats);
	for (int i = 0; i < n_formats; i++)
		n += put_u16(p + n, (uint16_t)formats[i]);
	n += put_u16(p + n, (uint16_t)n_params);
	for (int i = 0; i < n_params; i++) {
		if (!values[i]) {
			n += put_u32(p + n, 0xffffffffu);
			continue;
		}
		n += put_u32(p + n, (uint32_t)strlen(values[i]));
		memcpy(p + n, values[i], strlen(values[i]));
		n += strlen(values[i]);
	}
	n += put_u16(p + n, (uint16_t)n_results);
	for (int i = 0; i < n_results; i++)
		n += put_u16(p + n, (uint16_t)results[i]);
	return n;
}

static void check_bind_keys(const struct cache_key_owner *o, size_t skip)
{
	static const char text[] = "SELECT answer FROM llm_cache WHERE k = $1 /*ai_cache='lookup'*/";
	static const uint8_t types[4] = { 0, 0, 0, 23 };
	char big[700];
	memset(big, 'p', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	struct ai_tags tags;
	memset(&tags, 0, sizeof(tags));
	tags.comment_start = 42;
	tags.comment_end = sizeof(text) - 1;
	struct cache_stmt *st = cache_stmt_new(text, strlen(text), &tags, types, 1);
	assert_non_null(st);
	struct refkey r, head;
	ref_head(&head, o, text, 42, sizeof(text) - 1, 1, types);

	/* the statement's key: the head, then -1 */
	r = head;
	ref_u16(&r, 0xffff);
	struct msgbuf k;
	msg_init(&k);
	for (size_t i = 0; i < skip; i++)
		msg_add_byte(&k, 'j');
	assert_true(cache_key_statement(&k, o, st));
	assert_int_equal(k.len, skip + r.n);
	assert_memory_equal(k.data + skip, r.b, r.n);
	msg_free(&k);

	/* Binds: values with their formats; "no codes" and "all text" results are one key */
	const char *v1[] = { "42" }, *vnull[] = { NULL }, *vbig[] = { big };
	static const int16_t text_fmt[] = { 0 }, bin_fmt[] = { 1 };
	struct {
		int16_t n_formats;
		const int16_t *formats;
		const char *const *values;
		int16_t n_results;
		const int16_t *results;
		int16_t want_format, want_results;
	} cases[] = {
		{ 0, NULL, v1, 0, NULL, 0, 0 },
		{ 1, text_fmt, v1, 1, text_fmt, 0, 0 },
		{ 1, bin_fmt, v1, 0, NULL, 1, 0 },
		{ 0, NULL, vnull, 0, NULL, 0, 0 },
		{ 0, NULL, vbig, 0, NULL, 0, 0 },
		{ 0, NULL, v1, 1, bin_fmt, 0, 1 },
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		uint8_t body[1024];
		size_t len = bind_body(body, cases[c].n_formats, cases[c].formats, 1, cases[c].values, cases[c].n_results,
		                       cases[c].results);
		r = head;
		ref_u16(&r, 1);
		ref_u16(&r, (uint16_t)cases[c].want_format);
		const char *v = cases[c].values[0];
		ref_u32(&r, v ? (uint32_t)strlen(v) : 0xffffffffu);
		if (v)
			ref_bytes(&r, v, strlen(v));
		ref_u16(&r, (uint16_t)cases[c].want_results);
		if (cases[c].want_results)
			ref_u16(&r, 1);
		msg_init(&k);
		for (size_t i = 0; i < skip; i++)
			msg_add_byte(&k, 'j');
		assert_true(cache_key_bind(&k, o, st, body, len));
		assert_int_equal(k.len, skip + r.n);
		assert_memory_equal(k.data + skip, r.b, r.n);
		msg_free(&k);
	}
	free(st);
}

static void test_statement_and_bind_keys_are_their_documented_layout(void **state)
{
	char *vars[] = { "UTF8", NULL, "Europe/Paris" };
	struct cache_key_memo *memo = NULL;
	struct cache_key_owner o = { .database = "bench", .user = "bench-user", .vars = vars, .n_vars = 3,
	                             .vars_gen = 9, .settings_hash = 4242 };
	for (size_t skip = 0; skip < 256; skip += 23)
		check_bind_keys(&o, skip);
	o.memo = &memo;
	check_bind_keys(&o, 0);
	check_bind_keys(&o, 0);
	check_bind_keys(&o, 240);
	cache_key_memo_free(memo);
}

static void test_keys_of_every_length_are_told_apart(void **state)
{
	struct cache *cache = cache_new(BIG, BIG);
	struct answer a;
	build_answer(&a, 1, "x");
	uint8_t key[80];
	/* every length from 0, and each key of a length differing from the others in one byte only */
	for (size_t len = 0; len <= sizeof(key); len++)
		for (size_t at = 0; at < len || (len == 0 && at == 0); at++) {
			memset(key, 'k', sizeof(key));
			if (len)
				key[at] = 'K';
			struct cache_entry *e = cache_fill_begin(cache, key, len, TTL, true);
			capture(cache, e, &a);
			assert_true(cache_fill_drop(cache, e, T0));
			if (!len)
				break;
		}
	for (size_t len = 0; len <= sizeof(key); len++) {
		struct cache_entry *f;
		memset(key, 'k', sizeof(key));
		/* all 'k': stored only as the empty key */
		assert_int_equal(cache_lookup(cache, key, len, T0, &f), len ? CACHE_FOUND_MISS : CACHE_FOUND_READY);
		cache_entry_release(cache, f);
		for (size_t at = 0; at < len; at++) {
			memset(key, 'k', sizeof(key));
			key[at] = 'K';
			assert_int_equal(cache_lookup(cache, key, len, T0, &f), CACHE_FOUND_READY);
			assert_int_equal(f->key_len, len);
			assert_memory_equal(f->key, key, len);
			cache_entry_release(cache, f);
		}
	}
	cache_free(cache);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lookup_misses_on_an_empty_cache),
		cmocka_unit_test(test_published_fill_is_found_filling_without_a_reference),
		cmocka_unit_test(test_fill_with_rows_is_ready_and_found),
		cmocka_unit_test(test_rows_may_arrive_in_pieces),
		cmocka_unit_test(test_keys_are_bytes),
		cmocka_unit_test(test_fill_copies_the_key),
		cmocka_unit_test(test_entry_expires_when_now_reaches_expires),
		cmocka_unit_test(test_zero_ttl_is_never_found),
		cmocka_unit_test(test_expired_entry_held_reference_stays_readable),
		cmocka_unit_test(test_empty_result_is_not_stored),
		cmocka_unit_test(test_incomplete_fill_is_not_stored),
		cmocka_unit_test(test_failed_fill_is_not_stored),
		cmocka_unit_test(test_second_row_description_is_not_stored),
		cmocka_unit_test(test_rows_past_max_entry_are_not_stored),
		cmocka_unit_test(test_row_description_past_max_entry_is_not_stored),
		cmocka_unit_test(test_answer_of_exactly_max_entry_is_stored),
		cmocka_unit_test(test_max_entry_shrunk_during_a_fill_is_not_stored),
		cmocka_unit_test(test_entry_larger_than_max_memory_is_not_stored),
		cmocka_unit_test(test_waiters_are_woken_filled_once_each),
		cmocka_unit_test(test_woken_waiter_finds_the_answer_ready),
		cmocka_unit_test(test_woken_waiter_of_a_failed_fill_finds_a_miss),
		cmocka_unit_test(test_unwait_removes_one_waiter),
		cmocka_unit_test(test_unwait_of_every_waiter_then_fill),
		cmocka_unit_test(test_two_capturers_store_when_the_last_drops),
		cmocka_unit_test(test_two_capturers_one_fails),
		cmocka_unit_test(test_unpublished_two_capturers),
		cmocka_unit_test(test_refresh_fill_is_not_seen_filling),
		cmocka_unit_test(test_refresh_replaces_a_ready_entry_when_stored),
		cmocka_unit_test(test_failed_refresh_keeps_the_ready_entry),
		cmocka_unit_test(test_published_fill_keeps_a_fresh_ready_entry_until_stored),
		cmocka_unit_test(test_refresh_of_an_expired_entry_replaces_it),
		cmocka_unit_test(test_eviction_keeps_bytes_under_max_memory),
		cmocka_unit_test(test_lookup_refreshes_recency),
		cmocka_unit_test(test_replacing_an_entry_makes_it_most_recent),
		cmocka_unit_test(test_eviction_of_a_large_entry_makes_room_for_several),
		cmocka_unit_test(test_reference_outlives_eviction),
		cmocka_unit_test(test_reference_outlives_flush),
		cmocka_unit_test(test_flush_drops_ready_entries_only),
		cmocka_unit_test(test_configure_shrinking_evicts_least_recent),
		cmocka_unit_test(test_bytes_are_the_sum_of_ready_entry_sizes),
		cmocka_unit_test(test_a_record_is_stored_at_once_and_counted_in_bytes_only),
		cmocka_unit_test(test_hit_and_miss_counters),
		cmocka_unit_test(test_many_keys_grow_the_table),
		cmocka_unit_test(test_free_with_fills_in_flight_and_waiters),
		cmocka_unit_test(test_query_key_is_its_documented_layout),
		cmocka_unit_test(test_query_key_of_long_fields),
		cmocka_unit_test(test_key_memo_gives_the_key_its_fields_give),
		cmocka_unit_test(test_statement_and_bind_keys_are_their_documented_layout),
		cmocka_unit_test(test_keys_of_every_length_are_told_apart),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
