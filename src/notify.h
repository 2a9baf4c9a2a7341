/* SPDX-License-Identifier: PostgreSQL */
/*
 * notify.h - pgsluice's messages to the service manager: systemd's sd_notify
 * protocol (READY=1, RELOADING=1, STOPPING=1) for a unit of Type=notify-reload
 * (contrib/pgsluice.service). Without libsystemd, or outside systemd, no-ops.
 */
#ifndef SLUICE_NOTIFY_H
#define SLUICE_NOTIFY_H

/*
 * Tell the service manager that pgsluice accepts connections (READY=1), at
 * the end of start-up and again when a reload is over, whether it applied or
 * not (systemd waits for it after RELOADING=1). Source: sd_notify(3).
 */
void notify_ready(void);

/*
 * Tell the service manager a reload began (RELOADING=1 with MONOTONIC_USEC,
 * the CLOCK_MONOTONIC time in microseconds that Type=notify-reload requires);
 * notify_ready() ends it. Source: sd_notify(3), systemd.service(5).
 */
void notify_reloading(void);

/* Tell the service manager pgsluice is shutting down (STOPPING=1). Source: sd_notify(3). */
void notify_stopping(void);

#endif
