/* SPDX-License-Identifier: PostgreSQL */
/* cancel.c - see cancel.h. */
#include "cancel.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "config.h"
#include "log.h"
#include "pool.h"   /* struct pool: a server's sl */
#include "proto.h"
#include "server.h"
#include "sluice.h"

/* One CancelRequest on its way to PostgreSQL. */
struct cancel_req {
	struct cancel_req *next_of_server; /* s->cancels */
	struct cancel_req *prev, *next;    /* sl->cancels, all of them */
	struct sluice *sl;
	struct server *server;             /* NULL once the server was freed */
	void (*done)(struct server *s);    /* told when it was the server's last one */
	struct bufferevent *bev;
};

#define PEER_TTL_MASK 3             /* forwards left, in the key's last 2 bits */
#define PEER_ID_MAX 16383

void cancel_key_stamp(const struct sluice_config *cfg, int32_t *pid, int32_t *key)
{
	if (cfg->peer_id <= 0)
		return;
	uint32_t p = (uint32_t)*pid & 0xff0000ffu, id = (uint32_t)cfg->peer_id;
	p |= (id & 0xffu) << 16 | ((id >> 8) & 0x3fu) << 8;
	*pid = (int32_t)p;
	*key = (int32_t)((uint32_t)*key | PEER_TTL_MASK);
}

/* The peer id a key carries (cancel_key_stamp's layout). */
static int key_peer_id(int32_t pid)
{
	uint32_t p = (uint32_t)pid;
	return (int)(((p >> 16) & 0xffu) | ((p >> 8) & 0x3fu) << 8);
}

static void send_to_peer(struct sluice *sl, const struct peer_config *peer, int32_t pid, int32_t key);

bool cancel_route(struct sluice *sl, int32_t pid, int32_t *keyp)
{
	int32_t key = *keyp;
	const struct sluice_config *cfg = sl->cfg;
	if (cfg->peer_id > 0) {
		int peer_id = key_peer_id(pid);
		if (peer_id != 0 && peer_id != cfg->peer_id) {
			const struct peer_config *peer = config_find_peer(cfg, peer_id);
			if (!peer)
				log_debug("cancel request for peer %d, which is not in [peers], ignored", peer_id);
			else if ((key & PEER_TTL_MASK) == 0)
				log_warning("cancel request for peer %d was forwarded too often (a loop in [peers]?); dropped",
				            peer_id);
			else
				send_to_peer(sl, peer, pid, key - 1);
			return false;
		}
		key |= PEER_TTL_MASK;    /* forwarded here: the budget spent on the way is not part of the key */
	}
	*keyp = key;
	return true;
}

/* Unlink req from its server; true when it was the server's last one. */
static bool unlink_from_server(struct cancel_req *req)
{
	struct server *s = req->server;
	if (!s)
		return false;
	for (struct cancel_req **pp = &s->cancels; *pp; pp = &(*pp)->next_of_server)
		if (*pp == req) {
			*pp = req->next_of_server;
			break;
		}
	req->server = NULL;
	return s->cancels == NULL;
}

static void free_req(struct cancel_req *req)
{
	if (req->prev)
		req->prev->next = req->next;
	else
		req->sl->cancels = req->next;
	if (req->next)
		req->next->prev = req->prev;
	if (req->bev)
		bufferevent_free(req->bev);
	free(req);
}

/* The cancel landed, failed or timed out: the server may serve others again. */
static void finish(struct cancel_req *req)
{
	struct server *s = req->server;
	void (*done)(struct server *s) = req->done;
	bool last = unlink_from_server(req);
	free_req(req);
	if (last)
		done(s);
}

static void cancel_read_cb(struct bufferevent *bev, void *arg)
{
	(void)arg;
	/* PostgreSQL answers a CancelRequest with nothing but a close. */
	evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
}

static void cancel_event_cb(struct bufferevent *bev, short events, void *arg)
{
	(void)bev;
	if (events & BEV_EVENT_CONNECTED)
		return;
	if (events & BEV_EVENT_TIMEOUT)
		log_warning("cancel request not forwarded within cancel_wait_timeout; dropped");
	/* EOF: the postmaster has signalled the backend. Error or timeout: it
	 * never will, or too late to matter. */
	finish(arg);
}

/* A new cancel connection carrying CancelRequest (pid, key), not connected yet; NULL when out of memory. */
static struct cancel_req *new_req(struct sluice *sl, int32_t pid, int32_t key)
{
	struct cancel_req *req = calloc(1, sizeof(*req));
	if (!req)
		return NULL;
	req->bev = bufferevent_socket_new(sl->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!req->bev) {
		free(req);
		return NULL;
	}
	req->sl = sl;
	req->next = sl->cancels;
	if (sl->cancels)
		sl->cancels->prev = req;
	sl->cancels = req;

	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, 0);
	msg_add_int32(&m, PROTO_CANCEL_REQUEST);
	msg_add_int32(&m, pid);
	msg_add_int32(&m, key);
	msg_end(&m);
	if (!m.failed)
		evbuffer_add(bufferevent_get_output(req->bev), m.data, m.len);
	msg_free(&m);
	bufferevent_setcb(req->bev, cancel_read_cb, NULL, cancel_event_cb, req);
	usec_t wait = sl->cfg->cancel_wait_timeout;
	if (wait > 0) {
		struct timeval tv = { (time_t)(wait / USEC_PER_SEC), (suseconds_t)(wait % USEC_PER_SEC) };
		bufferevent_set_timeouts(req->bev, &tv, &tv);
	}
	bufferevent_enable(req->bev, EV_READ | EV_WRITE);
	return req;
}

void cancel_forward(struct server *s, void (*done)(struct server *s))
{
	struct sluice *sl = s->pool->sl;
	if (s->addr_len == 0)
		return;
	struct cancel_req *req = new_req(sl, s->cancel_pid, s->cancel_key);
	if (!req)
		return;
	req->server = s;
	req->done = done;
	req->next_of_server = s->cancels;
	s->cancels = req;
	if (bufferevent_socket_connect(req->bev, (struct sockaddr *)&s->addr, (int)s->addr_len) != 0) {
		/* the bufferevent is unusable: drop it without calling back into the pool now */
		unlink_from_server(req);
		free_req(req);
	}
}

/*
 * Pass a CancelRequest on to peer: its unix socket ("/dir", or
 * unix_socket_dir when host is not set) or TCP address. Fire and forget: the
 * peer answers with a close, as PostgreSQL.
 */
static void send_to_peer(struct sluice *sl, const struct peer_config *peer, int32_t pid, int32_t key)
{
	const char *dir = peer->host ? peer->host : sl->cfg->unix_socket_dir;
	bool is_unix = !peer->host || peer->host[0] == '/';
	struct sockaddr_un un;
	if (is_unix) {
		memset(&un, 0, sizeof(un));
		un.sun_family = AF_UNIX;
		int n = snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%d", dir, peer->port);
		if (n < 0 || (size_t)n >= sizeof(un.sun_path) || !dir[0]) {
			log_warning("cancel request for peer %d dropped: no usable unix socket path for host \"%s\"",
			            peer->id, dir);
			return;
		}
	}
	struct cancel_req *req = new_req(sl, pid, key);
	if (!req)
		return;
	int rc = is_unix ? bufferevent_socket_connect(req->bev, (struct sockaddr *)&un, (int)sizeof(un))
	                 : bufferevent_socket_connect_hostname(req->bev, sl->dns, AF_UNSPEC, peer->host, peer->port);
	if (rc != 0) {
		log_warning("cancel request for peer %d dropped: could not connect to it", peer->id);
		free_req(req);
		return;
	}
	log_debug("cancel request forwarded to peer %d", peer->id);
}

void cancel_detach(struct server *s)
{
	while (s->cancels) {
		struct cancel_req *req = s->cancels;
		s->cancels = req->next_of_server;
		req->server = NULL;
	}
}

void cancel_free_all(struct sluice *sl)
{
	while (sl->cancels) {
		struct cancel_req *req = sl->cancels;
		unlink_from_server(req);
		free_req(req);
	}
}
