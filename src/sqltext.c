/* SPDX-License-Identifier: PostgreSQL */
/* sqltext.c - see sqltext.h. */
#include "sqltext.h"

#include <stdlib.h>
#include <string.h>

bool sqltext_grow(struct sqltext *t, size_t n)
{
	if (t->failed)
		return false;
	if (t->len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 256;
		while (cap < t->len + n + 1)
			cap *= 2;
		char *p = realloc(t->s, cap);
		if (!p) {
			t->failed = true;
			return false;
		}
		t->s = p;
		t->cap = cap;
	}
	return true;
}

void sqltext_add(struct sqltext *t, const char *s, size_t n)
{
	if (!sqltext_grow(t, n))
		return;
	memcpy(t->s + t->len, s, n);
	t->len += n;
	t->s[t->len] = '\0';
}

void sqltext_str(struct sqltext *t, const char *s)
{
	sqltext_add(t, s, strlen(s));
}

void sqltext_quoted(struct sqltext *t, const char *s)
{
	sqltext_add(t, "\"", 1);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			sqltext_add(t, "\\", 1);
		sqltext_add(t, s, 1);
	}
	sqltext_add(t, "\"", 1);
}

void sqltext_sep(struct sqltext *t)
{
	if (t->len > 0 && t->s[t->len - 1] != '{')
		sqltext_add(t, ",", 1);
}

void sqltext_free(struct sqltext *t)
{
	free(t->s);
	memset(t, 0, sizeof(*t));
}

void sqlarray_init(struct sqlarray *a, uint32_t elem_oid, bool reuse)
{
	if (reuse && !a->t.failed)
		a->t.len = 0;
	else if (reuse)
		sqltext_free(&a->t);
	else
		memset(&a->t, 0, sizeof(a->t));
	a->elem_oid = elem_oid;
	a->n = 0;
	a->has_null = false;
	if (sqltext_grow(&a->t, SQLARRAY_HEADER_BYTES))
		a->t.len = SQLARRAY_HEADER_BYTES;    /* filled in by sqlarray_finish */
}

const char *sqlarray_finish(struct sqlarray *a, int *len)
{
	char *h = a->t.s;
	if (a->t.failed || !h || a->t.len > INT32_MAX)
		return NULL;
	if (a->n == 0) {
		/* no dimensions, so no size and lower bound: a 12-byte '{}' */
		sqlarray_put_be32(h, 0);
		sqlarray_put_be32(h + 4, 0);
		sqlarray_put_be32(h + 8, a->elem_oid);
		*len = 12;
		return h;
	}
	sqlarray_put_be32(h, 1);
	sqlarray_put_be32(h + 4, a->has_null ? 1 : 0);
	sqlarray_put_be32(h + 8, a->elem_oid);
	sqlarray_put_be32(h + 12, a->n);
	sqlarray_put_be32(h + 16, 1);
	*len = (int)a->t.len;
	return h;
}

void sqlarray_free(struct sqlarray *a)
{
	sqltext_free(&a->t);
	a->n = 0;
	a->has_null = false;
}
