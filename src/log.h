/* SPDX-License-Identifier: PostgreSQL */
/*
 * log.h - pgsluice's log: one line per event to stderr or logfile, and syslog.
 * Owns the log destination and verbosity; knows nothing of connections.
 * Format follows PgBouncer: "2026-11-21 10:00:00.123 UTC [pid] LEVEL message".
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdbool.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARNING, LOG_LEVEL_LOG, LOG_LEVEL_DEBUG, LOG_LEVEL_NOISE };

/*
 * Point the log at logfile (NULL or "" keeps stderr), optionally also syslog
 * with ident and facility name (PgBouncer's syslog_facility values).
 * verbose: 0 logs up to LOG, 1 adds DEBUG, 2 adds NOISE; quiet drops the
 * stderr copy. Returns false (and keeps the old destination) when the file
 * cannot be opened; errno is left set. Call again on reload.
 */
bool log_setup(const char *logfile, bool use_syslog, const char *ident,
               const char *facility, int verbose, bool quiet);

/* Reopen the logfile (after rotation). Returns false on open failure. */
bool log_reopen(void);

/* True when messages of that level are written (cheap; use to skip work). */
bool log_enabled(enum log_level level);

/* Write one line at level; printf format. Never fails visibly. */
void log_write(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_error(...)   log_write(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_write(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...)    log_write(LOG_LEVEL_LOG, __VA_ARGS__)
#define log_debug(...)   do { if (log_enabled(LOG_LEVEL_DEBUG)) log_write(LOG_LEVEL_DEBUG, __VA_ARGS__); } while (0)
#define log_noise(...)   do { if (log_enabled(LOG_LEVEL_NOISE)) log_write(LOG_LEVEL_NOISE, __VA_ARGS__); } while (0)

#endif
