/* SPDX-License-Identifier: PostgreSQL */
/*
 * admin.h - the admin console: the virtual database "pgsluice" (alias
 * "pgbouncer") where admin_users run PgBouncer's SHOW and control commands
 * and stats_users run SHOW (docs/admin.md). Owns the console sessions
 * (clients in CL_ADMIN on sl->admin_clients), the commands that wait (PAUSE,
 * SUSPEND, WAIT_CLOSE) and the pause state in sl->paused / sl->paused_dbs,
 * sl->suspended (SUSPEND) and sl->disabled_dbs (DISABLE).
 * Speaks the simple query protocol only; answers are built with proto.h.
 */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

struct sluice;
struct client;

/*
 * PAUSE / RESUME without a database, as SIGUSR1 / SIGUSR2 do: clients keep
 * their connections, their transactions wait; servers close as they come
 * free. RESUME also ends SUSPEND. Returns false with errbuf set when already
 * paused or suspended / not paused, and (RESUME) while shutting down.
 */
bool admin_pause(struct sluice *sl, char *errbuf, size_t errlen);
bool admin_resume(struct sluice *sl, char *errbuf, size_t errlen);

/*
 * Split a console query text (NUL-terminated) into tokens as the console
 * does before running it: words, 'strings', "quoted names", '=', ';', SQL
 * comments skipped. Returns the number of tokens, or -1 when a quote is
 * unterminated. For tests and the fuzz target (tests/fuzz/fuzz_admin.c).
 */
int admin_tokenize_count(const char *text);

/*
 * Prepare the console (its timer) and put it in sl->console, where client.c
 * finds it: a client that authenticated for the console database is admitted
 * (CL_ADMIN, welcome sent) when its user is in admin_users or stats_users
 * (with auth_type = any every user may SHOW, as in PgBouncer), else sent
 * FATAL 42501 and closed. Returns false when out of memory.
 */
bool admin_start(struct sluice *sl);

/* Close every console session and free the console's state (shutdown). */
void admin_stop(struct sluice *sl);

#endif
