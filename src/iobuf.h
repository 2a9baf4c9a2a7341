/* SPDX-License-Identifier: PostgreSQL */
/*
 * iobuf.h - one contiguous byte buffer of a connection (its input or its
 * output): bytes are read from the front and added at the back, so a whole
 * message is always one pointer. Owns the memory; an empty buffer gives its
 * block back to a small free list, so an idle connection holds no buffer.
 */
#ifndef SLUICE_IOBUF_H
#define SLUICE_IOBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The size of the blocks kept on the free list (bytes), as PgBouncer's pkt_buf default. */
#define IOBUF_BLOCK 4096

struct iobuf;

/* Called when bytes are added to an empty buffer (the connection's output queues itself). */
typedef void (*iobuf_fill_fn)(struct iobuf *b);

struct iobuf {
	uint8_t *data;        /* NULL while empty and unallocated */
	size_t start, end;    /* bytes [start, end) are the content */
	size_t cap;           /* bytes allocated at data */
	iobuf_fill_fn on_fill; /* NULL: none */
};

/* Bytes held. */
static inline size_t iobuf_len(const struct iobuf *b)
{
	return b->end - b->start;
}

/* The first byte held; valid until the next call that adds to, drains or grows b. */
static inline const uint8_t *iobuf_data(const struct iobuf *b)
{
	return b->data + b->start;
}

/*
 * Drop the first n bytes (n <= iobuf_len). An emptied buffer gives its
 * memory back (a standard block to the free list, a larger one to malloc).
 */
void iobuf_drain(struct iobuf *b, size_t n);

/* Append n bytes from p. Returns false, adding nothing, when out of memory. */
bool iobuf_add(struct iobuf *b, const void *p, size_t n);

/* iobuf_move's cases that need more than a copy: see iobuf_move. */
bool iobuf_move_slow(struct iobuf *dst, struct iobuf *src, size_t n);

/*
 * Move the first n bytes of src (n <= iobuf_len(src)) to the end of dst.
 * False when out of memory. Inline for the usual relay of one message of
 * several: dst already holds bytes (no fill callback is due) and has room,
 * and src keeps some (it is not emptied, so gives no block back); the rest
 * (handing a whole block over, growing dst, the fill callback) is out of line.
 */
static inline bool iobuf_move(struct iobuf *dst, struct iobuf *src, size_t n)
{
	if (dst->start != dst->end && dst->cap - dst->end >= n && n < src->end - src->start) {
		memcpy(dst->data + dst->end, src->data + src->start, n);
		dst->end += n;
		src->start += n;
		return true;
	}
	return iobuf_move_slow(dst, src, n);
}

/*
 * Room for at least want more bytes at the end: compacts or grows b.
 * Returns the first free byte and sets *avail to the free bytes there (>=
 * want), or NULL when out of memory. Bytes written there count after
 * iobuf_commit().
 */
uint8_t *iobuf_space(struct iobuf *b, size_t want, size_t *avail);

/* Count n bytes written at iobuf_space()'s pointer as content. */
void iobuf_commit(struct iobuf *b, size_t n);

/* Free b's memory (content is dropped). b can be used again. */
void iobuf_free(struct iobuf *b);

/*
 * Find the first "needle" (nlen bytes) in bytes [from, from + n) of b.
 * Returns its offset from the front of b, or -1.
 */
long iobuf_find(const struct iobuf *b, size_t from, size_t n, const void *needle, size_t nlen);

/*
 * Copy up to n bytes starting off bytes from the front of b to dst.
 * Returns the bytes copied (fewer when b holds less).
 */
size_t iobuf_copyout(const struct iobuf *b, size_t off, void *dst, size_t n);

/* Free the blocks kept on the free list (at exit, for leak checkers). */
void iobuf_release_cache(void);

#endif
