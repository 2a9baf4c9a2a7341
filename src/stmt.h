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

/* What a Describe or Close names (protocol-message-formats.html, Describe and Close). */
#define STMT_TARGET_STATEMENT 'S'
#define STMT_TARGET_PORTAL    'P'

/* A Describe or Close: a prepared statement or a portal, by name. */
struct stmt_target {
	uint8_t what;                  /* STMT_TARGET_STATEMENT or STMT_TARGET_PORTAL (any byte the client sent) */
	const char *name;              /* "" for the unnamed one; points into the body */
};

/*
 * Read the Describe or Close body[0..len) (after the length word) into *t.
 * False when malformed or when body holds only the start of the message
 * (a name without its NUL): *t is then not to be used.
 */
bool stmt_read_target(const uint8_t *body, size_t len, struct stmt_target *t);

/* What kind of statement a client's message is, for the middleware's decision (ai/decide.h). */
enum stmt_kind {
	STMT_QUERY,              /* a simple Query */
	STMT_PARSE,              /* a Parse whose statement is or was tagged */
	STMT_BIND,               /* a Bind of the unnamed portal to a cache lookup statement */
	STMT_DESCRIBE_STATEMENT, /* a Describe of a cache lookup statement */
	STMT_DESCRIBE_PORTAL,    /* a Describe of the unnamed portal bound to a hit or a fill */
	STMT_CLOSE_PORTAL,       /* a Close of that portal */
	STMT_EXECUTE,            /* an Execute (or, ahead, a one-statement batch's Execute) */
};

struct ai_tags;
struct cache_stmt;

/*
 * A client's statement as the middleware sees it: every pointer borrowed
 * from the client's input or its kept state, valid for one ai_decide call.
 */
struct stmt {
	enum stmt_kind kind;
	const struct ai_tags *tags;      /* its tags (a Query's comment, its statement's or portal's); NULL: untagged.
	                                    STMT_PARSE: kept tags (ai/client_state.h), of which the statement takes a reference */
	const char *text;                /* STMT_QUERY, STMT_PARSE: the query text, text_len bytes (no NUL counted) */
	size_t text_len;
	const char *name;                /* STMT_PARSE: the statement's name, "" for the unnamed one */
	const uint8_t *types;            /* STMT_PARSE: n_types parameter type OIDs in network order */
	uint16_t n_types;
	bool deferred;                   /* STMT_PARSE: the server may refuse it: its tags count from its ParseComplete */
	const struct cache_stmt *cstmt;  /* STMT_BIND, STMT_DESCRIBE_STATEMENT: the statement's cache key part */
	const uint8_t *params;           /* STMT_BIND: the Bind's body from its portal name on (parameters as sent) */
	size_t params_len;               /* bytes */
	bool describe_follows;           /* STMT_BIND: the batch may ask for the portal's RowDescription */
	bool described;                  /* STMT_BIND ahead: the batch describes the statement already */
	const char *portal;              /* STMT_EXECUTE: "" for the unnamed portal */
	int32_t max_rows;                /* STMT_EXECUTE: 0 for all rows */
	bool ahead;                      /* decided with the batch's first message, no server yet (ai/decide.h) */
};

#endif
