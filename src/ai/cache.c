/* SPDX-License-Identifier: PostgreSQL */
/*
 * cache.c - see cache.h. A chained hash table that doubles as it fills, an
 * LRU list of READY entries, and reference counts so that answers being
 * written out and fills in flight outlive eviction.
 */
#include "ai/cache.h"

#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "util.h"

#define INITIAL_BUCKETS 256

struct cache {
	struct cache_entry **buckets;
	size_t n_buckets;              /* a power of two */
	size_t in_table;               /* entries in the table (READY and FILLING) */
	TAILQ_HEAD(cache_lru_head, cache_entry) lru; /* READY entries in the table, most recent first */
	size_t max_memory, max_entry;  /* bytes */
	struct cache_stats stats;
	uint64_t freed;                /* bytes of entries dropped since memory was last given back */
	uint64_t seed[2];              /* random per cache, so that keys cannot be chosen to collide */
};

/* a*b as 128 bits, its halves XORed: the mixing step of key_hash. */
static inline uint64_t mum(uint64_t a, uint64_t b)
{
#if defined(__SIZEOF_INT128__)
	unsigned __int128 r = (unsigned __int128)a * b;
	return (uint64_t)r ^ (uint64_t)(r >> 64);
#else
	uint64_t al = (uint32_t)a, ah = a >> 32, bl = (uint32_t)b, bh = b >> 32;
	uint64_t ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
	uint64_t mid = (ll >> 32) + (uint32_t)lh + (uint32_t)hl;
	uint64_t lo = (mid << 32) | (uint32_t)ll;
	uint64_t hi = hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
	return lo ^ hi;
#endif
}

/* Unaligned reads in host byte order: the hash needs only that the same bytes give the same value. */
static inline uint64_t rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static inline uint64_t rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

/*
 * The table hash of a key: 16 bytes per step, each a 64x64->128-bit
 * multiply (the structure of wyhash, public domain), about 8 instructions
 * per 16 bytes where FNV-1a took 5 per byte (a key is some 150 bytes and
 * every lookup hashes one). Seeded with the cache's random words, which
 * enter every step, so that a client cannot choose statement texts whose
 * keys share a bucket. A table hash, not a digest: equal keys are still
 * compared byte by byte.
 */
static uint64_t key_hash(const struct cache *cache, const uint8_t *p, size_t len)
{
	const uint64_t s0 = cache->seed[0], s1 = cache->seed[1];
	uint64_t h = s0, a, b;
	if (len <= 16) {
		if (len >= 4) {
			size_t mid = (len >> 3) << 2;    /* 0 or 4: the reads overlap for 4..7 bytes */
			a = (rd32(p) << 32) | rd32(p + mid);
			b = (rd32(p + len - 4) << 32) | rd32(p + len - 4 - mid);
		} else if (len > 0) {
			a = ((uint64_t)p[0] << 16) | ((uint64_t)p[len >> 1] << 8) | p[len - 1];
			b = 0;
		} else {
			a = b = 0;
		}
	} else {
		size_t left = len;
		while (left > 16) {
			h = mum(rd64(p) ^ s1, rd64(p + 8) ^ h);
			p += 16;
			left -= 16;
		}
		a = rd64(p + left - 16);    /* the last 16 bytes, overlapping what was hashed */
		b = rd64(p + left - 8);
	}
	return mum(s1 ^ len, mum(a ^ s1, b ^ h));
}

struct cache *cache_new(size_t max_memory, size_t max_entry)
{
	struct cache *cache = calloc(1, sizeof(*cache));
	if (!cache)
		return NULL;
	cache->buckets = calloc(INITIAL_BUCKETS, sizeof(*cache->buckets));
	if (!cache->buckets) {
		free(cache);
		return NULL;
	}
	cache->n_buckets = INITIAL_BUCKETS;
	cache->max_memory = max_memory;
	cache->max_entry = max_entry;
	if (RAND_bytes((unsigned char *)cache->seed, sizeof(cache->seed)) != 1) {
		cache->seed[0] = (uint64_t)(uintptr_t)cache * 0x9e3779b97f4a7c15ULL;
		cache->seed[1] = (uint64_t)now_usec() * 0xe7037ed1a0b428dbULL;
	}
	TAILQ_INIT(&cache->lru);
	return cache;
}

/*
 * What malloc really holds for p of n bytes asked (0 for NULL): glibc's
 * chunk for n bytes on a 64-bit system, n plus its 8-byte size word rounded
 * up to 16, at least 32 (malloc/malloc.c, request2size). Computed, not read
 * with malloc_usable_size, so that the count is the same for the same entry.
 */
static size_t alloc_cost(const void *p, size_t n)
{
	if (!p)
		return 0;
	size_t chunk = (n + 8 + 15) & ~(size_t)15;
	return chunk < 32 ? 32 : chunk;
}

size_t cache_entry_size(const struct cache_entry *e)
{
	if (e->packed)
		return alloc_cost(e, sizeof(*e)) + alloc_cost(e->key, e->key_len + e->rowdesc_len + e->rows_len + 1) +
		       alloc_cost(e->stmt_paramdesc, e->stmt_paramdesc_len);
	return alloc_cost(e, sizeof(*e)) + alloc_cost(e->key, e->key_len) + alloc_cost(e->rowdesc, e->rowdesc_len) +
	       alloc_cost(e->rows, e->rows_cap) + alloc_cost(e->stmt_paramdesc, e->stmt_paramdesc_len);
}

static void entry_free(struct cache_entry *e)
{
	free(e->key);
	if (!e->packed) {
		free(e->rowdesc);
		free(e->rows);
	}
	free(e->stmt_paramdesc);
	free(e);
}

/*
 * Give freed memory back to the system once a lot of it was dropped (a
 * flush, a smaller cache_max_memory): glibc keeps freed chunks in its heap
 * otherwise, and RSS would stay at its peak.
 */
static void give_back(struct cache *cache, bool now)
{
	if (!now && cache->freed < cache->max_memory / 4)
		return;
	cache->freed = 0;
#if defined(__GLIBC__)
	malloc_trim(0);
#endif
}

static void entry_unref(struct cache_entry *e)
{
	if (--e->refs <= 0)
		entry_free(e);
}

/* Take e out of the table (and the LRU when READY); the table's reference goes. */
static void table_remove(struct cache *cache, struct cache_entry *e)
{
	if (!e->in_table)
		return;
	struct cache_entry **pp = &cache->buckets[e->hash & (cache->n_buckets - 1)];
	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
	e->hnext = NULL;
	e->in_table = false;
	cache->in_table--;
	if (e->state == CACHE_READY) {
		TAILQ_REMOVE(&cache->lru, e, lru);
		if (!e->record)
			cache->stats.entries--;
		cache->stats.bytes -= e->cost;
		cache->freed += e->cost;
		e->state = CACHE_DEAD;
	}
	entry_unref(e);
}

static void table_grow(struct cache *cache)
{
	size_t n = cache->n_buckets * 2;
	struct cache_entry **b = calloc(n, sizeof(*b));
	if (!b)
		return;    /* longer chains, still correct */
	for (size_t i = 0; i < cache->n_buckets; i++) {
		struct cache_entry *e = cache->buckets[i], *next;
		for (; e; e = next) {
			next = e->hnext;
			e->hnext = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	free(cache->buckets);
	cache->buckets = b;
	cache->n_buckets = n;
}

/* Put e in the table; the table takes a reference. */
static void table_insert(struct cache *cache, struct cache_entry *e)
{
	if (cache->in_table >= cache->n_buckets)
		table_grow(cache);
	struct cache_entry **head = &cache->buckets[e->hash & (cache->n_buckets - 1)];
	e->hnext = *head;
	*head = e;
	e->in_table = true;
	e->refs++;
	cache->in_table++;
}

static struct cache_entry *table_find(const struct cache *cache, uint64_t h, const uint8_t *key, size_t len,
                                      enum cache_state state)
{
	for (struct cache_entry *e = cache->buckets[h & (cache->n_buckets - 1)]; e; e = e->hnext)
		if (e->hash == h && e->state == state && e->key_len == len && memcmp(e->key, key, len) == 0)
			return e;
	return NULL;
}

static void evict_to_fit(struct cache *cache)
{
	struct cache_entry *e;
	while (cache->stats.bytes > cache->max_memory && (e = TAILQ_LAST(&cache->lru, cache_lru_head)) != NULL) {
		table_remove(cache, e);
		cache->stats.evictions++;
	}
}

/* Wake every waiter of e (they leave it first, so a wake may wait again elsewhere). */
static void wake_waiters(struct cache_entry *e, bool filled)
{
	struct cache_waiter *w;
	while ((w = TAILQ_FIRST(&e->waiters)) != NULL) {
		TAILQ_REMOVE(&e->waiters, w, link);
		w->on = NULL;
		w->wake(w, filled);
	}
}

void cache_free(struct cache *cache)
{
	if (!cache)
		return;
	for (size_t i = 0; i < cache->n_buckets; i++) {
		struct cache_entry *e = cache->buckets[i], *next;
		for (; e; e = next) {
			next = e->hnext;
			struct cache_waiter *w;
			while ((w = TAILQ_FIRST(&e->waiters)) != NULL) {
				TAILQ_REMOVE(&e->waiters, w, link);
				w->on = NULL;
			}
			entry_free(e);
		}
	}
	free(cache->buckets);
	free(cache);
}

void cache_configure(struct cache *cache, size_t max_memory, size_t max_entry)
{
	cache->max_memory = max_memory;
	cache->max_entry = max_entry;
	evict_to_fit(cache);
	give_back(cache, false);
}

enum cache_find cache_lookup(struct cache *cache, const uint8_t *key, size_t key_len, int64_t now,
                             struct cache_entry **out)
{
	uint64_t h = key_hash(cache, key, key_len);
	*out = NULL;
	struct cache_entry *e = table_find(cache, h, key, key_len, CACHE_READY);
	if (e && now >= e->expires) {
		table_remove(cache, e);
		e = NULL;
	}
	if (e) {
		TAILQ_REMOVE(&cache->lru, e, lru);
		TAILQ_INSERT_HEAD(&cache->lru, e, lru);
		e->refs++;
		*out = e;
		return CACHE_FOUND_READY;
	}
	e = table_find(cache, h, key, key_len, CACHE_FILLING);
	if (e) {
		*out = e;
		return CACHE_FOUND_FILLING;
	}
	return CACHE_FOUND_MISS;
}

struct cache_entry *cache_fill_begin(struct cache *cache, const uint8_t *key, size_t key_len, int64_t ttl,
                                     bool publish)
{
	struct cache_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->key = malloc(key_len ? key_len : 1);
	if (!e->key) {
		free(e);
		return NULL;
	}
	memcpy(e->key, key, key_len);
	e->key_len = key_len;
	e->hash = key_hash(cache, key, key_len);
	e->state = CACHE_FILLING;
	e->refs = 1;
	e->fill_refs = 1;
	e->ttl = ttl;
	TAILQ_INIT(&e->waiters);
	if (publish)
		table_insert(cache, e);
	return e;
}

void cache_fill_hold(struct cache_entry *e)
{
	e->refs++;
	e->fill_refs++;
}

static void drop_answer(struct cache_entry *e)
{
	e->unusable = true;
	free(e->rowdesc);
	free(e->rows);
	e->rowdesc = e->rows = NULL;
	e->rowdesc_len = e->rows_len = e->rows_cap = 0;
}

bool cache_fill_rowdesc(struct cache *cache, struct cache_entry *e, const uint8_t *msg, size_t len)
{
	if (e->unusable)
		return false;
	if (e->rowdesc || len > cache->max_entry) {
		drop_answer(e);    /* two result sets: a multi-statement Query */
		return false;
	}
	e->rowdesc = malloc(len);
	if (!e->rowdesc) {
		drop_answer(e);
		return false;
	}
	memcpy(e->rowdesc, msg, len);
	e->rowdesc_len = len;
	return true;
}

bool cache_fill_rows(struct cache *cache, struct cache_entry *e, const uint8_t *bytes, size_t n)
{
	if (e->unusable)
		return false;
	if (e->rowdesc_len + e->rows_len + n > cache->max_entry) {
		drop_answer(e);
		return false;
	}
	if (e->rows_len + n > e->rows_cap) {
		size_t cap = e->rows_cap ? e->rows_cap : 256;
		while (cap < e->rows_len + n)
			cap *= 2;
		uint8_t *rows = realloc(e->rows, cap);
		if (!rows) {
			drop_answer(e);
			return false;
		}
		e->rows = rows;
		e->rows_cap = cap;
	}
	memcpy(e->rows + e->rows_len, bytes, n);
	e->rows_len += n;
	return true;
}

void cache_fill_fail(struct cache_entry *e)
{
	drop_answer(e);
}

/*
 * Put e's key and answer in one allocation (e->key; rowdesc and rows point
 * into it), so a stored entry is two allocations (its struct, its bytes)
 * and keeps no slack of the fill's growing buffer. The struct itself stays:
 * capturers, waiters and hits hold pointers to it. False when out of memory
 * (e stays as it was).
 */
static bool pack(struct cache_entry *e)
{
	uint8_t *block = malloc(e->key_len + e->rowdesc_len + e->rows_len + 1);
	if (!block)
		return false;
	uint8_t *p = block;
	memcpy(p, e->key, e->key_len);
	p += e->key_len;
	uint8_t *rowdesc = e->rowdesc ? p : NULL;
	if (e->rowdesc_len)
		memcpy(p, e->rowdesc, e->rowdesc_len);
	p += e->rowdesc_len;
	if (e->rows_len)
		memcpy(p, e->rows, e->rows_len);
	if (!e->packed) {
		free(e->key);
		free(e->rowdesc);
		free(e->rows);
	}
	e->key = block;
	e->rowdesc = rowdesc;
	e->rows = p;
	e->rows_cap = e->rows_len;
	e->packed = true;
	return true;
}

/* Put READY entry r (not in the table) in the table and the LRU, replacing any under its key. */
static void publish_ready(struct cache *cache, struct cache_entry *r, int64_t now)
{
	struct cache_entry *old = table_find(cache, r->hash, r->key, r->key_len, CACHE_READY);
	if (old)
		table_remove(cache, old);
	r->state = CACHE_READY;
	r->expires = now + r->ttl;
	r->cost = cache_entry_size(r);
	table_insert(cache, r);
	TAILQ_INSERT_HEAD(&cache->lru, r, lru);
	if (!r->record)
		cache->stats.entries++;
	cache->stats.bytes += r->cost;
	evict_to_fit(cache);
}

/* The answer of FILLING e is whole and worth keeping: make it READY in the table. */
static void store(struct cache *cache, struct cache_entry *e, int64_t now)
{
	if (!pack(e) && e->rows_cap > e->rows_len) {
		uint8_t *rows = realloc(e->rows, e->rows_len);
		if (rows) {
			e->rows = rows;
			e->rows_cap = e->rows_len;
		}
	}
	table_remove(cache, e);    /* leaves as FILLING, comes back READY */
	publish_ready(cache, e, now);
}

bool cache_put_record(struct cache *cache, const uint8_t *key, size_t key_len, int64_t ttl, int64_t now,
                      const uint8_t *rowdesc, size_t rowdesc_len, const uint8_t *rows, size_t rows_len)
{
	if (rowdesc_len + rows_len > cache->max_entry)
		return false;
	struct cache_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return false;
	e->key = (uint8_t *)key;    /* borrowed until packed */
	e->key_len = key_len;
	e->rowdesc = (uint8_t *)rowdesc;
	e->rowdesc_len = rowdesc ? rowdesc_len : 0;
	e->rows = (uint8_t *)rows;
	e->rows_len = rows_len;
	e->packed = true;           /* nothing of its own to free when packing */
	if (!pack(e)) {
		free(e);
		return false;
	}
	e->hash = key_hash(cache, e->key, key_len);
	e->complete = true;
	e->record = true;
	e->ttl = ttl;
	TAILQ_INIT(&e->waiters);
	if (cache_entry_size(e) > cache->max_memory) {
		entry_free(e);
		return false;
	}
	publish_ready(cache, e, now);
	return true;
}

bool cache_fill_drop(struct cache *cache, struct cache_entry *e, int64_t now)
{
	if (--e->fill_refs > 0 || e->state != CACHE_FILLING) {
		entry_unref(e);
		return false;
	}
	bool keep = e->complete && !e->unusable && e->n_rows > 0 &&
	            e->rowdesc_len + e->rows_len <= cache->max_entry &&
	            cache_entry_size(e) <= cache->max_memory;
	e->refs++;    /* held across the table changes and the wakes */
	if (keep) {
		store(cache, e, now);
	} else {
		table_remove(cache, e);
		e->state = CACHE_DEAD;
	}
	wake_waiters(e, keep);
	e->refs--;        /* the guard: the capturer's reference below may be the last */
	entry_unref(e);
	return keep;
}

void cache_entry_release(struct cache *cache, struct cache_entry *e)
{
	(void)cache;
	if (e)
		entry_unref(e);
}

void cache_entry_hold(struct cache_entry *e)
{
	e->refs++;
}

void cache_wait(struct cache_entry *e, struct cache_waiter *w)
{
	w->on = e;
	TAILQ_INSERT_TAIL(&e->waiters, w, link);
}

void cache_unwait(struct cache_waiter *w)
{
	if (!w->on)
		return;
	TAILQ_REMOVE(&w->on->waiters, w, link);
	w->on = NULL;
}

uint64_t cache_flush(struct cache *cache)
{
	uint64_t n = 0;
	struct cache_entry *e;
	while ((e = TAILQ_FIRST(&cache->lru)) != NULL) {
		n += !e->record;
		table_remove(cache, e);
	}
	give_back(cache, true);
	return n;
}

void cache_note_hit(struct cache *cache)
{
	cache->stats.hits++;
}

void cache_note_miss(struct cache *cache)
{
	cache->stats.misses++;
}

struct cache_stats cache_stats(const struct cache *cache)
{
	return cache->stats;
}
