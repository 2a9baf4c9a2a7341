/* SPDX-License-Identifier: PostgreSQL */
/*
 * varcache.h - the session parameters pgsluice tracks per client and per
 * server (client_encoding, DateStyle, TimeZone, IntervalStyle,
 * standard_conforming_strings, application_name, track_extra_parameters), so
 * that a client sees its own values on whichever server it is given.
 */
#ifndef SLUICE_VARCACHE_H
#define SLUICE_VARCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VARCACHE_MAX 16

struct varcache {
	/* VARCACHE_MAX values, each NULL (unknown / not set) or an interned text: a vector
	 * shared by every cache with the same values, read only (varcache.c). NULL (a
	 * zeroed cache) holds no values as the empty vector does: read through
	 * varcache_get; a client's is never NULL (varcache_init at accept). */
	char **values;
	/* Names the content: a change takes a new number, a copy takes the
	 * source's. Equal numbers mean equal values (0: all unset). */
	uint64_t gen;
};

/*
 * Configure the tracked names: the six built in plus the comma list extra
 * (track_extra_parameters). Process-wide; call at start and on reload.
 */
void varcache_set_tracked(const char *extra);

/* Index of name among the tracked parameters (case-insensitive), or -1. */
int varcache_index(const char *name);

/* Number of tracked parameters and the canonical name of one. */
int varcache_count(void);
const char *varcache_name(int index);

/* Start vc with no values (the empty vector, so that vc->values[i] may be read). */
void varcache_init(struct varcache *vc);

/* The value of tracked parameter index (0 .. varcache_count() - 1), or NULL. */
static inline const char *varcache_get(const struct varcache *vc, int index)
{
	return vc->values ? vc->values[index] : NULL;
}

/* Set value for name if tracked (the shared copy of its text); returns false if not tracked or on OOM. */
bool varcache_set(struct varcache *vc, const char *name, const char *value);

/* Let go of all values (the last holder of a text frees it). */
void varcache_clear(struct varcache *vc);

/*
 * Append to buf (size bytes) the statements that bring server to the values
 * client wants ("SET name='value';" with quotes doubled), and "RESET name;"
 * for a parameter the client has no value for but the server has (one that
 * PostgreSQL does not report, set there for another client: this client
 * must see the default, as on a connection of its own). Returns the number
 * of statements, or -1 when buf is too small.
 */
int varcache_apply_sql(const struct varcache *client, const struct varcache *server,
                       char *buf, size_t size);

/*
 * Make dst hold src's values of every tracked parameter (dst shares src's
 * vector; a value src lacks goes): a server after the statements of
 * varcache_apply_sql ran. Always true (kept for its callers: nothing is
 * allocated).
 */
bool varcache_copy(struct varcache *dst, const struct varcache *src);

/* Copy every value from src that dst lacks (client defaults from the server's); on OOM dst keeps what it had. */
void varcache_fill_missing(struct varcache *dst, const struct varcache *src);

#endif
