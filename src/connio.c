/* SPDX-License-Identifier: PostgreSQL */
/*
 * connio.c - see connio.h. Level-triggered events: one recv() per readable
 * event into the input buffer; output goes out with one send() at the end of
 * the callback (connio_leave), and only a send that could not finish arms
 * the write event. TLS uses SSL_read/SSL_write on the socket itself.
 */
#include "connio.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls.h"
#include "util.h"

/* Free room asked for before each read (bytes); a standard block gives more. */
#define READ_ROOM 1024

static TAILQ_HEAD(, connio) flush_list = TAILQ_HEAD_INITIALIZER(flush_list);
static int depth;                 /* nesting of connio_enter */
static struct event *flush_ev;    /* sends output written outside our callbacks */
static bool flush_scheduled;
static char tls_err_text[256];

static bool flush_one(struct connio *io);

/* Take io off the list of connections to send at the end of the callback; a no-op when not on it. */
static void unqueue(struct connio *io)
{
	if (io->queued) {
		TAILQ_REMOVE(&flush_list, io, flush_entry);
		io->queued = false;
	}
}

static void flush_all(void)
{
	struct connio *io;
	depth++;
	while ((io = TAILQ_FIRST(&flush_list)) != NULL) {
		unqueue(io);
		flush_one(io);
	}
	depth--;
}

void connio_enter(void)
{
	depth++;
	now_hold();
}

void connio_leave(void)
{
	if (--depth == 0 && !TAILQ_EMPTY(&flush_list))
		flush_all();
	now_release();
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	flush_scheduled = false;
	connio_enter();
	connio_leave();
}

bool connio_global_init(struct event_base *base)
{
	flush_ev = event_new(base, -1, 0, flush_cb, NULL);
	return flush_ev != NULL;
}

void connio_global_free(void)
{
	if (flush_ev)
		event_free(flush_ev);
	flush_ev = NULL;
	iobuf_release_cache();
}

/* The output of io went from empty to not empty: send it at the end of the callback. */
static void out_filled(struct iobuf *b)
{
	struct connio *io = (struct connio *)((char *)b - offsetof(struct connio, out));
	if (io->queued || io->writing)
		return;
	io->queued = true;
	TAILQ_INSERT_TAIL(&flush_list, io, flush_entry);
	if (depth == 0 && !flush_scheduled && flush_ev) {
		flush_scheduled = true;
		event_active(flush_ev, EV_TIMEOUT, 0);
	}
}

const char *connio_tls_error(void)
{
	return tls_err_text;
}

static const char *note_tls_error(int ssl_err)
{
	unsigned long e = ERR_get_error();
	if (e)
		snprintf(tls_err_text, sizeof(tls_err_text), "%s", tls_error_text(e));
	else if (ssl_err == SSL_ERROR_SYSCALL && errno)
		snprintf(tls_err_text, sizeof(tls_err_text), "%s", strerror(errno));
	else
		snprintf(tls_err_text, sizeof(tls_err_text), "TLS error %d", ssl_err);
	ERR_clear_error();
	return tls_err_text;
}

static void on_writable(evutil_socket_t fd, short what, void *arg);

/*
 * OpenSSL 3 reports a TCP close without close_notify as an SSL_ERROR_SSL of
 * reason SSL_R_UNEXPECTED_EOF_WHILE_READING (OpenSSL 1.1 as SSL_ERROR_SYSCALL
 * with no errno, handled by the caller). Leaves the error queue as it is.
 */
static bool tls_unexpected_eof(int ssl_err)
{
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
	unsigned long e = ERR_peek_error();
	return ssl_err == SSL_ERROR_SSL && e != 0 && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
#else
	(void)ssl_err;
	return false;
#endif
}

static void arm_write(struct connio *io)
{
	if (io->writing)
		return;
	if (!io->wr && !(io->wr = event_new(event_get_base(&io->rd), io->fd, EV_WRITE | EV_PERSIST, on_writable, io)))
		return;    /* out of memory: the next read or flush tries again */
	if (event_add(io->wr, NULL) == 0)
		io->writing = true;
}

static void disarm_write(struct connio *io)
{
	if (io->writing) {
		event_del(io->wr);
		io->writing = false;
	}
}

/*
 * Send what io's output holds. Returns false when io failed (its owner was
 * told and may have freed it).
 */
static bool flush_one(struct connio *io)
{
	if (io->state != IO_OPEN)
		return true;   /* sent once connected */
	size_t len = iobuf_len(&io->out);
	while (len > 0) {
		const uint8_t *p = iobuf_data(&io->out);
		ssize_t n;
		if (io->ssl) {
			ERR_clear_error();
			int r = SSL_write(io->ssl, p, len > INT32_MAX ? INT32_MAX : (int)len);
			if (r <= 0) {
				int e = SSL_get_error(io->ssl, r);
				if (e == SSL_ERROR_WANT_WRITE) {
					arm_write(io);
					return true;
				}
				if (e == SSL_ERROR_WANT_READ) {
					io->write_wants_read = true;
					return true;
				}
				io->ops->on_error(io->arg, note_tls_error(e));
				return false;
			}
			n = r;
		} else {
			n = send(io->fd, p, len, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK) {
					arm_write(io);
					return true;
				}
				if (errno == EINTR)
					continue;
				io->ops->on_error(io->arg, strerror(errno));
				return false;
			}
		}
		iobuf_drain(&io->out, (size_t)n);
		if ((size_t)n < len && !io->ssl) {
			arm_write(io);     /* the socket is full: no second try now */
			return true;
		}
		len -= (size_t)n;
	}
	disarm_write(io);
	if (io->shut_when_flushed && !io->ssl)
		shutdown(io->fd, SHUT_WR);
	return true;
}

/* Read once. Returns bytes read (> 0), 0 at end of stream, -1 for nothing now, -2 on error (*why set). */
static ssize_t read_some(struct connio *io, const char **why)
{
	size_t avail;
	uint8_t *p = iobuf_space(&io->in, READ_ROOM, &avail);
	if (!p) {
		*why = "out of memory";
		return -2;
	}
	if (!io->ssl) {
		ssize_t n;
		do
			n = recv(io->fd, p, avail, 0);
		while (n < 0 && errno == EINTR);
		if (n > 0) {
			iobuf_commit(&io->in, (size_t)n);
			return n;
		}
		iobuf_drain(&io->in, 0);    /* an empty buffer gives its block back */
		if (n == 0)
			return 0;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return -1;
		*why = strerror(errno);
		return -2;
	}
	ssize_t total = 0;
	for (;;) {
		ERR_clear_error();
		int r = SSL_read(io->ssl, p, avail > INT32_MAX ? INT32_MAX : (int)avail);
		if (r > 0) {
			iobuf_commit(&io->in, (size_t)r);
			total += r;
			/* A record is decrypted whole: what is left of it is not on the socket,
			 * and the socket's readiness would not bring it. */
			int pending = SSL_pending(io->ssl);
			if (pending <= 0)
				return total;
			p = iobuf_space(&io->in, (size_t)pending, &avail);
			if (!p) {
				*why = "out of memory";
				return -2;
			}
			continue;
		}
		int e = SSL_get_error(io->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			if (total == 0)
				iobuf_drain(&io->in, 0);
			return total > 0 ? total : -1;
		}
		if (total > 0)
			return total;   /* the error again at the next read */
		iobuf_drain(&io->in, 0);
		if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0) ||
		    tls_unexpected_eof(e)) {
			/* a peer that closed without close_notify is an end of stream, not an error (PgBouncer) */
			ERR_clear_error();
			return 0;
		}
		*why = note_tls_error(e);
		return -2;
	}
}

/* Read once and tell the owner what came: bytes, the end of the stream, or an error. May free io. */
static void read_and_tell(struct connio *io)
{
	const char *why = NULL;
	ssize_t n = read_some(io, &why);
	if (n > 0)
		io->ops->on_read(io->arg);
	else if (n == 0)
		io->ops->on_error(io->arg, NULL);
	else if (n == -2)
		io->ops->on_error(io->arg, why);
}

static void handshake(struct connio *io)
{
	ERR_clear_error();
	int r = SSL_do_handshake(io->ssl);
	if (r == 1) {
		io->state = IO_OPEN;
		disarm_write(io);
		if (io->tls_accepting) {
			/* The client speaks first; what it sent with its Finished is read now. */
			if (iobuf_len(&io->out) > 0 && !flush_one(io))
				return;
			read_and_tell(io);
		} else {
			io->ops->on_connect(io->arg);
		}
		return;
	}
	int e = SSL_get_error(io->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		disarm_write(io);
		return;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		arm_write(io);
		return;
	}
	io->ops->on_error(io->arg, note_tls_error(e));
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct connio *io = arg;
	(void)fd;
	(void)what;
	connio_enter();
	if (io->state == IO_HANDSHAKE) {
		handshake(io);
	} else if (io->state == IO_OPEN) {
		if (io->write_wants_read) {
			io->write_wants_read = false;
			if (!flush_one(io))
				goto out;
		}
		read_and_tell(io);
	}
out:
	connio_leave();
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
	struct connio *io = arg;
	(void)what;
	connio_enter();
	if (io->state == IO_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
			err = errno;
		if (err == EINPROGRESS || err == EALREADY)
			goto out;
		disarm_write(io);
		if (err) {
			io->ops->on_error(io->arg, strerror(err));
			goto out;
		}
		io->state = IO_OPEN;
		connio_resume_read(io);
		io->ops->on_connect(io->arg);
	} else if (io->state == IO_HANDSHAKE) {
		handshake(io);
	} else if (io->state == IO_OPEN) {
		if (flush_one(io) && iobuf_len(&io->out) <= RELAY_LOW_WATER)
			io->ops->on_drain(io->arg);
	}
out:
	connio_leave();
}

static bool assign(struct connio *io, struct event_base *base, int fd, const struct connio_ops *ops, void *arg)
{
	io->fd = fd;
	io->ssl = NULL;
	io->ops = ops;
	io->arg = arg;
	io->reading = io->writing = io->queued = false;
	io->shut_when_flushed = io->tls_accepting = io->write_wants_read = false;
	memset(&io->in, 0, sizeof(io->in));
	memset(&io->out, 0, sizeof(io->out));
	io->out.on_fill = out_filled;
	io->wr = NULL;
	return event_assign(&io->rd, base, fd, EV_READ | EV_PERSIST, on_readable, io) == 0;
}

bool connio_open(struct connio *io, struct event_base *base, int fd, const struct connio_ops *ops, void *arg)
{
	if (!assign(io, base, fd, ops, arg))
		return false;
	io->state = IO_OPEN;
	connio_resume_read(io);
	return io->reading;
}

bool connio_connect(struct connio *io, struct event_base *base, const struct sockaddr *addr, socklen_t len,
                    const struct connio_ops *ops, void *arg)
{
	int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	if (!assign(io, base, fd, ops, arg)) {
		close(fd);
		errno = ENOMEM;
		return false;
	}
	io->state = IO_CONNECTING;
	if (connect(fd, addr, len) != 0 && errno != EINPROGRESS) {
		int err = errno;
		close(fd);
		io->fd = -1;
		io->state = IO_CLOSED;
		errno = err;
		return false;
	}
	arm_write(io);   /* writable: connected (or failed, SO_ERROR says) */
	if (!io->writing) {
		close(fd);
		io->fd = -1;
		io->state = IO_CLOSED;
		errno = ENOMEM;
		return false;
	}
	return true;
}

bool connio_start_tls(struct connio *io, SSL *ssl, bool accepting)
{
	if (iobuf_len(&io->out) > 0) {
		/* the one-byte answer to SSLRequest goes in the clear, now */
		ssize_t n = send(io->fd, iobuf_data(&io->out), iobuf_len(&io->out), MSG_NOSIGNAL);
		if (n != (ssize_t)iobuf_len(&io->out)) {
			SSL_free(ssl);
			return false;
		}
		iobuf_drain(&io->out, (size_t)n);
	}
	unqueue(io);
	if (SSL_set_fd(ssl, io->fd) != 1) {
		SSL_free(ssl);
		return false;
	}
	SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (accepting)
		SSL_set_accept_state(ssl);
	else
		SSL_set_connect_state(ssl);
	io->ssl = ssl;
	io->tls_accepting = accepting;
	io->state = IO_HANDSHAKE;
	connio_resume_read(io);
	if (!accepting)
		arm_write(io);   /* the ClientHello goes first */
	return true;
}

void connio_close(struct connio *io)
{
	unqueue(io);
	if (io->state == IO_CLOSED) {
		iobuf_free(&io->in);
		iobuf_free(&io->out);
		return;
	}
	if (io->reading)
		event_del(&io->rd);
	if (io->wr)
		event_free(io->wr);    /* deletes it when pending */
	io->wr = NULL;
	io->reading = io->writing = false;
	if (io->ssl) {
		SSL_free(io->ssl);
		io->ssl = NULL;
	}
	if (io->fd >= 0)
		close(io->fd);
	io->fd = -1;
	io->state = IO_CLOSED;
	iobuf_free(&io->in);
	iobuf_free(&io->out);
}

void connio_stop(struct connio *io)
{
	unqueue(io);
	connio_pause_read(io);
	disarm_write(io);
	iobuf_drain(&io->out, iobuf_len(&io->out));
}

void connio_pause_read(struct connio *io)
{
	if (io->reading) {
		event_del(&io->rd);
		io->reading = false;
	}
}

void connio_resume_read(struct connio *io)
{
	if (!io->reading && io->fd >= 0 && io->state != IO_CONNECTING) {
		if (event_add(&io->rd, NULL) == 0)
			io->reading = true;
	}
}

void connio_shut_when_flushed(struct connio *io)
{
	io->shut_when_flushed = true;
	if (iobuf_len(&io->out) == 0 && !io->ssl && io->state == IO_OPEN)
		shutdown(io->fd, SHUT_WR);
}
