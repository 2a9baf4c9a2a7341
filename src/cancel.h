/*
 * cancel.h - query cancellation: a client's CancelRequest carries the
 * BackendKeyData pgsluice gave it; pgsluice finds the client's server and
 * sends that server's own key on a fresh connection (protocol-flow.html 55.2.7).
 */
#ifndef SLUICE_CANCEL_H
#define SLUICE_CANCEL_H

#include <stdint.h>

struct sluice;
struct server;

/*
 * Handle a CancelRequest for (pid, key): when the client with that key has a
 * server, forward a CancelRequest to it. Unknown keys are ignored, as
 * PostgreSQL does, so a guesser learns nothing.
 */
void cancel_request(struct sluice *sl, int32_t pid, int32_t key);

/*
 * Send a CancelRequest with s's backend key to s's address; fire and forget.
 * A request not sent within cancel_wait_timeout (connect included; 0: no
 * limit) is dropped with a warning, as PgBouncer drops one that waited that long.
 */
void cancel_forward(struct server *s);

#endif
