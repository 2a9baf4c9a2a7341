/*
 * limits_sync.h - the limits' link to PostgreSQL through the side channel:
 * sluice.limits overrides re-read every limits_refresh_interval, budgets
 * seeded from sluice.llm_usage at start, counters shared with the other
 * instances through sluice.rate_counters every limits_sync_interval.
 */
#ifndef SLUICE_AI_LIMITS_SYNC_H
#define SLUICE_AI_LIMITS_SYNC_H

#include <stdbool.h>

struct sluice;

/*
 * Start it for sl (needs sl->limits and sl->cfg->ai_database; does nothing
 * and returns true when ai_database is unset). Client traffic never waits
 * for it: while PostgreSQL is unreachable the last known limits apply and
 * local counts wait to be shared. Returns false on OOM or a bad ai_database.
 */
bool limits_sync_start(struct sluice *sl);

/* True once budgets were seeded from sluice.llm_usage (or there is nothing to seed). */
bool limits_sync_seeded(const struct sluice *sl);

/* Apply changed intervals after a reload. */
void limits_sync_reconfigure(struct sluice *sl);

/* Stop and free (shutdown). */
void limits_sync_stop(struct sluice *sl);

#endif
