/* SPDX-License-Identifier: PostgreSQL */
/* test_iobuf.c - the data path's buffer layer: iobuf.c (message bytes
 * arriving in pieces, a message larger than a block, the block hand-over)
 * and connio.c over a socketpair (reads, output sent at the end of the
 * callback, backpressure: the write event and the drain notice). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "connio.h"
#include "iobuf.h"
#include "proto.h"

static void test_message_split_across_reads_is_whole_once_complete(void **state)
{
	(void)state;
	static const uint8_t msg[] = { 'Q', 0, 0, 0, 13, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0 };
	struct iobuf b = { 0 };
	uint8_t type;
	uint32_t len;
	for (size_t i = 0; i < sizeof(msg); i++) {
		/* one byte per "read": the header and then the body arrive in pieces */
		size_t avail;
		uint8_t *p = iobuf_space(&b, 1, &avail);
		assert_non_null(p);
		assert_true(avail >= 1);
		*p = msg[i];
		iobuf_commit(&b, 1);
		bool have_header = proto_peek_header(&b, &type, &len);
		assert_int_equal(have_header, i + 1 >= PROTO_HEADER_LEN);
	}
	assert_int_equal(type, 'Q');
	assert_int_equal(len, 13);
	assert_int_equal(iobuf_len(&b), 1 + len);
	assert_memory_equal(iobuf_data(&b), msg, sizeof(msg));
	iobuf_drain(&b, 1 + len);
	assert_int_equal(iobuf_len(&b), 0);
	assert_null(b.data);   /* an empty buffer holds no memory */
}

static void test_message_larger_than_a_block_grows_the_buffer(void **state)
{
	(void)state;
	struct iobuf b = { 0 };
	size_t total = 3 * IOBUF_BLOCK + 17;
	uint8_t *big = malloc(total);
	for (size_t i = 0; i < total; i++)
		big[i] = (uint8_t)(i * 7);
	/* drained from the front while more arrives: the content stays contiguous */
	assert_true(iobuf_add(&b, big, 100));
	iobuf_drain(&b, 60);
	assert_true(iobuf_add(&b, big + 100, total - 100));
	assert_int_equal(iobuf_len(&b), total - 60);
	assert_memory_equal(iobuf_data(&b), big + 60, total - 60);
	uint8_t out[32];
	assert_int_equal(iobuf_copyout(&b, total - 60 - 10, out, sizeof(out)), 10);
	assert_memory_equal(out, big + total - 10, 10);
	iobuf_free(&b);
	free(big);
}

static int fills;
static void count_fill(struct iobuf *b)
{
	(void)b;
	fills++;
}

static void test_move_hands_the_block_over_or_copies(void **state)
{
	(void)state;
	struct iobuf src = { 0 }, dst = { 0 };
	dst.on_fill = count_fill;
	fills = 0;
	assert_true(iobuf_add(&src, "abcdef", 6));
	const uint8_t *block = src.data;
	assert_true(iobuf_move(&dst, &src, 6));     /* all of it into an empty buffer: the block moves */
	assert_ptr_equal(dst.data, block);
	assert_int_equal(iobuf_len(&src), 0);
	assert_int_equal(fills, 1);
	assert_true(iobuf_add(&src, "ghij", 4));
	assert_true(iobuf_move(&dst, &src, 2));     /* a part, behind other bytes: copied */
	assert_int_equal(fills, 1);                  /* dst was not empty */
	assert_int_equal(iobuf_len(&dst), 8);
	assert_memory_equal(iobuf_data(&dst), "abcdefgh", 8);
	assert_memory_equal(iobuf_data(&src), "ij", 2);
	assert_int_equal(iobuf_find(&dst, 0, 8, "fg", 2), 5);
	assert_int_equal(iobuf_find(&dst, 0, 6, "fg", 2), -1);   /* past n */
	iobuf_free(&src);
	iobuf_free(&dst);
	iobuf_release_cache();
}

/* ---- connio over a socketpair ---- */

struct probe {
	struct connio io;
	int reads, drains, errors;
	bool eof;
	size_t echo;      /* echo this many bytes of each read back */
};

static void probe_read(void *arg)
{
	struct probe *p = arg;
	p->reads++;
	if (p->echo) {
		size_t n = iobuf_len(&p->io.in) < p->echo ? iobuf_len(&p->io.in) : p->echo;
		connio_add(&p->io, iobuf_data(&p->io.in), n);
		iobuf_drain(&p->io.in, n);
	}
}
static void probe_drain(void *arg) { ((struct probe *)arg)->drains++; }
static void probe_connect(void *arg) { (void)arg; }
static void probe_error(void *arg, const char *why)
{
	struct probe *p = arg;
	p->errors++;
	p->eof = why == NULL;
}
static const struct connio_ops probe_ops = { probe_read, probe_drain, probe_connect, probe_error };

static void test_connio_reads_and_answers_in_one_send(void **state)
{
	(void)state;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	struct event_base *base = event_base_new();
	assert_true(connio_global_init(base));
	struct probe p = { .echo = 1000 };
	assert_true(connio_open(&p.io, base, sv[0], &probe_ops, &p));
	assert_int_equal(write(sv[1], "hello", 5), 5);
	event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(p.reads, 1);
	char buf[16];
	assert_int_equal(read(sv[1], buf, sizeof(buf)), 5);   /* sent at the end of the callback */
	assert_memory_equal(buf, "hello", 5);
	assert_false(p.io.writing);                           /* no write event was needed */
	close(sv[1]);
	event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(p.errors, 1);
	assert_true(p.eof);
	connio_close(&p.io);
	connio_global_free();
	event_base_free(base);
}

static void test_connio_full_socket_arms_write_and_drains(void **state)
{
	(void)state;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	struct event_base *base = event_base_new();
	assert_true(connio_global_init(base));
	struct probe p = { 0 };
	assert_true(connio_open(&p.io, base, sv[0], &probe_ops, &p));
	/* more than the socket takes: the rest waits in the output, the write event is armed */
	size_t total = 4 * 1024 * 1024;
	uint8_t *blob = calloc(1, total);
	connio_enter();
	assert_true(connio_add(&p.io, blob, total));
	connio_leave();
	assert_true(p.io.writing);
	assert_true(connio_out_len(&p.io) > 0);
	assert_true(connio_out_len(&p.io) < total);
	/* the peer reads everything: the output drains and the owner is told */
	size_t got = 0;
	for (int spins = 0; got < total && spins < 100000; spins++) {
		ssize_t n = read(sv[1], blob, total);
		if (n > 0)
			got += (size_t)n;
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	}
	assert_int_equal(got, total);
	assert_int_equal(connio_out_len(&p.io), 0);
	assert_true(p.drains >= 1);
	assert_false(p.io.writing);
	/* paused reading: bytes stay in the kernel until resumed */
	connio_pause_read(&p.io);
	assert_int_equal(write(sv[1], "x", 1), 1);
	event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(p.reads, 0);
	connio_resume_read(&p.io);
	event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(p.reads, 1);
	assert_int_equal(iobuf_len(&p.io.in), 1);
	free(blob);
	close(sv[1]);
	connio_close(&p.io);
	connio_global_free();
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_message_split_across_reads_is_whole_once_complete),
		cmocka_unit_test(test_message_larger_than_a_block_grows_the_buffer),
		cmocka_unit_test(test_move_hands_the_block_over_or_copies),
		cmocka_unit_test(test_connio_reads_and_answers_in_one_send),
		cmocka_unit_test(test_connio_full_socket_arms_write_and_drains),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
