/* SPDX-License-Identifier: PostgreSQL */
/*
 * sessvars.h - a session's settings record under transaction pooling: every
 * GUC a client SET (or RESET, set_config(), startup options) that PostgreSQL
 * does not report, the statement text that recognizes them, and the batched
 * SET/RESET text that makes a server's settings match a client's. Pure: no I/O.
 */
#ifndef SLUICE_SESSVARS_H
#define SLUICE_SESSVARS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bounds of one client's record (docs/pooling.md): beyond them a SET gets 54000. */
#define SESSVARS_MAX_COUNT 100
#define SESSVARS_MAX_BYTES 65536

/* One setting: name folded to lower case; value as the server takes it back. */
struct sessvar {
	char *name;       /* owned */
	char *value;      /* owned: literal ? the string (set_config) : the SET's value list as written */
	bool literal;
};

struct sessvars {
	struct sessvar *items;   /* owned, sorted by name */
	size_t n, cap;
	size_t bytes;            /* names + values, for SESSVARS_MAX_BYTES */
	/* Names the content: a change takes a new number, a copy takes the
	 * source's; equal numbers mean equal records (0: empty). */
	uint64_t gen;
	uint64_t hash;           /* of the content (0: empty), for the completion cache key */
};

/* What a statement does to the record (sessvars_parse). */
enum sessvar_kind {
	SESSVAR_NONE,        /* not a SET/RESET/set_config statement */
	SESSVAR_SET,         /* SET [SESSION] name {=|TO} value[, ...]: name, value (as written) */
	SESSVAR_SET_STRING,  /* SELECT set_config('name', 'value', false): name, value (the string) */
	SESSVAR_RESET,       /* RESET name, SET name {=|TO} DEFAULT: name */
	SESSVAR_RESET_ALL,   /* RESET ALL */
	SESSVAR_LOCAL,       /* SET LOCAL, set_config(..., true), SET TRANSACTION ...: lasts the transaction */
	SESSVAR_REPORTED,    /* a parameter PostgreSQL reports (varcache.c follows it) */
	SESSVAR_UNKNOWN,     /* anything else starting with SET/RESET (SET XML OPTION, SESSION CHARACTERISTICS, ...) */
};

/* A recognized statement; name and value are owned (free with sessvar_op_free). */
struct sessvar_op {
	enum sessvar_kind kind;
	char *name;
	char *value;
	/* SET_STRING parsed by sessvars_parse_template: set_config's name and
	 * value are parameter $n (1-based; name/value then NULL), 0 a literal */
	uint16_t name_param, value_param;
};

/*
 * Classify the simple Query text[0..len) (need not be NUL-terminated): one
 * statement (blanks, comments and one final ';' aside). For SET, SET_STRING
 * and RESET fills op->name (folded) and op->value (malloc'd; value NULL for
 * RESET). Values: 'strings' ('' a quote, no backslash), numbers, bare words,
 * "quoted identifiers"; anything else (E'', $$, expressions) is UNKNOWN.
 * Returns op->kind; on OOM SESSVAR_UNKNOWN. Source: sql-set.html,
 * sql-reset.html, functions-admin.html (set_config).
 */
enum sessvar_kind sessvars_parse(const char *text, size_t len, struct sessvar_op *op);

/*
 * As sessvars_parse, for the text of a Parse (extended protocol): set_config's
 * name and value may also be parameters, $n or $n::text (op->name_param,
 * op->value_param). sessvars_bind makes the op of one Bind of it.
 */
enum sessvar_kind sessvars_parse_template(const char *text, size_t len, struct sessvar_op *op);

/*
 * The op one Bind of the statement tmpl makes: its parameters values[i]
 * (lens[i] bytes, text format; NULL for SQL NULL) for $1..$n_params. For
 * SET_STRING the name is folded and checked as sessvars_parse does. Returns
 * out->kind: SET, SET_STRING, RESET or RESET_ALL when followed, else
 * SESSVAR_UNKNOWN (a parameter missing or NULL, a name pgsluice does not
 * record, out of memory) or LOCAL/REPORTED/NONE as the name makes it.
 * out's strings are the caller's (sessvar_op_free).
 */
enum sessvar_kind sessvars_bind(const struct sessvar_op *tmpl, uint16_t n_params, const char *const *values,
                                const uint32_t *lens, struct sessvar_op *out);

/* A copy of op (malloc'd, strings too), or NULL on OOM. */
struct sessvar_op *sessvar_op_dup(const struct sessvar_op *op);

/* Free op's strings (op itself is the caller's). */
void sessvar_op_free(struct sessvar_op *op);

/*
 * Set name to value (copies; name folded to lower case). Returns 0, -1 on
 * OOM, -2 when the record would pass SESSVARS_MAX_COUNT/BYTES (unchanged).
 */
int sessvars_put(struct sessvars *rec, const char *name, const char *value, bool literal);

/* Remove name; true when it was there. */
bool sessvars_del(struct sessvars *rec, const char *name);

/* The setting of name, or NULL. */
const struct sessvar *sessvars_get(const struct sessvars *rec, const char *name);

/* Make dst a copy of src (gen and hash too). False on OOM (dst then empty, new gen). */
bool sessvars_copy(struct sessvars *dst, const struct sessvars *src);

/* Free everything; rec becomes empty (gen 0). */
void sessvars_clear(struct sessvars *rec);

/* Do a and b hold the same settings (names, values and their form)? */
bool sessvars_equal(const struct sessvars *a, const struct sessvars *b);

/* Give rec a fresh gen that no other record has (its content is in doubt). */
void sessvars_invalidate(struct sessvars *rec);

/*
 * Apply op (SET, SET_STRING, RESET, RESET_ALL) to rec; startup gives what
 * RESET goes back to (the client's startup options). Returns as sessvars_put.
 */
int sessvars_apply(struct sessvars *rec, const struct sessvars *startup, const struct sessvar_op *op);

/*
 * Would op fit in rec (SESSVARS_MAX_COUNT/BYTES)? For refusing a SET before
 * it reaches the server.
 */
bool sessvars_fits(const struct sessvars *rec, const struct sessvar_op *op);

/* The two settings RESET ALL leaves alone (GUC_NO_RESET_ALL, sql-reset.html). */
#define SESSVAR_ROLE "role"
#define SESSVAR_SESSION_AUTHORIZATION "session_authorization"

/* What resets the two above (session_authorization first: it resets the role too). */
#define SESSVARS_RESET_ROLES_SQL "RESET SESSION AUTHORIZATION;RESET ROLE;"

/* What every reset that uses RESET ALL sends: the two above reset too (3 statements). */
#define SESSVARS_RESET_ALL_SQL "RESET ALL;" SESSVARS_RESET_ROLES_SQL

/* Is name one RESET ALL leaves alone (role, session_authorization)? */
bool sessvars_no_reset_all(const char *name);

/*
 * The statements that make a server holding have hold want: "RESET name;"
 * for a name only have has, "SET name TO value;" or "SELECT
 * pg_catalog.set_config('name', E'value', false);" for a differing one.
 * With reset_all, SESSVARS_RESET_ALL_SQL first and every setting of want.
 * session_authorization and role go last, in that order ("SET SESSION
 * AUTHORIZATION x;", "SET ROLE x;", "RESET ROLE;"...): a change of the first
 * resets the second in PostgreSQL. Returns a
 * malloc'd string ("" when equal) or NULL on OOM; *count gets the number of
 * statements.
 */
char *sessvars_diff_sql(const struct sessvars *want, const struct sessvars *have, bool reset_all, int *count);

#endif
