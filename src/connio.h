/* SPDX-License-Identifier: PostgreSQL */
/*
 * connio.h - one connection's socket: non-blocking TCP or unix socket, or
 * TLS through OpenSSL over it; its input and output buffers (iobuf.h); its
 * read event, registered once, and a write event armed only while output
 * waits for the socket. Output is sent at the end of the event callback that
 * produced it, one send per connection, so a transaction costs one recv and
 * one send per direction and no epoll_ctl in the steady state.
 */
#ifndef SLUICE_CONNIO_H
#define SLUICE_CONNIO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/event_struct.h>

#include "iobuf.h"

struct event_base;
typedef struct ssl_st SSL;

enum connio_state {
	IO_CLOSED,       /* no socket */
	IO_CONNECTING,   /* non-blocking connect() in progress */
	IO_HANDSHAKE,    /* TLS handshake in progress */
	IO_OPEN,         /* bytes flow */
};

/* What the owner of a connection is told. Each may free the connection. */
struct connio_ops {
	void (*on_read)(void *arg);      /* new bytes in io->in */
	void (*on_drain)(void *arg);     /* output that had to wait is down to RELAY_LOW_WATER or less */
	void (*on_connect)(void *arg);   /* connect() or the TLS handshake finished */
	/* The peer hung up (why NULL) or the socket or TLS failed (why says how). */
	void (*on_error)(void *arg, const char *why);
};

struct connio {
	int fd;                     /* -1: none */
	enum connio_state state;
	SSL *ssl;                   /* owned; NULL: plain */
	bool reading;               /* the read event is registered */
	bool writing;               /* the write event is registered */
	bool queued;                /* on the list of connections to send at the end of the callback */
	bool shut_when_flushed;     /* shutdown(SHUT_WR) once the output is sent (a lingering close) */
	bool tls_accepting;         /* the handshake is the server side */
	bool write_wants_read;      /* SSL_write asked to read first */
	struct event rd;            /* registered once; its event_base is the connection's */
	struct event *wr;           /* owned; made the first time the socket is full (most clients: never) */
	struct iobuf in, out;
	const struct connio_ops *ops;
	void *arg;
	TAILQ_ENTRY(connio) flush_entry;
};

/* Output above this makes the connection feeding it stop reading (bytes). */
#define RELAY_HIGH_WATER (256 * 1024)
/* ... and it reads again once the output is down to this (bytes). */
#define RELAY_LOW_WATER (RELAY_HIGH_WATER / 2)

/* Set up the loop-wide parts (the deferred send event). Call once before any connection. */
bool connio_global_init(struct event_base *base);

/* Free them (at exit). */
void connio_global_free(void);

/*
 * Take over a connected non-blocking socket fd: the read event is
 * registered and stays so. ops and arg are kept (not owned). Returns
 * false (fd not taken over) when libevent refuses the events.
 */
bool connio_open(struct connio *io, struct event_base *base, int fd, const struct connio_ops *ops, void *arg);

/*
 * Start a non-blocking connect() to addr (len bytes) on a new socket;
 * ops->on_connect or ops->on_error follows. Returns false with errno set
 * when the socket cannot even be started.
 */
bool connio_connect(struct connio *io, struct event_base *base, const struct sockaddr *addr, socklen_t len,
                    const struct connio_ops *ops, void *arg);

/*
 * Run TLS over the socket from now on (ssl owned from here, also on
 * failure): the server side when accepting is true (a client's SSLRequest
 * was answered 'S'), else the client side. Output already queued is sent in
 * the clear first. ops->on_connect follows the handshake, ops->on_error its
 * failure. Returns false when the handshake cannot start.
 */
bool connio_start_tls(struct connio *io, SSL *ssl, bool accepting);

/* Close the socket and free the buffers. io can be opened again. Safe on a closed io. */
void connio_close(struct connio *io);

/* Stop every event of io and forget its unsent output: it waits to be closed. */
void connio_stop(struct connio *io);

/* Stop reading (backpressure); a no-op when stopped. */
void connio_pause_read(struct connio *io);

/* Read again; a no-op when reading. */
void connio_resume_read(struct connio *io);

/* Append n bytes to the output; sent at the end of the current callback. False when out of memory. */
static inline bool connio_add(struct connio *io, const void *p, size_t n)
{
	return iobuf_add(&io->out, p, n);
}

/* Bytes of output not sent yet. */
static inline size_t connio_out_len(const struct connio *io)
{
	return iobuf_len(&io->out);
}

/* Shut the socket for writing once the output is sent (for TLS: just send it). */
void connio_shut_when_flushed(struct connio *io);

/*
 * Mark the start and the end of a callback pgsluice runs from the loop: at
 * the outermost end the output of every connection written to is sent.
 * Writes outside such a callback are sent from a deferred event in the same
 * loop iteration.
 */
void connio_enter(void);
void connio_leave(void);

/* The error text of the last TLS failure, for messages. */
const char *connio_tls_error(void);

#endif
