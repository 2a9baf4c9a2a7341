/* SPDX-License-Identifier: PostgreSQL */
/*
 * prepared.h - named prepared statements under transaction and statement
 * pooling, and what rides on a server's reply queue (replyq.h). Owns the
 * registry that maps statement text + parameter types to a server-side name,
 * each client's names and each server's prepared set (LRU,
 * max_prepared_statements), and settles reply-queue entries as they pop.
 */
#ifndef SLUICE_PREPARED_H
#define SLUICE_PREPARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cache_entry;
struct client;
struct server;
struct iobuf;
struct usage_pending;

#define PREPARED_BUCKETS 1024

/* One distinct (text, parameter types): shared by every client that prepared it. */
struct prepared_stmt {
	struct prepared_stmt *next;    /* bucket chain */
	uint64_t hash;
	char *query;                   /* owned */
	uint8_t *param_types;          /* owned, int32 OIDs in network order */
	uint16_t n_params;
	int refcount;                  /* client names + server caches using it */
	uint32_t gen;                  /* bumped when its result type changed (0A000 at Bind) */
	bool parsed;                   /* a server accepted its Parse once: known good text */
	bool drops_all;                /* DEALLOCATE ALL / DISCARD ALL: never kept as prepared */
	char server_name[32];          /* "PGSLUICE_<id>"; "" (unnamed) when drops_all */
};

struct prepared_registry {
	struct prepared_stmt *buckets[PREPARED_BUCKETS];
	uint64_t next_id;
	size_t count;
};

/*
 * A client's statement names. fresh: the client's own Parse was answered
 * without a server; its first use on a server parses it anew there, as a
 * new PostgreSQL connection would (a shared plan may predate an ALTER).
 */
struct client_stmt { char *name; struct prepared_stmt *stmt; bool fresh; };
struct client_stmts { struct client_stmt *items; size_t n, cap; };

/* What a server has prepared, with a use clock for LRU eviction. */
struct server_stmt { struct prepared_stmt *stmt; uint64_t used; uint32_t gen; /* stmt->gen when parsed */ };
struct server_stmts { struct server_stmt *items; size_t n, cap; uint64_t clock; };

enum reply_action { REPLY_FORWARD, REPLY_SWALLOW };

/* How prepared_settle_head left the head: settled, or its usage record lost. */
enum head_settled {
	HEAD_SETTLED,        /* nothing owed to the client */
	HEAD_LOST,           /* the 53100 error goes before the reply */
	HEAD_LOST_SWALLOW,   /* the 53100 error replaces the reply (an Execute's end) */
};

enum client_msg_result {
	CLIENT_MSG_PASS,       /* not rewritten: relay it as it is */
	CLIENT_MSG_NEED_MORE,  /* wait for more bytes of the message */
	CLIENT_MSG_DONE,       /* handled; c->relay_left may hold the rest to stream */
	CLIENT_MSG_FAILED,     /* out of memory: the client was sent FATAL */
	CLIENT_MSG_WAIT,       /* wait for the server's answers: its ReadyForQuery resumes the relay */
};

/* Free every registry entry (shutdown). */
void prepared_registry_free(struct prepared_registry *reg);

/* True when statements of c's pool are rewritten (transaction/statement mode, max_prepared_statements > 0). */
bool prepared_active(const struct client *c);

/* Does c have a named statement name (transaction/statement pooling's own names)? */
bool prepared_client_has(const struct client *c, const char *name);

/*
 * What a statement text is to pgsluice's statement names: DEALLOCATE
 * [PREPARE] name, with the name as PostgreSQL's scanner reads it (unquoted:
 * folded to lower case; "quoted": as written, "" for a quote). Blanks and a
 * final ';' aside; anything else (comments, several statements) is
 * DEALLOC_NONE and goes to the server as it is. name (size bytes, NUL
 * ended) is set for DEALLOC_NAME. Source: sql-deallocate.html,
 * sql-syntax-lexical.html 4.1.1.
 */
enum dealloc_kind { DEALLOC_NONE, DEALLOC_ALL, DEALLOC_NAME };
enum dealloc_kind prepared_parse_deallocate(const char *text, size_t len, char *name, size_t size);

/*
 * c's simple Query (len bytes, whole in its input) is DEALLOCATE [PREPARE]
 * name of a statement c prepared: when no server stands in the way (none is
 * linked, or the linked one owes nothing and is not in a failed
 * transaction), forget c's statement and answer CommandComplete and
 * ReadyForQuery at once, without a server. Returns 0 when consumed; -1 when
 * the linked server still owes ReadyForQuery for earlier queries (the relay
 * waits; the server's last ReadyForQuery resumes it); 1 otherwise (relay it:
 * an unknown name gets 26000 from the server, a failed transaction 25P02).
 */
int prepared_intercept_deallocate(struct client *c, uint32_t len);

/*
 * May prepared_intercept_deallocate answer a simple Query whose text is
 * body[0..n)? False when a letter other than D comes first after blanks
 * among its first 16 bytes (every statement but DEALLOCATE). Inline, so
 * that the relay asks it before the call; true only means the call looks.
 */
static inline bool prepared_may_be_deallocate(const uint8_t *body, size_t n)
{
	size_t h = n < 16 ? n : 16, i = 0;
	while (i < h && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r' ||
	                 body[i] == '\f' || body[i] == '\v'))
		i++;
	return i == h || (body[i] | 0x20) == 'd';
}

/*
 * c has no server linked and its next message (type, len) is a Parse of a
 * named statement whose text and parameter types a server already accepted:
 * answer ParseComplete without a server, so a client that only prepares
 * never waits for one (pgbench -M prepared). A Parse of a name c uses gets
 * 42P05 there too. A following Sync is answered by pgsluice
 * (c->local_batch_open). Returns 1 when not answered (a server is needed),
 * 0 when answered (consumed), -1 to wait for the rest of the message.
 */
int prepared_answer_unlinked(struct client *c, uint8_t type, uint32_t len);

/*
 * The longest simple Query text prepared_client_message looks at (for
 * DEALLOCATE ALL / DISCARD ALL): it passes every longer one, which the
 * relay need not ask about.
 */
#define PREPARED_QUERY_LOOK_MAX 32

/*
 * Look at the client message of type and len (header included in the
 * buffered input, not consumed) bound for server s, and rewrite it when it
 * names a prepared statement: Parse, Bind, Describe and Close of named
 * statements; Query is checked for DEALLOCATE ALL / DISCARD ALL (texts up
 * to PREPARED_QUERY_LOOK_MAX bytes).
 * Rewritten bytes go to s's output; the reply queue is updated.
 */
enum client_msg_result prepared_client_message(struct client *c, struct server *s, uint8_t type,
                                               uint32_t len);

/*
 * Hand the usage record of the request just noted (the queue's tail: a Query
 * or Execute) to s's queue: it is journaled when that request completes,
 * before its ReadyForQuery is relayed, and dropped if it fails. Takes
 * ownership; NULL is ignored.
 */
void prepared_attach_usage(struct server *s, struct usage_pending *usage);

/*
 * Hand the completion-cache fill of the request just noted (the queue's
 * tail: a Query, Describe or Execute) to s's queue: the server's answer to it
 * is captured into the fill. Takes the caller's fill reference; NULL ignored.
 */
void prepared_attach_fill(struct server *s, struct cache_entry *fill);

/*
 * Owe the client the reply to its message of frontend type, answered by
 * pgsluice in order (an RQ_SYNTHESISE entry, replyq.h): PqMsg_Bind
 * (BindComplete), PqMsg_Describe (the hit's RowDescription) or
 * PqMsg_Execute (the hit's rows from row_pos, at most max_rows, with usage
 * journaled when written). hit: a reference the queue takes over (NULL for
 * a Bind); usage is owned. While s skips to Sync after an error the reply is
 * dropped, as PostgreSQL would skip the message. Written at once when
 * nothing is owed before it. False when out of memory (nothing queued).
 */
bool prepared_owe(struct server *s, uint8_t type, struct cache_entry *hit, uint32_t row_pos,
                  int32_t max_rows, struct usage_pending *usage);

/*
 * Hand the statement tags of the Parse just noted (the queue's tail) to s's
 * queue: the client's statement takes them at its ParseComplete. Takes
 * ownership; freed unused when the Parse fails or is skipped. Returns false
 * when the server skips the Parse (it was freed at once).
 */
struct stmt_tags;
bool prepared_attach_parse(struct server *s, struct stmt_tags *parsed);

/*
 * Hand the SET of the Query or Execute (type) just noted (the queue's tail)
 * to s's queue: it enters the client's record when that request completes
 * without error (settings_query_done). Takes ownership; freed when nothing
 * to ride on (an Execute while the server skips to Sync).
 */
struct sessvar_op;
void prepared_attach_setting(struct server *s, uint8_t type, struct sessvar_op *op);

/* The tags of the newest Parse of name still waiting for its ParseComplete on s, or NULL. */
const struct stmt_tags *prepared_pending_parse(struct server *s, const char *name);

/*
 * A named statement the client parsed and pgsluice answered itself (a
 * completion-cache hit needed no server): remember name for c as the Parse
 * would. False when out of memory.
 */
bool prepared_client_parse(struct client *c, const char *name, const char *query, const uint8_t *types,
                           uint16_t n_types);

/*
 * Does prepared.c want the server message of type whole before it is
 * relayed (prepared_see_reply)? True for an ErrorResponse to a Bind or
 * Describe of a pgsluice statement.
 */
bool prepared_wants_reply(struct server *s, uint8_t type);

/*
 * A whole server message (body of len bytes) prepared_wants_reply asked
 * for: an ErrorResponse 0A000 (cached plan must not change result type) to
 * a Bind or Describe of a shared statement makes every server prepare that
 * statement afresh at its next use (postgres.c exec_bind_message,
 * plancache.c RevalidateCachedQuery).
 */
void prepared_see_reply(struct server *s, uint8_t type, const uint8_t *body, size_t len);

/* Record a forwarded client message in s's reply queue. */
void prepared_note_request(struct server *s, uint8_t type);

/*
 * A server message of type is about to be relayed: pop the requests it
 * completes. REPLY_SWALLOW for the replies to injected messages.
 */
enum reply_action prepared_on_reply(struct server *s, uint8_t type);

/*
 * Settle and pop the head of s's reply queue, which server reply type
 * completes (replyq_completes) and which carries no SET or LISTEN (a
 * statement, a client's name or a middleware token without a cache fill):
 * what prepared_on_reply does for it, without replyq_on_reply's dispatch.
 * For server.c's batch relay; nothing is written to the client. When the
 * entry's usage record could not be journaled the caller writes
 * prepared_write_unrecorded's error where prepared_on_reply would have:
 * before the reply (HEAD_LOST) or in its place (HEAD_LOST_SWALLOW).
 */
enum head_settled prepared_settle_head(struct server *s, uint8_t type);

/*
 * Write to s's client the error (SQLSTATE 53100) owed in place of success
 * when a completed request's usage record was not journaled. Nothing
 * without a client. For the batch relay after prepared_settle_head's false.
 */
void prepared_write_unrecorded(struct server *s);

/* Emit the replies pgsluice owes the client that are due now (queue head). */
void prepared_flush_owed(struct server *s);

/*
 * Fail the extended-protocol message the client sent (and pgsluice dropped)
 * with an ERROR of sqlstate: the server runs a statement that raises it, so
 * the error arrives in its place and the server skips to the client's Sync,
 * exactly as for an error of its own (docs/limits.md). Its ParseComplete and
 * BindComplete are swallowed. The unnamed statement and portal are replaced.
 */
void prepared_raise_error(struct server *s, const char *sqlstate, const char *message,
                          const char *detail, const char *hint);

/*
 * s starts its reset query: drop its queue of owed replies, and forget what
 * it has prepared when statements_dropped (the query runs DISCARD ALL or
 * DEALLOCATE ALL; RESET ALL, say, keeps them on the server).
 */
void prepared_server_reset(struct server *s, bool statements_dropped);

/* Free a server's or a client's statement state. */
void prepared_server_free(struct server *s);
void prepared_client_free(struct client *c);

#endif
