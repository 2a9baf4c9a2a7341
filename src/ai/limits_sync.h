/* SPDX-License-Identifier: PostgreSQL */
/*
 * limits_sync.h - the limits' link to PostgreSQL through the side channel:
 * sluice.limits overrides re-read every limits_refresh_interval, budgets
 * seeded from sluice.llm_usage at start, counters shared with the other
 * instances through sluice.rate_counters every limits_sync_interval, and
 * slices of per-minute limits leased from sluice.rate_leases (limits_lease_instances).
 */
#ifndef SLUICE_AI_LIMITS_SYNC_H
#define SLUICE_AI_LIMITS_SYNC_H

#include <stdbool.h>

struct sluice;

/*
 * Start it for sl (needs sl->limits and sl->cfg->ai_database; does nothing
 * and returns true when ai_database is unset). Call before the event loop
 * serves clients: it reads sluice.limits, seeds the budgets and reads the
 * batch positions on a blocking connection first (at most the 5 s connect
 * timeout when ai_database is unreachable; then the side channel does it
 * later). Client traffic never waits for PostgreSQL after that: while it is
 * unreachable the last known limits apply and local counts wait to be
 * shared. Returns false on OOM or a bad ai_database.
 */
bool limits_sync_start(struct sluice *sl);

/* True once budgets were seeded from sluice.llm_usage (or there is nothing to seed). */
bool limits_sync_seeded(const struct sluice *sl);

/*
 * True once sluice.limits was read, the budgets seeded and the batch
 * positions read at least once (or ai_database is unset): until then the
 * middleware refuses attributed statements (53400), as it cannot tell
 * whether they are within their limits (docs/limits.md, "At start").
 */
bool limits_sync_ready(const struct sluice *sl);

/*
 * True while leasing (limits_lease_instances > 0) cannot reach ai_database:
 * per-minute limits admit only from the slices already held (fail closed).
 * The log says so once when it starts and once when it ends.
 */
bool limits_sync_fail_closed(const struct sluice *sl);

/* Apply changed intervals after a reload. */
void limits_sync_reconfigure(struct sluice *sl);

/* Stop and free (shutdown). */
void limits_sync_stop(struct sluice *sl);

#endif
