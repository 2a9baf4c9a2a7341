/* SPDX-License-Identifier: PostgreSQL */
/* test_proto.c - message framing: builders, the bounds-checked reader,
 * header peeking, ErrorResponse fields, and the SET text of varcache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <event2/buffer.h>
#include <string.h>

#include "iobuf.h"
#include "proto.h"
#include "varcache.h"

static void test_builder_frames_length_and_type(void **state)
{
	(void)state;
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_Query);
	msg_add_string(&m, "select 1");
	assert_true(msg_end(&m));
	/* 'Q' + int32 length (4 + 9) + "select 1\0" */
	assert_int_equal(m.len, 1 + 4 + 9);
	assert_int_equal(m.data[0], 'Q');
	assert_memory_equal(m.data + 1, "\0\0\0\x0d", 4);
	assert_string_equal((const char *)m.data + 5, "select 1");
	msg_free(&m);
}

static void test_startup_packet_has_no_type_byte(void **state)
{
	(void)state;
	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, 0);
	msg_add_int32(&m, (int32_t)PROTO_V3_0);
	msg_add_string(&m, "user");
	msg_add_string(&m, "alice");
	msg_add_byte(&m, 0);
	assert_true(msg_end(&m));
	assert_int_equal(m.len, 4 + 4 + 5 + 6 + 1);
	assert_memory_equal(m.data, "\0\0\0\x14\0\x03\0\0", 8);
	msg_free(&m);
}

/* StartupMessage pairs: user, database, then the empty name; a body cut anywhere is bad. */
static void test_startup_params_are_read_until_the_empty_name(void **state)
{
	static const char body[] = "user\0app\0database\0db\0\0";
	struct msgreader r;
	const char *name, *value;

	mr_init(&r, body, sizeof(body) - 1);
	assert_true(proto_startup_param(&r, &name, &value));
	assert_string_equal(name, "user");
	assert_string_equal(value, "app");
	assert_true(proto_startup_param(&r, &name, &value));
	assert_string_equal(name, "database");
	assert_string_equal(value, "db");
	assert_false(proto_startup_param(&r, &name, &value));
	assert_false(r.bad);

	for (size_t cut = 0; cut < sizeof(body) - 2; cut++) {
		int pairs = 0;
		mr_init(&r, body, cut);
		while (proto_startup_param(&r, &name, &value))
			pairs++;
		assert_true(r.bad);    /* no terminating empty name within cut bytes */
		assert_true(pairs <= 2);
	}
}

static void test_large_message_moves_to_heap(void **state)
{
	(void)state;
	struct msgbuf m;
	char big[5000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	msg_init(&m);
	msg_begin(&m, PqMsg_Query);
	msg_add_string(&m, big);
	assert_true(msg_end(&m));
	assert_int_equal(m.len, 1 + 4 + sizeof(big));
	assert_ptr_not_equal(m.data, m.inline_buf);
	msg_free(&m);
}

static void test_error_response_fields_round_trip(void **state)
{
	(void)state;
	struct msgbuf m;
	struct pg_error f;
	msg_init(&m);
	msg_add_error(&m, PqMsg_ErrorResponse, "FATAL", SQLSTATE_INVALID_PASSWORD, "Some detail.", "A hint.",
	              "password authentication failed for user \"%s\"", "bob");
	assert_int_equal(m.data[0], 'E');
	assert_true(proto_parse_error(m.data + 5, m.len - 5, &f));
	assert_string_equal(f.severity, "FATAL");
	assert_string_equal(f.sqlstate, "28P01");
	assert_string_equal(f.message, "password authentication failed for user \"bob\"");
	assert_string_equal(f.detail, "Some detail.");
	msg_free(&m);
}

static void test_reader_stops_at_the_end_of_the_body(void **state)
{
	(void)state;
	const uint8_t body[] = { 0, 0, 0, 7, 'a', 'b' };
	struct msgreader r;
	mr_init(&r, body, sizeof(body));
	assert_int_equal(mr_int32(&r), 7);
	assert_false(r.bad);
	assert_string_equal(mr_string(&r), "");   /* "ab" has no NUL */
	assert_true(r.bad);
	assert_int_equal(mr_int32(&r), 0);
	assert_null(mr_bytes(&r, 1));
	assert_int_equal(mr_remaining(&r), 0);
}

static void test_malformed_error_body_is_rejected(void **state)
{
	(void)state;
	const uint8_t body[] = { 'S', 'E', 'R' };   /* field without NUL, no terminator */
	struct pg_error f;
	assert_false(proto_parse_error(body, sizeof(body), &f));
}

static void test_peek_header_needs_five_bytes(void **state)
{
	(void)state;
	struct iobuf b = { 0 };
	uint8_t type;
	uint32_t len;
	iobuf_add(&b, "Z\0\0\0", 4);
	assert_false(proto_peek_header(&b, &type, &len));
	iobuf_add(&b, "\x05I", 2);
	assert_true(proto_peek_header(&b, &type, &len));
	assert_int_equal(type, 'Z');
	assert_int_equal(len, 5);
	assert_int_equal(iobuf_len(&b), 6);   /* nothing consumed */
	iobuf_free(&b);
}

static void test_varcache_sets_only_differing_values_with_quotes_doubled(void **state)
{
	(void)state;
	struct varcache client = { 0 }, server = { 0 };
	char sql[256];
	varcache_set_tracked("IntervalStyle");
	assert_true(varcache_set(&client, "timezone", "Europe/Berlin"));
	assert_true(varcache_set(&client, "application_name", "it's"));
	assert_true(varcache_set(&client, "DateStyle", "ISO, MDY"));
	assert_true(varcache_set(&server, "DateStyle", "ISO, MDY"));
	assert_false(varcache_set(&client, "work_mem", "1MB"));   /* not tracked */
	assert_int_equal(varcache_apply_sql(&client, &server, sql, sizeof(sql)), 2);
	assert_string_equal(sql, "SET TimeZone='Europe/Berlin';SET application_name='it''s';");
	assert_int_equal(varcache_apply_sql(&client, &server, sql, 10), -1);
	varcache_clear(&client);
	varcache_clear(&server);
}

static void test_varcache_resets_a_value_the_client_never_set(void **state)
{
	(void)state;
	struct varcache client = { 0 }, server = { 0 }, copy = { 0 };
	char sql[256];
	varcache_set_tracked("search_path");
	assert_true(varcache_set(&server, "search_path", "tenant_b"));   /* another client's */
	assert_true(varcache_set(&client, "TimeZone", "UTC"));
	assert_int_equal(varcache_apply_sql(&client, &server, sql, sizeof(sql)), 2);
	assert_string_equal(sql, "SET TimeZone='UTC';RESET search_path;");
	assert_true(varcache_copy(&server, &client));    /* what the server has after those */
	assert_int_equal(varcache_apply_sql(&client, &server, sql, sizeof(sql)), 0);
	assert_true(varcache_copy(&copy, &server));
	assert_string_equal(copy.values[varcache_index("TimeZone")], "UTC");
	assert_null(copy.values[varcache_index("search_path")]);
	varcache_clear(&client);
	varcache_clear(&server);
	varcache_clear(&copy);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_builder_frames_length_and_type),
		cmocka_unit_test(test_startup_packet_has_no_type_byte),
		cmocka_unit_test(test_large_message_moves_to_heap),
		cmocka_unit_test(test_startup_params_are_read_until_the_empty_name),
		cmocka_unit_test(test_error_response_fields_round_trip),
		cmocka_unit_test(test_reader_stops_at_the_end_of_the_body),
		cmocka_unit_test(test_malformed_error_body_is_rejected),
		cmocka_unit_test(test_peek_header_needs_five_bytes),
		cmocka_unit_test(test_varcache_sets_only_differing_values_with_quotes_doubled),
		cmocka_unit_test(test_varcache_resets_a_value_the_client_never_set),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
