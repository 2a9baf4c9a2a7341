/* SPDX-License-Identifier: PostgreSQL */
/*
 * janitor.h - the once-a-second housekeeping: client_login_timeout, pool
 * timeouts and min_pool_size (via pool_janitor), and the stats_period log
 * line. Owns the timer event.
 */
#ifndef SLUICE_JANITOR_H
#define SLUICE_JANITOR_H

#include <stdbool.h>

struct sluice;

/* Start the periodic timer on sl->base. Returns false on failure. */
bool janitor_start(struct sluice *sl);

/* Stop the timer (shutdown). */
void janitor_stop(void);

#endif
