/* SPDX-License-Identifier: PostgreSQL */
/* sqltext.c - see sqltext.h. */
#include "sqltext.h"

#include <stdlib.h>
#include <string.h>

void sqltext_add(struct sqltext *t, const char *s, size_t n)
{
	if (t->failed)
		return;
	if (t->len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 256;
		while (cap < t->len + n + 1)
			cap *= 2;
		char *p = realloc(t->s, cap);
		if (!p) {
			t->failed = true;
			return;
		}
		t->s = p;
		t->cap = cap;
	}
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
