/* SPDX-License-Identifier: PostgreSQL */
/*
 * fuzz_tags.c - libFuzzer target for the sqlcommenter parser: any bytes as
 * a statement text must give a result without reading past len, and the
 * result must keep the promises of tags.h. Build and run: tests/fuzz/README.md.
 */
#include "fuzz.h"

#include "ai/tags.h"

static void check_text_field(const char *field, size_t field_size)
{
	size_t n = strnlen(field, field_size);

	CHECK(n < field_size);
}

static void check_absent(const struct ai_tags *t)
{
	CHECK(!t->present && !t->has_ai_key);
	CHECK(t->user[0] == '\0' && t->model[0] == '\0' && t->conversation[0] == '\0');
	CHECK(t->traceparent[0] == '\0');
	CHECK(t->tokens_in == -1 && t->tokens_out == -1 && t->latency_ms == -1 && t->ttl_s == -1);
	CHECK(t->cache == AI_CACHE_NONE);
	CHECK(t->comment_start == 0 && t->comment_end == 0);
	CHECK(t->error_detail == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* libFuzzer's data is an exactly sized heap block: ASan sees any read past size */
	const char *text = (const char *) data;
	struct ai_tags tags;
	char err[TAGS_ERRBUF_SIZE];
	char tiny[3];
	enum tags_result r;

	memset(&tags, 0xa5, sizeof tags);  /* the parser must reset what it reports */
	memset(err, 0, sizeof err);
	r = tags_parse(text, size, &tags, err, sizeof err);

	switch (r) {
	case TAGS_NONE:
		check_absent(&tags);
		CHECK(err[0] == '\0');
		break;
	case TAGS_OK:
		CHECK(tags.present);
		CHECK(tags.comment_start + 4 <= tags.comment_end && tags.comment_end <= size);
		CHECK(memcmp(text + tags.comment_start, "/*", 2) == 0);
		CHECK(memcmp(text + tags.comment_end - 2, "*/", 2) == 0);
		check_text_field(tags.user, sizeof tags.user);
		check_text_field(tags.model, sizeof tags.model);
		check_text_field(tags.conversation, sizeof tags.conversation);
		check_text_field(tags.traceparent, sizeof tags.traceparent);
		CHECK(tags.traceparent[0] == '\0' || strlen(tags.traceparent) == 55);
		CHECK(tags.tokens_in >= -1 && tags.tokens_in <= TAGS_TOKENS_MAX);
		CHECK(tags.tokens_out >= -1 && tags.tokens_out <= TAGS_TOKENS_MAX);
		CHECK(tags.latency_ms >= -1 && tags.latency_ms <= TAGS_LATENCY_MAX_MS);
		CHECK(tags.ttl_s == -1 || (tags.ttl_s >= TAGS_TTL_MIN_S && tags.ttl_s <= TAGS_TTL_MAX_S));
		CHECK(tags.has_ai_key || tags.traceparent[0] != '\0');
		CHECK(err[0] == '\0' && tags.error_detail == NULL);
		break;
	case TAGS_INVALID:
		CHECK(err[0] != '\0');
		CHECK(strnlen(err, sizeof err) < sizeof err);
		/* a bad value names its key; a malformed comment (naming an ai_ key) says what is wrong */
		CHECK(strstr(err, "tag \"") != NULL ||
		      (strncmp(err, "invalid sqlcommenter comment: ", 30) == 0 && tags.error_detail != NULL));
		break;
	default:
		abort();
	}

	/* same answer with a tiny and with no error buffer */
	CHECK(tags_parse(text, size, &tags, tiny, sizeof tiny) == r);
	CHECK(tags_parse(text, size, &tags, NULL, 0) == r);
	return 0;
}
