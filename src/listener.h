/* SPDX-License-Identifier: PostgreSQL */
/*
 * listener.h - the sockets pgsluice accepts clients on: TCP on every
 * listen_addr and the unix socket in unix_socket_dir. Owns struct listener
 * and the socket file; hands accepted sockets to client_accept(); pauses
 * accepting at max_login_clients and after EMFILE/ENFILE (listener_update).
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

/*
 * Apply the reloadable listener settings of sl->cfg to the open sockets:
 * tcp_defer_accept (TCP_DEFER_ACCEPT, 45 s, on TCP listeners; Linux only, as
 * PgBouncer). Logs a warning when the kernel refuses it. Called by
 * listener_start and on RELOAD / admin SET.
 */
void listener_apply_settings(struct sluice *sl);

/* SUSPEND / RESUME: stop or start accepting on every listener; connections wait in the kernel's queue. */
void listener_set_accepting(struct sluice *sl, bool on);

/*
 * Turn accepting on or off for what holds now: SUSPEND, an accept() back-off
 * after EMFILE/ENFILE (100 ms doubling to 1 s), and max_login_clients
 * (sl->n_login_clients). While off, accept() is not called (the event is
 * deleted, as PgBouncer's suspend_pooler) and new connections wait in the
 * kernel's listen queue. Closes nothing, so it is safe inside client list
 * walks; cheap when nothing changes: pool_move_client calls it whenever a client
 * leaves CL_LOGIN.
 */
void listener_update(struct sluice *sl);

/*
 * At max_login_clients, close the oldest clients that have sent no
 * StartupMessage for 1 s (client_close_oldest_silent) to make room, then
 * listener_update. Closes clients: not for callers walking a client list.
 * Run after each accept and by the janitor every tick.
 */
void listener_make_room(struct sluice *sl);

/* Call fn with the fd of every listening socket (SHOW FDS); fn must not close it. */
void listener_foreach_fd(struct sluice *sl, void (*fn)(int fd, void *arg), void *arg);

/* Close every listener and remove the unix socket file. Safe to call twice. */
void listener_stop(struct sluice *sl);

#endif
