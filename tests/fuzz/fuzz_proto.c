/* SPDX-License-Identifier: PostgreSQL */
/*
 * fuzz_proto.c - libFuzzer target for proto.c's readers: the input is a v3
 * message stream (type byte, int32 length, body) as a client or a server
 * sends it. Each framed body is read with the mr_* calls pgsluice makes for
 * its type (Parse, Bind, Execute, Describe, DataRow, RowDescription, ...),
 * ErrorResponse/NoticeResponse bodies go through proto_parse_error, and the
 * reader's promises are checked: never past len, "bad" sticks, reads after
 * an overrun return 0 / "" / NULL.
 */
#include "fuzz.h"

#include "pgerror.h"
#include "proto.h"

static void check_reader(const struct msgreader *r)
{
	CHECK(r->pos <= r->len);
	CHECK(mr_remaining(r) == (r->bad ? 0 : r->len - r->pos));
}

static void read_string(struct msgreader *r)
{
	const char *s = mr_string(r);

	CHECK(s != NULL);
	if (r->bad)
		CHECK(s[0] == '\0');
	else
		CHECK(s >= (const char *) r->data && s + strlen(s) < (const char *) r->data + r->len);
	check_reader(r);
}

/* Bind: portal, statement, formats, parameters (int32 length or -1, bytes), result formats. */
static void read_bind(struct msgreader *r)
{
	read_string(r);
	read_string(r);
	for (int pass = 0; pass < 2 && !r->bad; pass++) {
		int16_t n = mr_int16(r);

		for (int i = 0; i < n && !r->bad; i++)
			mr_int16(r);
		if (pass == 0) {
			int16_t k = mr_int16(r);

			for (int i = 0; i < k && !r->bad; i++) {
				int32_t len = mr_int32(r);

				if (len > 0)
					CHECK(mr_bytes(r, (size_t) len) != NULL || r->bad);
			}
		}
	}
}

static void read_body(uint8_t type, const uint8_t *body, size_t len)
{
	struct msgreader r;
	struct pg_error e;

	mr_init(&r, body, len);
	switch (type) {
	case 'E':
	case 'N':
		if (proto_parse_error(body, len, &e)) {
			CHECK(strnlen(e.severity, sizeof e.severity) < sizeof e.severity);
			CHECK(strnlen(e.sqlstate, sizeof e.sqlstate) < sizeof e.sqlstate);
			CHECK(strnlen(e.message, sizeof e.message) < sizeof e.message);
			CHECK(strnlen(e.detail, sizeof e.detail) < sizeof e.detail);
			CHECK(strnlen(e.hint, sizeof e.hint) < sizeof e.hint);
		}
		break;
	case 'P': {                   /* Parse: name, query, parameter types */
		read_string(&r);
		read_string(&r);
		int16_t n = mr_int16(&r);

		for (int i = 0; i < n && !r.bad; i++)
			mr_int32(&r);
		break;
	}
	case 'B':
		read_bind(&r);
		break;
	case 'D': {                   /* DataRow, or Describe ('S'/'P' + name) */
		int16_t n = mr_int16(&r);

		for (int i = 0; i < n && !r.bad; i++) {
			int32_t k = mr_int32(&r);

			if (k > 0 && mr_bytes(&r, (size_t) k) == NULL)
				CHECK(r.bad);
		}
		mr_init(&r, body, len);
		mr_byte(&r);
		read_string(&r);
		break;
	}
	case 'T': {                   /* RowDescription */
		int16_t n = mr_int16(&r);

		for (int i = 0; i < n && !r.bad; i++) {
			read_string(&r);
			mr_int32(&r);
			mr_int16(&r);
			mr_int32(&r);
			mr_int16(&r);
			mr_int32(&r);
			mr_int16(&r);
		}
		break;
	}
	case 'S':                     /* ParameterStatus */
	case 'p':                     /* SASLInitialResponse: mechanism, int32 length, data */
		read_string(&r);
		if (type == 'p') {
			int32_t k = mr_int32(&r);

			if (k > 0)
				mr_bytes(&r, (size_t) k);
		} else {
			read_string(&r);
		}
		break;
	case 'K':                     /* BackendKeyData */
	case 'R':                     /* Authentication* */
		mr_int32(&r);
		mr_int32(&r);
		mr_bytes(&r, mr_remaining(&r));
		break;
	default:                      /* anything else: bytes until the end */
		while (!r.bad && mr_remaining(&r) > 0)
			mr_byte(&r);
		break;
	}
	check_reader(&r);
	if (r.bad) {                  /* an overrun sticks */
		CHECK(mr_byte(&r) == 0 && mr_int16(&r) == 0 && mr_int32(&r) == 0);
		CHECK(mr_string(&r)[0] == '\0' && mr_bytes(&r, 1) == NULL && r.bad);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct msgreader frame;

	/* the stream, framed with the reader itself as client.c and server.c frame it */
	mr_init(&frame, data, size);
	while (mr_remaining(&frame) >= 5) {
		uint8_t type = mr_byte(&frame);
		int32_t len = mr_int32(&frame);
		const uint8_t *body;

		if (len < 4 || (size_t) len - 4 > mr_remaining(&frame))
			break;                /* a bad length ends the session */
		body = mr_bytes(&frame, (size_t) len - 4);
		CHECK(body != NULL && !frame.bad);
		/* a copy of exactly the body's size: ASan sees a read past it */
		uint8_t *copy = malloc(len > 4 ? (size_t) len - 4 : 1);

		CHECK(copy != NULL);
		memcpy(copy, body, (size_t) len - 4);
		read_body(type, copy, (size_t) len - 4);
		free(copy);
	}
	check_reader(&frame);
	return 0;
}
