/* SPDX-License-Identifier: PostgreSQL */
/*
 * cancel.h - query cancellation: a client's CancelRequest carries the
 * BackendKeyData pgsluice gave it; pgsluice finds the client's server and
 * sends that server's own key on a fresh connection (protocol-flow.html 55.2.7).
 *
 * A forwarded cancel lands some time later. Until PostgreSQL has closed the
 * cancel connection (it signalled the backend by then), the server is not
 * given to another client, so a cancel never stops someone else's query
 * (PgBouncer's "being canceled" servers).
 */
#ifndef SLUICE_CANCEL_H
#define SLUICE_CANCEL_H

#include <stdbool.h>
#include <stdint.h>

struct sluice;
struct server;
struct sluice_config;

/*
 * Peering (PgBouncer's [peers] and peer_id): with peer_id set, the
 * BackendKeyData pgsluice gives a client carries that id in the 2nd and 3rd
 * byte of its 8 bytes (low byte first, 14 bits) and a forwarding budget in
 * the low 2 bits of the last byte, as PgBouncer 1.21+. Stamp a fresh random
 * (pid, key) so; no-op when peer_id is 0.
 */
void cancel_key_stamp(const struct sluice_config *cfg, int32_t *pid, int32_t *key);

/*
 * Route a CancelRequest for (pid, *key): when the key names another peer of
 * [peers], send the CancelRequest on to that peer with one less forward left
 * (none left: dropped, so a misconfigured ring cannot loop) and return
 * false. Else return true with *key as this pgsluice gave it to a client
 * (the forwarding budget masked out): the caller looks that client up and,
 * when it has a server, calls cancel_forward. Unknown keys, and clients
 * without a server (idle in transaction pooling, or waiting for one), are
 * ignored, as PostgreSQL ignores unknown keys, so a guesser learns nothing.
 */
bool cancel_route(struct sluice *sl, int32_t pid, int32_t *key);

/*
 * Send a CancelRequest with s's backend key to s's address on a connection
 * of its own. s->cancels tracks it until PostgreSQL closes that connection,
 * the connection fails, or cancel_wait_timeout passes; then, when it was the
 * last, done(s) runs (the pool's pool_cancels_done: s may serve others again).
 * Out of memory or an unusable socket: nothing is sent and done is not called.
 */
void cancel_forward(struct server *s, void (*done)(struct server *s));

/* s is being freed: its cancels in flight finish without it. */
void cancel_detach(struct server *s);

/* Drop every cancel connection still open (shutdown). */
void cancel_free_all(struct sluice *sl);

#endif
