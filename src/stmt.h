/* SPDX-License-Identifier: PostgreSQL */
/*
 * stmt.h - a client's message read once into its fields with proto.c's
 * bounds-checked reader (protocol-message-formats.html): names, text and
 * parameter types as slices of the message, never copied, never hand-decoded.
 */
#ifndef SLUICE_STMT_H
#define SLUICE_STMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The length word of a message header hdr[0..5) (type byte, int32 length): the body's bytes + 4. */
uint32_t stmt_header_len(const uint8_t hdr[5]);

/* A Parse: statement name, query text, parameter type OIDs. */
struct stmt_parse {
	const char *name;              /* "" for the unnamed statement */
	const char *query;
	size_t query_len;              /* strlen(query) */
	const uint8_t *types;          /* n_types int32 OIDs in network order; NULL when none */
	uint16_t n_types;
};

/*
 * Read the Parse body[0..len) (after the length word) into *p, whose
 * pointers point into body. False when malformed (a missing NUL, a negative
 * or short type list): *p is then not to be used.
 */
bool stmt_read_parse(const uint8_t *body, size_t len, struct stmt_parse *p);

/* An Execute: portal name and row limit. */
struct stmt_execute {
	const char *portal;            /* "" for the unnamed portal */
	int32_t max_rows;              /* 0: all rows */
};

/*
 * Read the Execute body[0..len) into *e (portal points into body). False
 * when malformed, or when body holds only the start of a longer message
 * (a portal name without its NUL and row limit).
 */
bool stmt_read_execute(const uint8_t *body, size_t len, struct stmt_execute *e);

#endif
