/* SPDX-License-Identifier: PostgreSQL */
/*
 * notify_relay.h - LISTEN/NOTIFY under transaction and statement pooling:
 * the channels each pooled client listens on, the one listening connection
 * per pool that runs the real LISTENs, and the delivery of its notifications.
 */
#ifndef SLUICE_NOTIFY_RELAY_H
#define SLUICE_NOTIFY_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct client;
struct server;
struct pool;

/* NAMEDATALEN - 1: PostgreSQL truncates identifiers to this many bytes (sql-syntax-lexical.html 4.1.1). */
#define NOTIFY_CHANNEL_MAX 63

/* What a statement text is to the relay. */
enum notify_stmt {
	NOTIFY_STMT_NONE,          /* not LISTEN/UNLISTEN (or unparsable: the server answers it) */
	NOTIFY_STMT_LISTEN,        /* LISTEN channel */
	NOTIFY_STMT_UNLISTEN,      /* UNLISTEN channel */
	NOTIFY_STMT_UNLISTEN_ALL,  /* UNLISTEN * */
	NOTIFY_STMT_MIXED,         /* LISTEN/UNLISTEN followed by other statements */
};

/*
 * Per client, made at its first LISTEN/UNLISTEN (struct client points to it;
 * NULL for the many clients that never listen) and freed once it holds
 * nothing again at a ReadyForQuery.
 */
struct notify_client {
	char **channels;            /* committed channels, owned */
	size_t n_channels, cap_channels;
	char **pending;             /* done, waiting for the transaction's end: "L"/"U"/"*" + channel; owned */
	size_t n_pending, cap_pending;
	char *unnamed;              /* the unnamed statement is this action (extended protocol), owned */
	char *portal;               /* the unnamed portal is this action, owned */
	bool exec_pending;          /* the Execute being relayed runs the unnamed portal's action */
	bool waiting;               /* waits for its channel to be live on the listening connection */
	uint8_t **held;             /* NotificationResponse messages not written yet, ring, owned */
	size_t held_head, n_held, held_cap;
	uint64_t dropped;           /* held ones dropped since the last NOTICE about it */
	bool owes_lost_notice;      /* the listening connection broke: tell it */
};

/*
 * Parse a statement text (len bytes, need not be NUL ended) as PostgreSQL's
 * scanner would: blanks and comments around, LISTEN/UNLISTEN keyword, the
 * channel as an identifier (unquoted: ASCII folded to lower case; "quoted":
 * kept, "" a quote; both truncated to NOTIFY_CHANNEL_MAX bytes at a UTF-8
 * character boundary), an optional ';'. channel (NOTIFY_CHANNEL_MAX + 1
 * bytes) is set for LISTEN/UNLISTEN. Sources: sql-listen.html,
 * sql-unlisten.html, sql-syntax-lexical.html 4.1.1 and 4.1.5.
 */
enum notify_stmt notify_parse_statement(const char *text, size_t len, char *channel);

/*
 * c's next message (type, len; header in its input, not consumed) goes to
 * its linked server s, under transaction or statement pooling. A Query or
 * unnamed Parse of LISTEN/UNLISTEN is replaced by a no-op statement whose
 * reply is rewritten to the client's tag (the action is recorded when it
 * succeeds, applied at the transaction's end); Bind and Execute follow the
 * unnamed statement. Returns 1 to relay the message as usual, 0 when it was
 * consumed, -1 to wait (more bytes, or the channel is not live yet on the
 * listening connection: that resumes c).
 */
int notify_intercept(struct client *c, struct server *s, uint8_t type, uint32_t len);

/* The message just relayed to s was noted in its reply queue: attach an Execute's action. */
void notify_relayed(struct client *c, struct server *s, uint8_t type);

/*
 * Server s, linked to c, sent CommandComplete (msg, total bytes, whole) or
 * an ErrorResponse (msg NULL). Returns true when pgsluice wrote the
 * CommandComplete itself (LISTEN/UNLISTEN tag); the caller drops msg then.
 */
bool notify_server_reply(struct client *c, struct server *s, uint8_t type, const uint8_t *msg, size_t total);

/*
 * A ReadyForQuery with status is about to be written to c: apply or drop the
 * recorded actions when the transaction ended, write held notifications
 * (before it, as PostgreSQL does), and free c->notify when it holds nothing.
 */
void notify_before_ready(struct client *c, char status);

/* c has no server and nothing in flight (or its output drained): write what it holds. */
void notify_client_idle(struct client *c);

/* c is freed: leave every channel (the listening connection closes with the last one) and free
 * c->notify (NULL after; safe when it is NULL already). */
void notify_client_free(struct client *c);

/* Free p's listening connection (pool freed). */
void notify_pool_free(struct pool *p);

#endif
