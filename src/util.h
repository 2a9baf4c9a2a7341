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

/* Set TCP_NODELAY and SO_KEEPALIVE (when keepalive) on a TCP socket; unix sockets are left alone. */
void socket_tune(int fd, bool keepalive);

#endif
