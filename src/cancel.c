/* cancel.c - see cancel.h. */
#include "cancel.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "client.h"
#include "log.h"
#include "pool.h"
#include "proto.h"
#include "server.h"
#include "sluice.h"

void cancel_request(struct sluice *sl, int32_t pid, int32_t key)
{
	struct client *target = client_find_by_key(sl, pid, key);
	if (target && target->server)
		cancel_forward(target->server);
	else
		log_debug("cancel request for an unknown or idle client ignored");
}

static void cancel_done_cb(struct bufferevent *bev, void *arg)
{
	(void)arg;
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_free(bev);
}

static void cancel_event_cb(struct bufferevent *bev, short events, void *arg)
{
	(void)arg;
	if (events & BEV_EVENT_TIMEOUT)
		log_warning("cancel request not forwarded within cancel_wait_timeout; dropped");
	if (!(events & BEV_EVENT_CONNECTED))
		bufferevent_free(bev);
}

void cancel_forward(struct server *s)
{
	if (s->addr_len == 0)
		return;
	struct bufferevent *bev = bufferevent_socket_new(s->pool->sl->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!bev)
		return;
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, 0);
	msg_add_int32(&m, PROTO_CANCEL_REQUEST);
	msg_add_int32(&m, s->cancel_pid);
	msg_add_int32(&m, s->cancel_key);
	msg_end(&m);
	msg_flush_to(&m, bufferevent_get_output(bev));
	msg_free(&m);
	bufferevent_setcb(bev, NULL, cancel_done_cb, cancel_event_cb, NULL);
	/* cancel_wait_timeout bounds connecting to the server and sending (0: no bound) */
	usec_t wait = s->pool->sl->cfg->cancel_wait_timeout;
	struct timeval tv = { (time_t)(wait / USEC_PER_SEC), (suseconds_t)(wait % USEC_PER_SEC) };
	if (wait > 0)
		bufferevent_set_timeouts(bev, NULL, &tv);
	bufferevent_enable(bev, EV_WRITE);
	if (bufferevent_socket_connect(bev, (struct sockaddr *)&s->addr, (int)s->addr_len) != 0)
		bufferevent_free(bev);
}
