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

#endif
