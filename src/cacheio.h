/* SPDX-License-Identifier: PostgreSQL */
/*
 * cacheio.h - the completion cache on the wire: hits written to a client as
 * the bytes PostgreSQL sent, and a server's answer captured into a fill as
 * the relay reads it (the reply queue's head says which). Keys: ai/cache_proto.h.
 */
#ifndef SLUICE_CACHEIO_H
#define SLUICE_CACHEIO_H

#include <stddef.h>
#include <stdint.h>

struct cache_entry;
struct iobuf;
struct server;

/* Append statement description d's ParameterDescription and RowDescription (both must be set). */
void cacheio_write_statement(struct iobuf *out, const struct cache_entry *d);

/* Append e's RowDescription (e->rowdesc must be set). */
void cacheio_write_rowdesc(struct iobuf *out, const struct cache_entry *e);

/*
 * Append e's whole answer to a simple Query: its RowDescription (must be
 * set), every DataRow and the CommandComplete, as one copy when they lie
 * together (a stored entry's are packed so).
 */
void cacheio_write_answer(struct iobuf *out, const struct cache_entry *e);

/*
 * Append e's DataRows from row *pos on, at most max_rows of them (0: all),
 * then its CommandComplete when the rows ran out, else PortalSuspended, as
 * an Execute of a portal with that row limit answers (protocol-flow.html
 * 55.2.3). Advances *pos.
 */
void cacheio_write_rows(struct iobuf *out, const struct cache_entry *e, uint32_t *pos, int32_t max_rows);

/*
 * Capture hooks, called by the server relay before prepared_on_reply sees a
 * message: the head of s's reply queue says whether the message belongs to a
 * fill. A whole message (msg[0..total), header included) ...
 */
void cacheio_capture_whole(struct server *s, uint8_t type, const uint8_t *msg, size_t total);

/* ... or the start of a streamed one of len (its length word); its bytes follow ... */
void cacheio_capture_begin(struct server *s, uint8_t type, uint32_t len);

/* ... n bytes of it (bytes, not owned), about to be relayed. */
void cacheio_capture_stream(struct server *s, const uint8_t *bytes, size_t n);

#endif
