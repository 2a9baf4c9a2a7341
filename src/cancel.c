/* SPDX-License-Identifier: PostgreSQL */
/* cancel.c - see cancel.h. */
#include "cancel.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>

#include "client.h"
#include "log.h"
#include "pool.h"
#include "proto.h"
#include "server.h"
#include "sluice.h"

/* One CancelRequest on its way to PostgreSQL. */
struct cancel_req {
	struct cancel_req *next_of_server; /* s->cancels */
	struct cancel_req *prev, *next;    /* sl->cancels, all of them */
	struct sluice *sl;
	struct server *server;             /* NULL once the server was freed */
	struct bufferevent *bev;
};

void cancel_request(struct sluice *sl, int32_t pid, int32_t key)
{
	struct client *target = client_find_by_key(sl, pid, key);
	if (target && target->server)
		cancel_forward(target->server);
	else
		log_debug("cancel request for an unknown client or one without a server ignored");
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
	bool last = unlink_from_server(req);
	free_req(req);
	if (last)
		pool_cancels_done(s);
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

void cancel_forward(struct server *s)
{
	struct sluice *sl = s->pool->sl;
	if (s->addr_len == 0)
		return;
	struct cancel_req *req = calloc(1, sizeof(*req));
	if (!req)
		return;
	req->bev = bufferevent_socket_new(sl->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!req->bev) {
		free(req);
		return;
	}
	req->sl = sl;
	req->next = sl->cancels;
	if (sl->cancels)
		sl->cancels->prev = req;
	sl->cancels = req;
	req->server = s;
	req->next_of_server = s->cancels;
	s->cancels = req;

	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, 0);
	msg_add_int32(&m, PROTO_CANCEL_REQUEST);
	msg_add_int32(&m, s->cancel_pid);
	msg_add_int32(&m, s->cancel_key);
	msg_end(&m);
	msg_flush_to(&m, bufferevent_get_output(req->bev));
	msg_free(&m);
	bufferevent_setcb(req->bev, cancel_read_cb, NULL, cancel_event_cb, req);
	usec_t wait = sl->cfg->cancel_wait_timeout;
	if (wait > 0) {
		struct timeval tv = { (time_t)(wait / USEC_PER_SEC), (suseconds_t)(wait % USEC_PER_SEC) };
		bufferevent_set_timeouts(req->bev, &tv, &tv);
	}
	bufferevent_enable(req->bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(req->bev, (struct sockaddr *)&s->addr, (int)s->addr_len) != 0) {
		/* the bufferevent is unusable: drop it without calling back into the pool now */
		unlink_from_server(req);
		free_req(req);
	}
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
