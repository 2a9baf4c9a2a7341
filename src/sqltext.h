/* SPDX-License-Identifier: PostgreSQL */
/*
 * sqltext.h - building the text of parameters pgsluice sends on its own
 * connections: array literals ({"a","b"}) and JSON objects, with quoting
 * (arrays.html, "Array Value Input"; RFC 8259 strings).
 */
#ifndef SLUICE_SQLTEXT_H
#define SLUICE_SQLTEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A growing NUL-terminated text; after an allocation failure every add is a no-op and failed is set. */
struct sqltext {
	char *s;          /* owned; NULL until the first add */
	size_t len, cap;
	bool failed;
};

/* Append n bytes of s. */
void sqltext_add(struct sqltext *t, const char *s, size_t n);
/* Append the C string s. */
void sqltext_str(struct sqltext *t, const char *s);
/* Append s double-quoted with '"' and '\' backslash-escaped: an array element or a JSON string of printable text. */
void sqltext_quoted(struct sqltext *t, const char *s);
/* Append ',' unless t is empty or ends with '{' (the next element of a list). */
void sqltext_sep(struct sqltext *t);
/* Free the text; t can be reused. */
void sqltext_free(struct sqltext *t);
/*
 * Make room for n more bytes (and the NUL) past t->len, growing t->s;
 * false (and failed set) when out of memory or t already failed.
 */
bool sqltext_grow(struct sqltext *t, size_t n);

/*
 * A one-dimensional array parameter in PostgreSQL's binary format, for
 * PQsendQueryParams with format 1 (array_recv and ReadArrayBinary in
 * src/backend/utils/adt/arrayfuncs.c): int32 number of dimensions, int32
 * flags (1: has NULLs), the element type's OID, per dimension int32 size and
 * lower bound; then per element an int32 length (-1: NULL) and the
 * element's binary form (its typreceive: text as bytes, int8 and float8
 * big-endian, uuid 16 bytes, bool 1 byte). All integers big-endian. Building
 * it costs no quoting and no number formatting, unlike the text form; the
 * server still checks every text element's encoding (pq_getmsgtext).
 */
struct sqlarray {
	struct sqltext t;      /* header (SQLARRAY_HEADER_BYTES, written by sqlarray_finish), elements; no NUL */
	uint32_t elem_oid;     /* pg_type OID of the elements; must be the parameter's element type */
	uint32_t n;            /* elements added */
	bool has_null;
};

#define SQLARRAY_HEADER_BYTES 20

/* Element type OIDs (src/include/catalog/pg_type.dat; fixed since PostgreSQL 7). */
#define SQL_OID_BOOL   16
#define SQL_OID_INT8   20
#define SQL_OID_TEXT   25
#define SQL_OID_FLOAT8 701
#define SQL_OID_UUID   2950

/*
 * Start an empty array of elem_oid elements in a. reuse false: a is taken
 * as uninitialised (nothing freed); reuse true: a was initialised before,
 * its elements are dropped and its buffer kept (freed if it failed).
 */
void sqlarray_init(struct sqlarray *a, uint32_t elem_oid, bool reuse);
/*
 * Write the header and return the parameter's bytes (owned by a) and their
 * count in *len; NULL when out of memory at any add. An array of no
 * elements is sent with 0 dimensions, as PostgreSQL writes '{}'.
 */
const char *sqlarray_finish(struct sqlarray *a, int *len);
/* Free a's bytes; a can be initialised again. */
void sqlarray_free(struct sqlarray *a);

static inline void sqlarray_put_be32(char *p, uint32_t v)
{
	v = __builtin_bswap32(v);
	memcpy(p, &v, 4);
}

/* Append an element of n bytes (its binary form); inline as a writer adds many. */
static inline void sqlarray_add(struct sqlarray *a, const void *data, size_t n)
{
	struct sqltext *t = &a->t;
	if (t->len + 4 + n + 1 > t->cap && !sqltext_grow(t, 4 + n))
		return;
	sqlarray_put_be32(t->s + t->len, (uint32_t)n);
	memcpy(t->s + t->len + 4, data, n);
	t->len += 4 + n;
	a->n++;
}

/* Append a NULL element. */
static inline void sqlarray_add_null(struct sqlarray *a)
{
	struct sqltext *t = &a->t;
	if (t->len + 4 + 1 > t->cap && !sqltext_grow(t, 4))
		return;
	sqlarray_put_be32(t->s + t->len, UINT32_MAX);
	t->len += 4;
	a->n++;
	a->has_null = true;
}

/* Append an int8 element (or the bits of a float8 one, see sqlarray_add_f64). */
static inline void sqlarray_add_i64(struct sqlarray *a, int64_t v)
{
	uint64_t be = __builtin_bswap64((uint64_t)v);
	sqlarray_add(a, &be, 8);
}

/* Append a float8 element (float8recv: the IEEE 754 bits as a big-endian int8). */
static inline void sqlarray_add_f64(struct sqlarray *a, double v)
{
	int64_t bits;
	memcpy(&bits, &v, 8);
	sqlarray_add_i64(a, bits);
}

/* Append a bool element (boolrecv: one byte, nonzero is true). */
static inline void sqlarray_add_bool(struct sqlarray *a, bool v)
{
	char b = v ? 1 : 0;
	sqlarray_add(a, &b, 1);
}

#endif
