/* SPDX-License-Identifier: PostgreSQL */
/*
 * cacheio.c - see cacheio.h. Answers are stored as the very bytes PostgreSQL
 * sent, so a hit is a copy; a capture appends what the relay reads.
 */
#include "cacheio.h"

#include <stdio.h>
#include <string.h>

#include "ai/cache.h"
#include "ai/token.h"
#include "iobuf.h"
#include "pool.h"
#include "proto.h"
#include "replyq.h"
#include "server.h"
#include "sluice.h"

/* ---- hits ---- */

void cacheio_write_statement(struct iobuf *out, const struct cache_entry *d)
{
	iobuf_add(out, d->rows, d->rows_len);
	iobuf_add(out, d->rowdesc, d->rowdesc_len);
}

void cacheio_write_rowdesc(struct iobuf *out, const struct cache_entry *e)
{
	iobuf_add(out, e->rowdesc, e->rowdesc_len);
}

void cacheio_write_answer(struct iobuf *out, const struct cache_entry *e)
{
	if (e->rowdesc && e->rowdesc + e->rowdesc_len == e->rows) {
		iobuf_add(out, e->rowdesc, e->rowdesc_len + e->rows_len);
		return;
	}
	iobuf_add(out, e->rowdesc, e->rowdesc_len);
	iobuf_add(out, e->rows, e->rows_len);
}

static uint32_t msg_len_at(const uint8_t *p)
{
	return ((uint32_t)p[1] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 8) | p[4];
}

void cacheio_write_rows(struct iobuf *out, const struct cache_entry *e, uint32_t *pos, int32_t max_rows)
{
	if (*pos == 0 && (max_rows <= 0 || (uint32_t)max_rows > e->n_rows)) {
		iobuf_add(out, e->rows, e->rows_len);    /* the usual case: all of it */
		*pos = e->n_rows;
		return;
	}
	/* A portal fetched in parts. As PostgreSQL, an Execute that reaches its
	 * row limit suspends even when no row is left; the completion tag then
	 * counts the rows of the last Execute only. */
	size_t off = 0;
	uint32_t row = 0, written = 0;
	while (row < *pos && off + PROTO_HEADER_LEN <= e->rows_len && e->rows[off] == PqMsg_DataRow) {
		off += 1 + (size_t)msg_len_at(e->rows + off);
		row++;
	}
	size_t from = off;
	while ((max_rows <= 0 || written < (uint32_t)max_rows) && off + PROTO_HEADER_LEN <= e->rows_len &&
	       e->rows[off] == PqMsg_DataRow) {
		off += 1 + (size_t)msg_len_at(e->rows + off);
		written++;
	}
	iobuf_add(out, e->rows + from, off - from);
	*pos += written;
	if (max_rows > 0 && written == (uint32_t)max_rows) {
		static const uint8_t suspended[5] = { 's', 0, 0, 0, 4 };
		iobuf_add(out, suspended, sizeof(suspended));
		return;
	}
	const char *tag = (const char *)e->rows + off + PROTO_HEADER_LEN;
	if (e->rows_len - off > PROTO_HEADER_LEN + 7 && strncmp(tag, "SELECT ", 7) == 0) {
		struct msgbuf m;
		char text[32];
		snprintf(text, sizeof(text), "SELECT %u", written);
		msg_init(&m);
		msg_begin(&m, PqMsg_CommandComplete);
		msg_add_string(&m, text);
		msg_end(&m);
		msg_flush_to(&m, out);
		msg_free(&m);
	} else {
		iobuf_add(out, e->rows + off, e->rows_len - off);
	}
}

/* ---- capture ---- */

/* A server's reply to a Describe of a statement, into its fill e: ParameterDescription, then RowDescription. */
static void capture_describe(struct cache *cache, struct cache_entry *e, uint8_t type, const uint8_t *msg,
                             size_t total)
{
	if (type == 't' && !e->rows_len && !e->rowdesc)
		cache_fill_rows(cache, e, msg, total);
	else if (type == PqMsg_RowDescription && e->rows_len && !e->complete)
		e->complete = cache_fill_rowdesc(cache, e, msg, total);
	else if (type != PqMsg_NoticeResponse && type != PqMsg_ParameterStatus &&
	         type != PqMsg_NotificationResponse && type != PqMsg_ReadyForQuery)
		cache_fill_fail(e);    /* NoData (no lookup), an error */
}

/* The fill the head of s's reply queue captures into (a forwarded Query, Describe or Execute), or NULL. */
static struct cache_entry *head_fill(struct server *s, uint8_t *type)
{
	struct replyq_entry *h = replyq_head(&s->replies);
	struct cache_entry *fill = h && h->action == RQ_FORWARD ? ai_token_cache(h->token) : NULL;
	if (!fill || (h->type != PqMsg_Query && h->type != PqMsg_Describe && h->type != PqMsg_Execute))
		return NULL;
	*type = h->type;
	return fill;
}

void cacheio_capture_whole(struct server *s, uint8_t type, const uint8_t *msg, size_t total)
{
	uint8_t kind;
	struct cache_entry *e = head_fill(s, &kind);
	struct cache *cache = s->pool->sl->cache;
	if (!e || e->unusable)
		return;
	if (e->describes) {
		capture_describe(cache, e, type, msg, total);
		return;
	}
	switch (type) {
	case PqMsg_RowDescription:
		if (kind == PqMsg_Execute || e->complete)
			cache_fill_fail(e);
		else
			cache_fill_rowdesc(cache, e, msg, total);
		break;
	case PqMsg_CommandComplete:
		if (kind == PqMsg_Describe || e->complete)
			cache_fill_fail(e);
		else if (cache_fill_rows(cache, e, msg, total))
			e->complete = true;
		break;
	case PqMsg_NoticeResponse:
	case PqMsg_ParameterStatus:
	case PqMsg_NotificationResponse:
	case 't':    /* ParameterDescription */
	case PqMsg_ReadyForQuery:
		break;
	default:     /* an error, NoData, an empty query, COPY, a suspended portal */
		cache_fill_fail(e);
		break;
	}
}

void cacheio_capture_begin(struct server *s, uint8_t type, uint32_t len)
{
	uint8_t kind;
	struct cache_entry *e = head_fill(s, &kind);
	s->capture = NULL;
	if (!e || e->unusable)
		return;
	if (type == PqMsg_DataRow && kind != PqMsg_Describe && !e->complete) {
		e->n_rows++;
		s->capture = e;
		s->capture_left = 1 + len;
	} else if (type != PqMsg_NoticeResponse && type != PqMsg_NotificationResponse) {
		cache_fill_fail(e);
	}
}

void cacheio_capture_stream(struct server *s, const uint8_t *bytes, size_t n)
{
	struct cache_entry *e = s->capture;
	if (n > 0 && e && !e->unusable) {
		cache_fill_rows(s->pool->sl->cache, e, bytes, n);
		s->capture_left -= (uint32_t)n;
	}
	if (!e || e->unusable || s->capture_left == 0)
		s->capture = NULL;
}
