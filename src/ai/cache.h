/* SPDX-License-Identifier: PostgreSQL */
/*
 * cache.h - the completion cache's store (docs/ai-middleware.md): answers keyed by
 * bytes, their TTL, LRU eviction under cache_max_memory (counted as malloc
 * chunks), and the fills in flight that identical misses wait for; records
 * stored at once (statement descriptions). Pure: no sockets, no clock of its own.
 */
#ifndef SLUICE_AI_CACHE_H
#define SLUICE_AI_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

/*
 * Time: functions take now, monotonic microseconds (util.h now_usec), so
 * tests are deterministic. Not thread-safe: one event loop owns a cache.
 *
 * Life of an entry: cache_fill_begin makes it FILLING; the server's reply is
 * captured into it (cache_fill_rowdesc, cache_fill_rows); cache_fill_finish
 * makes it READY (stored, in the LRU) or DEAD (not storable). A READY entry
 * dies when it expires, is evicted, replaced or flushed. An entry's memory
 * lives while anyone holds a reference (refs), so a hit being written out
 * never reads freed memory even if the entry is evicted meanwhile.
 */

enum cache_state {
	CACHE_FILLING,   /* a server is producing the answer */
	CACHE_READY,     /* stored: answers hits until it expires */
	CACHE_DEAD,      /* out of the table: only held references keep it */
};

struct cache_waiter;

/* Called once when the fill a waiter waits for ends: filled = it is READY now. */
typedef void (*cache_wake_fn)(struct cache_waiter *w, bool filled);

/* Embedded in whoever waits (a client); owned by it. */
struct cache_waiter {
	TAILQ_ENTRY(cache_waiter) link;
	struct cache_entry *on;        /* the FILLING entry waited for; NULL when not waiting */
	cache_wake_fn wake;
};
TAILQ_HEAD(cache_waiters, cache_waiter);

struct cache_entry {
	struct cache_entry *hnext;     /* hash chain (in the table only) */
	TAILQ_ENTRY(cache_entry) lru;  /* READY entries in the table, most recently used first */
	uint64_t hash;
	uint8_t *key;                  /* owned */
	size_t key_len;                /* bytes */
	enum cache_state state;
	bool in_table;                 /* findable by cache_lookup */
	int refs;                      /* references held; freed at 0 */
	int fill_refs;                 /* references that may still capture into it */
	int64_t ttl;                   /* microseconds it lives once READY */
	int64_t expires;               /* monotonic microseconds; READY only */
	/* The answer, as PostgreSQL sent it (whole messages, header included): */
	uint8_t *rowdesc;              /* one RowDescription; NULL when none was captured */
	size_t rowdesc_len;            /* bytes */
	uint8_t *rows;                 /* DataRow messages, then one CommandComplete */
	size_t rows_len, rows_cap;     /* bytes */
	uint32_t n_rows;               /* DataRow messages in rows */
	bool complete;                 /* the CommandComplete was captured */
	bool unusable;                 /* an error, a second result or too large: never stored */
	bool record;                   /* made by cache_put_record: counted in bytes, not in entries */
	bool describes;                /* captures a Describe of a statement (cache_proto.h), never stored itself */
	bool packed;                   /* stored: key, rowdesc and rows share the key's one allocation */
	size_t cost;                   /* READY: bytes of memory it really holds (cache_entry_size) */
	/* A Bind's fill: what describing its statement needs (cache_proto.h cache_fill_statement) */
	uint32_t stmt_key_len;         /* key[0..stmt_key_len) is its statement's part; 0: none */
	uint8_t *stmt_paramdesc;       /* the statement's ParameterDescription message; NULL: unknown; owned */
	size_t stmt_paramdesc_len;     /* bytes */
	struct cache_waiters waiters;  /* identical misses waiting for this fill */
};

struct cache_stats {
	uint64_t entries;              /* READY answers in the table (records not counted) */
	uint64_t bytes;                /* memory READY answers and records hold (cache_entry_size) */
	uint64_t hits, misses;         /* counted by the caller: cache_note_hit/miss */
	uint64_t evictions;            /* READY entries dropped to stay under max_memory */
};

struct cache;

/*
 * A store holding at most max_memory bytes of READY entries (as counted by
 * cache_entry_size), each answer at most max_entry bytes (rowdesc + rows).
 * NULL when out of memory. Freed with cache_free.
 */
struct cache *cache_new(size_t max_memory, size_t max_entry);

/*
 * Free the store and the entries in its table. Release every reference and
 * drop every fill first (clients and servers are freed before the cache):
 * an entry out of the table is freed only by its last reference. Waiters
 * are not woken.
 */
void cache_free(struct cache *cache);

/* New bounds (reload): evicts least recently used entries until within max_memory. */
void cache_configure(struct cache *cache, size_t max_memory, size_t max_entry);

/*
 * Bytes of memory an entry really holds: the malloc chunks of its struct,
 * key and answer (glibc's: the bytes asked plus an 8-byte header, rounded up
 * to 16, at least 32), not just the bytes asked. A stored entry is two
 * allocations: its struct, and its key and answer (packed).
 */
size_t cache_entry_size(const struct cache_entry *e);

/*
 * Store a READY entry under key (copied) right away, replacing any under it:
 * rowdesc[0..rowdesc_len) (may be NULL) and rows[0..rows_len) are copied
 * into one allocation, n_rows of them DataRows. Lives ttl microseconds from
 * now; LRU evicts to fit. For records pgsluice makes itself (a statement's
 * description, cache_proto.h). False when it does not fit or out of memory.
 */
bool cache_put_record(struct cache *cache, const uint8_t *key, size_t key_len, int64_t ttl, int64_t now,
               const uint8_t *rowdesc, size_t rowdesc_len, const uint8_t *rows, size_t rows_len);

enum cache_find {
	CACHE_FOUND_MISS,     /* nothing fresh under the key (an expired entry was dropped) */
	CACHE_FOUND_READY,    /* *out: a fresh READY entry, one reference taken, now most recent */
	CACHE_FOUND_FILLING,  /* *out: the FILLING entry of an identical miss; no reference taken */
};

/*
 * Look key[0..key_len) up at time now. Counts nothing (the caller knows
 * whether it could answer). *out is set as the result says, else NULL.
 */
enum cache_find cache_lookup(struct cache *cache, const uint8_t *key, size_t key_len, int64_t now,
                             struct cache_entry **out);

/*
 * Start filling an answer for key (copied) that lives ttl microseconds once
 * stored. publish: put it in the table now, so identical lookups find it
 * FILLING and may wait (a fresh READY entry under the key stays until the
 * fill replaces it); false for ai_cache='refresh', which replaces the entry
 * only when it is stored. The caller holds one reference and one fill
 * reference. NULL when out of memory.
 */
struct cache_entry *cache_fill_begin(struct cache *cache, const uint8_t *key, size_t key_len,
                                     int64_t ttl, bool publish);

/* Take another reference and fill reference on a FILLING entry e (a second capturer). */
void cache_fill_hold(struct cache_entry *e);

/*
 * Capture the RowDescription message msg[0..len) (whole, header included)
 * into FILLING e; a second one makes e unusable (a multi-statement Query).
 * Returns false when e is unusable now.
 */
bool cache_fill_rowdesc(struct cache *cache, struct cache_entry *e, const uint8_t *msg, size_t len);

/*
 * Append bytes[0..n) of DataRow or CommandComplete messages to FILLING e's
 * rows (a message may arrive in several calls). Past max_entry bytes e
 * becomes unusable and its buffers are freed. Returns false when e is
 * unusable now. The caller counts rows (n_rows) and sets complete.
 */
bool cache_fill_rows(struct cache *cache, struct cache_entry *e, const uint8_t *bytes, size_t n);

/* Mark FILLING e unusable (an ErrorResponse, a suspended portal): it will not be stored. */
void cache_fill_fail(struct cache_entry *e);

/*
 * A capturer of e is done: drop its fill reference and reference. When the
 * last fill reference goes, e is stored if it is complete, usable, has at
 * least one row and fits max_entry (READY at now, expires at now + ttl,
 * replacing any entry under its key, LRU evicting to fit max_memory), else it
 * dies. Either way its waiters are woken (filled says which) and leave it.
 * Returns true when the answer was stored (by this call).
 */
bool cache_fill_drop(struct cache *cache, struct cache_entry *e, int64_t now);

/* Drop a reference from cache_lookup (NULL is ignored). */
void cache_entry_release(struct cache *cache, struct cache_entry *e);

/* Take another reference on e (a hit handed to a second holder). */
void cache_entry_hold(struct cache_entry *e);

/* Make w (not waiting) wait for FILLING e; w->wake must be set. */
void cache_wait(struct cache_entry *e, struct cache_waiter *w);

/* Stop w waiting (its owner goes away); no-op when it is not waiting. */
void cache_unwait(struct cache_waiter *w);

/*
 * Drop every READY entry (CACHE FLUSH). Fills in flight go on. The freed
 * memory is given back to the system (malloc_trim on glibc). Returns entries
 * dropped.
 */
uint64_t cache_flush(struct cache *cache);

/* Count a lookup answered from the cache / sent to PostgreSQL. */
void cache_note_hit(struct cache *cache);
void cache_note_miss(struct cache *cache);

/* The counters and sizes now. */
struct cache_stats cache_stats(const struct cache *cache);

#endif
