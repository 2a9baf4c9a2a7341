/* SPDX-License-Identifier: PostgreSQL */
/*
 * notify.c - sd_notify messages to systemd (notify.h). libsystemd's own
 * sd_notify is used when configure found it (HAVE_SYSTEMD); it does nothing
 * when NOTIFY_SOCKET is unset, so a pgsluice not run by systemd is unaffected.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <time.h>

#include "log.h"
#include "notify.h"

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

static void send_state(const char *state)
{
	int rc = sd_notify(0, state);
	if (rc < 0)
		log_warning("could not notify systemd (%s): sd_notify failed with error %d", state, -rc);
}
#else
static void send_state(const char *state)
{
	(void)state;
}
#endif

void notify_ready(void)
{
	send_state("READY=1\nSTATUS=accepting connections");
}

void notify_reloading(void)
{
	struct timespec now;
	char state[96];
	clock_gettime(CLOCK_MONOTONIC, &now);
	snprintf(state, sizeof(state), "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=%lld",
	         (long long)now.tv_sec * 1000000LL + now.tv_nsec / 1000);
	send_state(state);
}

void notify_stopping(void)
{
	send_state("STOPPING=1\nSTATUS=shutting down");
}
