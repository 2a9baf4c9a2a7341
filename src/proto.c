/* SPDX-License-Identifier: PostgreSQL */
/* proto.c - see proto.h. Layout follows protocol-message-formats.html. */
#include "proto.h"

#include "iobuf.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void msg_init(struct msgbuf *m)
{
	m->data = m->inline_buf;
	m->len = 0;
	m->cap = sizeof(m->inline_buf);
	m->start = 0;
	m->failed = false;
}

void msg_free(struct msgbuf *m)
{
	if (m->data != m->inline_buf)
		free(m->data);
	msg_init(m);
}

static bool msg_reserve(struct msgbuf *m, size_t extra)
{
	if (m->failed)
		return false;
	if (m->len + extra <= m->cap)
		return true;
	size_t cap = m->cap * 2;
	while (cap < m->len + extra)
		cap *= 2;
	uint8_t *p = m->data == m->inline_buf ? malloc(cap) : realloc(m->data, cap);
	if (!p) {
		m->failed = true;
		return false;
	}
	if (m->data == m->inline_buf)
		memcpy(p, m->inline_buf, m->len);
	m->data = p;
	m->cap = cap;
	return true;
}

void msg_add_bytes(struct msgbuf *m, const void *p, size_t n)
{
	if (!msg_reserve(m, n))
		return;
	if (n)
		memcpy(m->data + m->len, p, n);
	m->len += n;
}

void msg_begin(struct msgbuf *m, char type)
{
	if (type)
		msg_add_byte(m, (uint8_t)type);
	m->start = m->len;
	msg_add_int32(m, 0);    /* length, patched by msg_end */
}

void msg_add_byte(struct msgbuf *m, uint8_t b)
{
	msg_add_bytes(m, &b, 1);
}

void msg_add_int16(struct msgbuf *m, int16_t v)
{
	uint16_t n = htons((uint16_t)v);
	msg_add_bytes(m, &n, 2);
}

void msg_add_int32(struct msgbuf *m, int32_t v)
{
	uint32_t n = htonl((uint32_t)v);
	msg_add_bytes(m, &n, 4);
}

void msg_add_string(struct msgbuf *m, const char *s)
{
	msg_add_bytes(m, s, strlen(s) + 1);
}

bool msg_end(struct msgbuf *m)
{
	if (m->failed)
		return false;
	uint32_t n = htonl((uint32_t)(m->len - m->start));
	memcpy(m->data + m->start, &n, 4);
	return true;
}

bool msg_flush_to(struct msgbuf *m, struct iobuf *out)
{
	if (m->failed)
		return false;
	bool ok = iobuf_add(out, m->data, m->len);
	m->len = 0;
	m->start = 0;
	return ok;
}

void msg_add_errorv(struct msgbuf *m, char type, const char *severity, const char *sqlstate,
                    const char *detail, const char *hint, const char *fmt, va_list ap)
{
	char text[1024];
	vsnprintf(text, sizeof(text), fmt, ap);
	msg_begin(m, type);
	msg_add_byte(m, 'S');
	msg_add_string(m, severity);
	msg_add_byte(m, 'V');
	msg_add_string(m, severity);
	msg_add_byte(m, 'C');
	msg_add_string(m, sqlstate);
	msg_add_byte(m, 'M');
	msg_add_string(m, text);
	if (detail) {
		msg_add_byte(m, 'D');
		msg_add_string(m, detail);
	}
	if (hint) {
		msg_add_byte(m, 'H');
		msg_add_string(m, hint);
	}
	msg_add_byte(m, 0);
	msg_end(m);
}

void msg_add_error(struct msgbuf *m, char type, const char *severity, const char *sqlstate,
                   const char *detail, const char *hint, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	msg_add_errorv(m, type, severity, sqlstate, detail, hint, fmt, ap);
	va_end(ap);
}

void msg_add_ready(struct msgbuf *m, char status)
{
	msg_begin(m, PqMsg_ReadyForQuery);
	msg_add_byte(m, (uint8_t)status);
	msg_end(m);
}

void msg_add_parameter_status(struct msgbuf *m, const char *name, const char *value)
{
	msg_begin(m, PqMsg_ParameterStatus);
	msg_add_string(m, name);
	msg_add_string(m, value);
	msg_end(m);
}


bool proto_startup_param(struct msgreader *r, const char **name, const char **value)
{
	*name = mr_string(r);
	if (r->bad || !**name)
		return false;
	*value = mr_string(r);
	return !r->bad;
}

/* A field's value into its pg_error buffer, cut to size: errors are logged and relayed, never parsed further. */
#define SET_FIELD(field, value) snprintf((field), sizeof(field), "%s", (value))

bool proto_parse_error(const void *body, size_t len, struct pg_error *out)
{
	struct msgreader r;
	mr_init(&r, body, len);
	memset(out, 0, sizeof(*out));
	for (;;) {
		uint8_t code = mr_byte(&r);
		if (r.bad)
			return false;
		if (code == 0)
			return true;
		const char *value = mr_string(&r);
		if (r.bad)
			return false;
		switch (code) {
		case 'S': SET_FIELD(out->severity, value); break;
		case 'C': SET_FIELD(out->sqlstate, value); break;
		case 'M': SET_FIELD(out->message, value); break;
		case 'D': SET_FIELD(out->detail, value); break;
		case 'H': SET_FIELD(out->hint, value); break;
		default: break;
		}
	}
}

#undef SET_FIELD

bool proto_parse_replication(const char *value, enum replication_mode *out)
{
	static const char *const on[] = { "true", "on", "yes", "1" }, *const off[] = { "false", "off", "no", "0" };
	if (strcasecmp(value, "database") == 0) {
		*out = REPLICATION_LOGICAL;
		return true;
	}
	for (size_t i = 0; i < sizeof(on) / sizeof(on[0]); i++) {
		if (strcasecmp(value, on[i]) == 0) {
			*out = REPLICATION_PHYSICAL;
			return true;
		}
		if (strcasecmp(value, off[i]) == 0) {
			*out = REPLICATION_NONE;
			return true;
		}
	}
	return false;
}

const char *proto_replication_value(enum replication_mode mode)
{
	return mode == REPLICATION_LOGICAL ? "database" : mode == REPLICATION_PHYSICAL ? "true" : NULL;
}
