/* SPDX-License-Identifier: PostgreSQL */
/*
 * iobuf.c - see iobuf.h. A free list of IOBUF_BLOCK blocks makes the
 * per-transaction "buffer emptied, buffer refilled" cycle a pointer swap
 * instead of free() and malloc().
 */

#include "iobuf.h"

#include <stdlib.h>
#include <string.h>

/* Blocks kept for reuse: 256 kB at most, a burst of connections' worth. */
#define IOBUF_CACHE_MAX 64

static uint8_t *cache[IOBUF_CACHE_MAX];
static int n_cached;

static void give_back(struct iobuf *b)
{
	if (b->cap == IOBUF_BLOCK && n_cached < IOBUF_CACHE_MAX)
		cache[n_cached++] = b->data;
	else
		free(b->data);
	b->data = NULL;
	b->cap = 0;
	b->start = b->end = 0;
}

void iobuf_drain(struct iobuf *b, size_t n)
{
	b->start += n;
	if (b->start == b->end && b->data)
		give_back(b);
}

uint8_t *iobuf_space(struct iobuf *b, size_t want, size_t *avail)
{
	if (!b->data) {
		if (want <= IOBUF_BLOCK && n_cached > 0) {
			b->data = cache[--n_cached];
			b->cap = IOBUF_BLOCK;
		} else {
			size_t cap = want <= IOBUF_BLOCK ? IOBUF_BLOCK : want;
			b->data = malloc(cap);
			if (!b->data)
				return NULL;
			b->cap = cap;
		}
		b->start = b->end = 0;
	} else if (b->cap - b->end < want) {
		size_t len = b->end - b->start;
		if (b->cap - len >= want && b->start > 0) {
			memmove(b->data, b->data + b->start, len);
		} else {
			size_t cap = b->cap * 2;
			while (cap - len < want)
				cap *= 2;
			uint8_t *d;
			if (b->start == 0) {
				d = realloc(b->data, cap);
				if (!d)
					return NULL;
			} else {
				d = malloc(cap);
				if (!d)
					return NULL;
				memcpy(d, b->data + b->start, len);
				free(b->data);   /* never a cached block: it is smaller than cap */
			}
			b->data = d;
			b->cap = cap;
		}
		b->start = 0;
		b->end = len;
	}
	*avail = b->cap - b->end;
	return b->data + b->end;
}

void iobuf_commit(struct iobuf *b, size_t n)
{
	b->end += n;
}

bool iobuf_add(struct iobuf *b, const void *p, size_t n)
{
	if (n == 0)
		return true;
	bool was_empty = b->start == b->end;
	uint8_t *at;
	if (b->cap - b->end >= n) {
		at = b->data + b->end;     /* room at the end: the usual case */
	} else {
		size_t avail;
		if (!(at = iobuf_space(b, n, &avail)))
			return false;
	}
	memcpy(at, p, n);
	b->end += n;
	if (was_empty && b->on_fill)
		b->on_fill(b);
	return true;
}

bool iobuf_move_slow(struct iobuf *dst, struct iobuf *src, size_t n)
{
	if (n > 0 && n == iobuf_len(src) && dst->start == dst->end) {
		/* The usual relay: all that was read goes on. Hand the block over instead of copying it. */
		uint8_t *data = dst->data;
		size_t cap = dst->cap;
		dst->data = src->data;
		dst->cap = src->cap;
		dst->start = src->start;
		dst->end = src->end;
		src->data = data;
		src->cap = cap;
		src->start = src->end = 0;
		if (data)
			give_back(src);
		if (dst->on_fill)
			dst->on_fill(dst);
		return true;
	}
	if (!iobuf_add(dst, iobuf_data(src), n))
		return false;
	iobuf_drain(src, n);
	return true;
}

void iobuf_free(struct iobuf *b)
{
	free(b->data);
	b->data = NULL;
	b->cap = 0;
	b->start = b->end = 0;
}

long iobuf_find(const struct iobuf *b, size_t from, size_t n, const void *needle, size_t nlen)
{
	size_t len = iobuf_len(b);
	if (from >= len)
		return -1;
	if (n > len - from)
		n = len - from;
	const uint8_t *base = iobuf_data(b), *p = base + from, *end = p + n;
	const uint8_t first = *(const uint8_t *)needle;
	/* memchr for the first byte: short needles in short texts, where memmem's set-up dominates */
	while ((size_t)(end - p) >= nlen && (p = memchr(p, first, (size_t)(end - p) - nlen + 1)) != NULL) {
		if (memcmp(p, needle, nlen) == 0)
			return (long)(p - base);
		p++;
	}
	return -1;
}

size_t iobuf_copyout(const struct iobuf *b, size_t off, void *dst, size_t n)
{
	size_t len = iobuf_len(b);
	if (off >= len)
		return 0;
	if (n > len - off)
		n = len - off;
	memcpy(dst, iobuf_data(b) + off, n);
	return n;
}

void iobuf_release_cache(void)
{
	while (n_cached > 0)
		free(cache[--n_cached]);
}
