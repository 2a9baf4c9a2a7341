/* SPDX-License-Identifier: PostgreSQL */
/* log.c - see log.h. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static FILE *log_file;          /* NULL: stderr only */
static char *log_path;
static bool log_syslog;
static bool log_quiet;
static int log_verbose;

static const char *const level_names[] = { "ERROR", "WARNING", "LOG", "DEBUG", "NOISE" };
static const int level_syslog[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG, LOG_DEBUG };

static int facility_code(const char *name)
{
	static const struct { const char *name; int code; } map[] = {
		{ "auth", LOG_AUTH }, { "authpriv", LOG_AUTHPRIV }, { "daemon", LOG_DAEMON },
		{ "user", LOG_USER }, { "local0", LOG_LOCAL0 }, { "local1", LOG_LOCAL1 },
		{ "local2", LOG_LOCAL2 }, { "local3", LOG_LOCAL3 }, { "local4", LOG_LOCAL4 },
		{ "local5", LOG_LOCAL5 }, { "local6", LOG_LOCAL6 }, { "local7", LOG_LOCAL7 },
	};
	for (size_t i = 0; name && i < sizeof(map) / sizeof(map[0]); i++)
		if (strcasecmp(name, map[i].name) == 0)
			return map[i].code;
	return LOG_DAEMON;
}

bool log_setup(const char *logfile, bool use_syslog, const char *ident,
               const char *facility, int verbose, bool quiet)
{
	FILE *f = NULL;
	if (logfile && *logfile) {
		f = fopen(logfile, "a");
		if (!f)
			return false;
		setvbuf(f, NULL, _IOLBF, 0);
	}
	if (log_file)
		fclose(log_file);
	free(log_path);
	log_file = f;
	log_path = f ? strdup(logfile) : NULL;
	if (log_syslog)
		closelog();
	log_syslog = use_syslog;
	if (use_syslog)
		openlog(ident ? ident : "pgsluice", LOG_PID, facility_code(facility));
	log_verbose = verbose;
	log_quiet = quiet;
	return true;
}

bool log_reopen(void)
{
	if (!log_path)
		return true;
	FILE *f = fopen(log_path, "a");
	if (!f)
		return false;
	setvbuf(f, NULL, _IOLBF, 0);
	fclose(log_file);
	log_file = f;
	return true;
}

bool log_enabled(enum log_level level)
{
	return (int)level <= (int)LOG_LEVEL_LOG + log_verbose;
}

void log_write(enum log_level level, const char *fmt, ...)
{
	if (!log_enabled(level))
		return;
	int saved_errno = errno;
	char msg[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	struct timeval tv;
	struct tm tm;
	char ts[64];
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);

	if (log_file)
		fprintf(log_file, "%s.%03d UTC [%d] %s %s\n", ts, (int)(tv.tv_usec / 1000),
		        (int)getpid(), level_names[level], msg);
	if (!log_quiet || level == LOG_LEVEL_ERROR)
		fprintf(stderr, "%s.%03d UTC [%d] %s %s\n", ts, (int)(tv.tv_usec / 1000),
		        (int)getpid(), level_names[level], msg);
	if (log_syslog)
		syslog(level_syslog[level], "%s %s", level_names[level], msg);
	errno = saved_errno;
}
