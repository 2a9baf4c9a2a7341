/* SPDX-License-Identifier: PostgreSQL */
/*
 * sidechan.h - pgsluice's own connection to PostgreSQL (limits loader, usage
 * writer, schema check): libpq in non-blocking mode, driven by the event
 * loop, one query at a time from a FIFO, reconnecting with backoff.
 */
#ifndef SLUICE_SIDECHAN_H
#define SLUICE_SIDECHAN_H

#include <libpq-fe.h>
#include <stdbool.h>

struct event_base;
struct sidechan;

/*
 * Called once per query: res is the last result of the query (an error
 * result if any statement failed), or NULL when the connection was lost
 * before it completed. res is freed after the call returns: copy what you
 * keep.
 */
typedef void (*sidechan_result_fn)(void *arg, const PGresult *res);

/* Called when the connection comes up (up = true) or goes down. */
typedef void (*sidechan_state_fn)(void *arg, bool up);

/*
 * Start a side channel on base with libpq's keyword/value arrays
 * (NULL-terminated, copied; libpq-connect.html, PQconnectStartParams).
 * name is used in log lines. The connection is attempted at once and
 * retried with backoff from 0.5 s to 30 s while it fails. Returns NULL on OOM.
 */
struct sidechan *sidechan_new(struct event_base *base, const char *name,
                              const char *const *keywords, const char *const *values,
                              sidechan_state_fn state_fn, void *state_arg);

/*
 * Queue sql with n_params text parameters (copied; NULL entries are SQL
 * NULL). Queries queued while the connection is down wait for it, up to
 * max_queued; past that, or on OOM, returns false and fn is not called.
 */
bool sidechan_query(struct sidechan *sc, const char *sql, int n_params, const char *const *params,
                    sidechan_result_fn fn, void *arg);

/*
 * As sidechan_query, with PQsendQueryParams's lengths and formats (both
 * NULL: text parameters, as sidechan_query): params[i] is lengths[i] bytes
 * when formats[i] is 1 (binary), a C string when 0. sql, lengths and
 * formats are copied; params too, unless borrow: then the caller keeps
 * params[i] unchanged until fn is called or sc is freed (a large batch is
 * not copied once more before libpq copies it).
 */
bool sidechan_query_params(struct sidechan *sc, const char *sql, int n_params,
                           const char *const *params, const int *lengths, const int *formats,
                           bool borrow, sidechan_result_fn fn, void *arg);

/*
 * on: when a connection attempt fails or the connection breaks, every query
 * waiting gets its callback with NULL at once instead of waiting for the
 * next attempt (for a client held by the answer, e.g. auth_query).
 */
void sidechan_set_fail_fast(struct sidechan *sc, bool on);

/* True between a failed or lost connection and the next attempt. */
bool sidechan_is_down(const struct sidechan *sc);

/* Why the connection last failed or broke (libpq's message, one line); "" before any failure. */
const char *sidechan_last_error(const struct sidechan *sc);

/* True when connected and ready for queries. */
bool sidechan_is_up(const struct sidechan *sc);

/* Queries waiting or running. */
int sidechan_pending(const struct sidechan *sc);

/*
 * Called for each NotificationResponse the connection receives (after a
 * LISTEN it ran); n is freed after the call returns (libpq-notify.html).
 */
typedef void (*sidechan_notify_fn)(void *arg, const PGnotify *n);

/* Deliver notifications to fn (NULL: drop them, the default). */
void sidechan_set_notify(struct sidechan *sc, sidechan_notify_fn fn, void *arg);

/* Close the connection, call every pending callback with NULL, free sc. */
void sidechan_free(struct sidechan *sc);

#endif
