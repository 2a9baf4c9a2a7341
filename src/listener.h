/* SPDX-License-Identifier: PostgreSQL */
/*
 * listener.h - the sockets pgsluice accepts clients on: TCP on every
 * listen_addr and the unix socket in unix_socket_dir. Owns struct listener
 * and the socket file; hands accepted sockets to client_accept().
 */
#ifndef SLUICE_LISTENER_H
#define SLUICE_LISTENER_H

#include <stdbool.h>
#include <stddef.h>

struct sluice;

/*
 * Open every listener named by sl->cfg (listen_addr comma list, "*" for all
 * addresses, listen_port, unix_socket_dir, listen_backlog, so_reuseport).
 * Returns false with errbuf set when none could be opened or one failed to
 * bind; listeners opened so far are closed again then.
 */
bool listener_start(struct sluice *sl, char *errbuf, size_t errlen);

/*
 * Close the TCP listeners only, as PgBouncer's cleanup_tcp_sockets at SIGINT
 * and SIGTERM: the unix socket stays for the admin console while a shutdown
 * waits (pooled logins there are refused with 57P03). Safe to call twice.
 */
void listener_stop_tcp(struct sluice *sl);

/* SUSPEND / RESUME: stop or start accepting on every listener; connections wait in the kernel's queue. */
void listener_set_accepting(struct sluice *sl, bool on);

/* Close every listener and remove the unix socket file. Safe to call twice. */
void listener_stop(struct sluice *sl);

#endif
