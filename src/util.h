/* SPDX-License-Identifier: PostgreSQL */
/*
 * util.h - small helpers every module shares: the monotonic clock, bounded
 * string copies and socket options. Nothing here knows about PostgreSQL.
 */
#ifndef SLUICE_UTIL_H
#define SLUICE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Monotonic time in microseconds (CLOCK_MONOTONIC); for timeouts only. */
usec_t now_usec(void);

/*
 * Between now_hold() and now_release() (nested: counted), now_usec() returns
 * the clock read at the outermost now_hold(): one clock read per event
 * callback of the data path instead of several per message (connio.c).
 * Never hold across a wait.
 */
void now_hold(void);
void now_release(void);

/* Wall-clock time in microseconds since the epoch; for logs and stats. */
usec_t wall_usec(void);

/* Copy src into dst of size bytes, always NUL-terminated; returns dst. */
char *str_copy(char *dst, const char *src, size_t size);

/* strdup that returns NULL for a NULL argument. */
char *str_dup_or_null(const char *s);

/* True when name is in the comma/space separated list (case-insensitive). */
bool str_list_contains(const char *list, const char *name);

/* Add ev (a timer, often EV_PERSIST) to fire every `every` microseconds. Returns false on failure. */
struct event;
bool timer_add_usec(struct event *ev, usec_t every);

/*
 * Set TCP_NODELAY and cfg's keepalive keys on a TCP socket, as PgBouncer's
 * tune_socket does (tcp(7)): SO_KEEPALIVE with tcp_keepidle, tcp_keepintvl
 * and tcp_keepcnt when tcp_keepalive is on; tcp_user_timeout and
 * tcp_socket_buffer (bytes, both SO_SNDBUF and SO_RCVBUF) always; a key
 * at 0 leaves the OS default. Unix sockets are left alone. An option the
 * kernel refuses is skipped: the connection works without it.
 */
void socket_tune(int fd, const struct sluice_config *cfg);

/* The 64-bit FNV-1a offset basis: the state to start a hash from
 * (draft-eastlake-fnv, "FNV Constants"; isthe.com/chongo/tech/comp/fnv). */
#define HASH_FNV1A_BASIS 14695981039346656037ULL

/*
 * Feed len bytes of data into a 64-bit FNV-1a hash whose state is h, and
 * return the new state: start with HASH_FNV1A_BASIS (XORed with a random
 * per-process seed where clients choose the keys, so they cannot make them
 * collide), and pass the result on to hash the next piece of a key. For
 * in-memory hash tables only: a fast spread, not a digest nor a stable
 * identifier. data may be NULL when len is 0.
 */
uint64_t hash_fnv1a(uint64_t h, const void *data, size_t len);

/*
 * The next connection id, 1, 2, ...: clients and servers draw from one
 * counter, as PgBouncer's sockets do, so the id column of SHOW CLIENTS,
 * SERVERS and SOCKETS names one connection and KILL_CLIENT takes it.
 */
uint64_t socket_id_next(void);

/* Overwrite a NUL-ended secret (a password) with zeros, then free it (OPENSSL_cleanse). NULL: nothing. */
void free_secret(char *s);

#endif
