/* SPDX-License-Identifier: PostgreSQL */
/*
 * stmt.c - see stmt.h. Only proto.c's reader touches the bytes.
 */
#include "stmt.h"

#include "proto.h"

uint32_t stmt_header_len(const uint8_t hdr[5])
{
	struct msgreader r;
	mr_init(&r, hdr + 1, 4);
	return (uint32_t)mr_int32(&r);
}

bool stmt_read_parse(const uint8_t *body, size_t len, struct stmt_parse *p)
{
	struct msgreader rd;
	mr_init(&rd, body, len);
	p->name = mr_string(&rd);
	size_t at = rd.pos;
	p->query = mr_string(&rd);
	p->query_len = rd.bad ? 0 : rd.pos - at - 1;
	int16_t n = mr_int16(&rd);
	p->n_types = n > 0 ? (uint16_t)n : 0;
	p->types = p->n_types ? mr_bytes(&rd, (size_t)p->n_types * 4) : NULL;
	return !rd.bad && n >= 0;
}

bool stmt_read_execute(const uint8_t *body, size_t len, struct stmt_execute *e)
{
	struct msgreader rd;
	mr_init(&rd, body, len);
	e->portal = mr_string(&rd);
	e->max_rows = mr_int32(&rd);
	return !rd.bad;
}

bool stmt_read_target(const uint8_t *body, size_t len, struct stmt_target *t)
{
	struct msgreader rd;
	mr_init(&rd, body, len);
	t->what = mr_byte(&rd);
	t->name = mr_string(&rd);
	return !rd.bad;
}
