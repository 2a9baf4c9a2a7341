/* SPDX-License-Identifier: PostgreSQL */
/*
 * relay.h - a linked server's replies on their way to its client: the reply
 * queue's actions (prepared.h, replyq.h), ReadyForQuery's end of a
 * transaction (the server back to its pool, the client's next messages
 * relayed), backpressure both ways. Owns no state. Below client.c (which
 * calls relay_resume; a client is told through client_events) and above the
 * pool and server.c; entered from a server's socket (the connio_ops it puts
 * in sl->server_io_ops), so that server.c never calls up for a reply.
 */
#ifndef SLUICE_RELAY_H
#define SLUICE_RELAY_H

struct sluice;
struct server;

/*
 * Put the callbacks of every server socket in sl->server_io_ops: bytes read
 * are relayed (or, during login and pgsluice's own queries, handed to
 * server.c), a drained output resumes the client, connect and failure go to
 * server.c. Before the first server connects (main.c).
 */
void relay_start(struct sluice *sl);

/* Resume relaying s's replies after its client's output drained below RELAY_LOW_WATER. */
void relay_resume(struct server *s);

#endif
