/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_journal.c - the usage journal: records round trip with every field,
 * replay after a close or a SIGKILL, torn and corrupt frames skipped with a
 * log line, release, backlog, rotation by size, and a failed write cut off.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>


#include "ai/journal.h"
#include "log.h"

/*
 * CRC-32 as zlib and gzip define it (reflected polynomial 0xEDB88320,
 * inverted in and out), bit by bit: an oracle independent of the library
 * the journal uses. crc is a previous result, or 0 to start.
 */
static uint32_t reference_crc32(uint32_t crc, const uint8_t *p, size_t len)
{
	crc = ~crc;
	while (len-- > 0) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
	}
	return ~crc;
}

/* ---- fixtures ---- */

static char base_dir[64];      /* per test: mkdtemp */
static char journal_dir[PATH_MAX];   /* base_dir/spool/journal (created by journal_open) */
static char log_path[PATH_MAX];      /* the log of the whole run */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	snprintf(base_dir, sizeof(base_dir), "/tmp/test_journal.XXXXXX");
	if (!mkdtemp(base_dir))
		return -1;
	snprintf(journal_dir, sizeof(journal_dir), "%s/spool/journal", base_dir);
	return 0;
}

static int teardown(void **state)
{
	return nftw(base_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Path of segment seq (with ".corrupt" when kept). */
static const char *seg_path(uint64_t seq, bool corrupt)
{
	static char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/usage-%020" PRIu64 ".journal%s", journal_dir, seq,
	         corrupt ? ".corrupt" : "");
	return path;
}

static bool exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static uint64_t file_size(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

/* Number of "usage-*.journal" files in the journal directory, and their total size. */
static size_t count_segments(uint64_t *total_bytes)
{
	size_t n = 0;
	uint64_t total = 0;
	for (uint64_t seq = 1; seq < 1000; seq++) {
		if (exists(seg_path(seq, false))) {
			n++;
			total += file_size(seg_path(seq, false));
		}
	}
	if (total_bytes)
		*total_bytes = total;
	return n;
}

/* How many times needle occurs in the log written so far. */
static int log_count(const char *needle)
{
	FILE *f = fopen(log_path, "r");
	char line[8192];
	int n = 0;
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		for (const char *p = line; (p = strstr(p, needle)) != NULL; p++)
			n++;
	fclose(f);
	return n;
}

/* A log line containing all of a, b and c. */
static bool log_has_line(const char *a, const char *b, const char *c)
{
	FILE *f = fopen(log_path, "r");
	char line[8192];
	bool found = false;
	assert_non_null(f);
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, a) && strstr(line, b) && strstr(line, c);
	fclose(f);
	return found;
}

static struct journal *open_journal(void)
{
	char err[JOURNAL_ERRBUF_SIZE];
	struct journal *j = journal_open(journal_dir, err, sizeof(err));
	if (!j)
		fail_msg("journal_open: %s", err);
	return j;
}

/* ---- records ---- */

static void fill_string(char *field, size_t size, size_t len, int seed)
{
	for (size_t i = 0; i < len && i < size - 1; i++)
		field[i] = (char)('a' + (seed + (int)i) % 26);
	field[len < size ? len : size - 1] = '\0';
}

/*
 * Record i: every field differs between records, strings at their longest,
 * empty and in between, UTF-8, extreme integers and doubles.
 */
static void make_record(int i, struct usage_record *r)
{
	static const double ms[] = { 0.0, -0.0, 1.5, 1e-300, 12345.678, INFINITY };

	memset(r, 0, sizeof(*r));
	for (int k = 0; k < 16; k++)
		r->id[k] = (uint8_t)(i * 31 + k * 7);
	r->id[6] = (uint8_t)(0x40 | (r->id[6] & 0x0f));     /* UUID version 4 */
	r->id[8] = (uint8_t)(0x80 | (r->id[8] & 0x3f));     /* RFC 4122 variant */
	memcpy(r->id + 12, &i, sizeof(i));                  /* unique per record */
	r->created_at_us = INT64_C(1773489600000000) + (int64_t)i * 1000 + (i % 3 == 0 ? -1 : 0);
	fill_string(r->subject, sizeof(r->subject), i % 7 == 0 ? 127 : (size_t)(i % 40) + 1, i);
	if (i % 11 == 0)
		snprintf(r->subject, sizeof(r->subject), "ünïcødé-%d", i);
	fill_string(r->db_user, sizeof(r->db_user), i % 5 == 0 ? 63 : 8, i + 1);
	fill_string(r->database, sizeof(r->database), i % 6 == 0 ? 63 : 3, i + 2);
	if (i % 3 != 0)                                     /* i % 3 == 0: no model */
		snprintf(r->model, sizeof(r->model), "gpt-4o-%d", i);
	r->input_tokens = i == 1 ? INT64_MAX : (int64_t)i * 10;
	r->output_tokens = i == 2 ? INT64_MIN : (int64_t)i * 3 + 1;
	r->llm_latency_ms = i % 2 ? -1 : (int64_t)i * 17;
	r->statement_ms = i < 6 ? ms[i] : i * 0.125 + 0.001;
	r->cached = i % 4 == 0;
	fill_string(r->conversation_id, sizeof(r->conversation_id), i % 9 == 0 ? 127 : 0, i + 3);
	fill_string(r->trace_id, sizeof(r->trace_id), 32, i + 4);
	fill_string(r->instance, sizeof(r->instance), i % 8 == 0 ? 159 : 12, i + 5);
}

static void assert_record_equal(const struct usage_record *a, const struct usage_record *b)
{
	assert_memory_equal(a->id, b->id, 16);
	assert_int_equal(a->created_at_us, b->created_at_us);
	assert_string_equal(a->subject, b->subject);
	assert_string_equal(a->db_user, b->db_user);
	assert_string_equal(a->database, b->database);
	assert_string_equal(a->model, b->model);
	assert_int_equal(a->input_tokens, b->input_tokens);
	assert_int_equal(a->output_tokens, b->output_tokens);
	assert_int_equal(a->llm_latency_ms, b->llm_latency_ms);
	assert_memory_equal(&a->statement_ms, &b->statement_ms, sizeof(double));  /* bits: -0.0 */
	assert_int_equal(a->cached, b->cached);
	assert_string_equal(a->conversation_id, b->conversation_id);
	assert_string_equal(a->trace_id, b->trace_id);
	assert_string_equal(a->instance, b->instance);
}

static void append_records(struct journal *j, int first, int n)
{
	char err[JOURNAL_ERRBUF_SIZE];
	struct usage_record r;
	for (int i = first; i < first + n; i++) {
		make_record(i, &r);
		if (!journal_append(j, &r, err, sizeof(err)))
			fail_msg("journal_append %d: %s", i, err);
	}
}

/* What a foreach delivered. */
struct collected {
	size_t n;
	struct usage_record recs[2000];
	uint64_t segs[2000];
};

static struct collected got;

static void collect(void *arg, uint64_t segment, const struct usage_record *r)
{
	struct collected *c = arg;
	assert_true(c->n < sizeof(c->recs) / sizeof(c->recs[0]));
	c->recs[c->n] = *r;
	c->segs[c->n] = segment;
	c->n++;
}

static size_t replay(struct journal *j)
{
	got.n = 0;
	size_t n = journal_foreach_unreleased(j, collect, &got);
	assert_int_equal(n, got.n);
	return n;
}

/* Collected records at .. at+n-1 are records first .. first+n-1. */
static void assert_collected_at(size_t at, int first, size_t n)
{
	struct usage_record want;
	assert_true(at + n <= got.n);
	for (size_t k = 0; k < n; k++) {
		make_record(first + (int)k, &want);
		assert_record_equal(&got.recs[at + k], &want);
	}
}

/* The collected records are exactly records first .. first+n-1, in order. */
static void assert_collected(int first, size_t n)
{
	assert_int_equal(got.n, n);
	assert_collected_at(0, first, n);
}

/* Flip one byte of a file at offset. */
static void flip_byte(const char *path, uint64_t offset)
{
	int fd = open(path, O_RDWR);
	uint8_t b;
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, (off_t)offset), 1);
	b ^= 0x5a;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)offset), 1);
	close(fd);
}

/* ---- tests ---- */

static void test_open_creates_private_directory_and_segment(void **state)
{
	struct stat st;
	struct journal *j = open_journal();

	assert_int_equal(stat(journal_dir, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(stat(seg_path(1, false), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size, 0);
	assert_int_equal(journal_backlog_bytes(j), 0);
	journal_close(j);
	/* an empty current segment is not left behind */
	assert_false(exists(seg_path(1, false)));
}

static void test_records_round_trip_with_every_field(void **state)
{
	struct journal *j = open_journal();
	append_records(j, 0, 1000);
	assert_int_equal(journal_seal(j), 1);
	assert_int_equal(replay(j), 1000);
	assert_collected(0, 1000);
	for (size_t k = 0; k < got.n; k++)
		assert_int_equal(got.segs[k], 1);
	journal_close(j);
}

static void test_string_without_nul_is_stored_truncated(void **state)
{
	char err[JOURNAL_ERRBUF_SIZE];
	struct usage_record r;
	struct journal *j = open_journal();

	make_record(1, &r);
	memset(r.subject, 'x', sizeof(r.subject));          /* no NUL in the array */
	memset(r.instance, 'y', sizeof(r.instance));
	assert_true(journal_append(j, &r, err, sizeof(err)));
	journal_seal(j);
	assert_int_equal(replay(j), 1);
	assert_int_equal(strlen(got.recs[0].subject), sizeof(r.subject) - 1);
	assert_int_equal(strspn(got.recs[0].subject, "x"), sizeof(r.subject) - 1);
	assert_int_equal(strlen(got.recs[0].instance), sizeof(r.instance) - 1);
	journal_close(j);
}

static void test_seal_of_empty_segment_seals_nothing(void **state)
{
	struct journal *j = open_journal();
	uint64_t seq;

	assert_int_equal(journal_seal(j), 0);
	assert_false(journal_oldest_unreleased(j, &seq));
	append_records(j, 0, 1);
	assert_int_equal(journal_seal(j), 1);
	assert_int_equal(journal_seal(j), 0);
	assert_int_equal(count_segments(NULL), 2);          /* sealed 1, current 2 */
	assert_int_equal(replay(j), 1);
	journal_close(j);
}

static void test_foreach_reads_sealed_segments_oldest_first_not_the_current(void **state)
{
	struct journal *j = open_journal();
	uint64_t seq;

	for (int s = 0; s < 3; s++) {
		append_records(j, s * 10, 10);
		assert_int_equal(journal_seal(j), (uint64_t)s + 1);
	}
	append_records(j, 30, 5);                           /* current, not sealed */
	assert_int_equal(replay(j), 30);
	assert_collected(0, 30);
	for (size_t k = 0; k < 30; k++)
		assert_int_equal(got.segs[k], k / 10 + 1);

	assert_true(journal_oldest_unreleased(j, &seq));
	assert_int_equal(seq, 1);
	got.n = 0;
	assert_int_equal(journal_foreach_in_segment(j, 2, collect, &got), 10);
	for (size_t k = 0; k < 10; k++) {
		struct usage_record want;
		make_record(10 + (int)k, &want);
		assert_record_equal(&got.recs[k], &want);
		assert_int_equal(got.segs[k], 2);
	}
	assert_int_equal(journal_foreach_in_segment(j, 4, collect, &got), 0);   /* current */
	assert_int_equal(journal_foreach_in_segment(j, 99, collect, &got), 0);
	journal_close(j);
}

static void test_reopen_after_close_without_seal_replays_everything(void **state)
{
	struct journal *j = open_journal();
	uint64_t on_disk;

	append_records(j, 0, 50);
	assert_int_equal(journal_seal(j), 1);
	append_records(j, 50, 30);
	journal_close(j);                                   /* segment 2 not sealed */

	j = open_journal();
	assert_int_equal(replay(j), 80);
	assert_collected(0, 80);
	assert_int_equal(got.segs[49], 1);
	assert_int_equal(got.segs[50], 2);
	assert_int_equal(count_segments(&on_disk), 3);      /* 1, 2 and the new current 3 */
	assert_int_equal(journal_backlog_bytes(j), on_disk);
	assert_true(exists(seg_path(3, false)));

	/* the new run writes its own segment; the old ones are not appended to */
	uint64_t size2 = file_size(seg_path(2, false));
	append_records(j, 80, 5);
	assert_int_equal(file_size(seg_path(2, false)), size2);
	assert_int_equal(journal_seal(j), 3);
	assert_int_equal(replay(j), 85);
	assert_collected(0, 85);
	journal_close(j);
}

static void test_sigkill_loses_no_appended_record(void **state)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		char err[JOURNAL_ERRBUF_SIZE];
		struct usage_record r;
		struct journal *j = journal_open(journal_dir, err, sizeof(err));
		if (!j)
			_exit(2);
		for (int i = 0; i < 300; i++) {
			make_record(i, &r);
			if (!journal_append(j, &r, err, sizeof(err)))
				_exit(3);
			if (i == 99)
				journal_seal(j);
			if (i == 150)
				journal_sync(j);
		}
		/* no sync, no close: records 151.. exist only in the page cache */
		raise(SIGKILL);
		_exit(4);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);

	struct journal *j = open_journal();                 /* the dead child's lock is gone */
	assert_int_equal(replay(j), 300);
	assert_collected(0, 300);
	journal_close(j);
}

static void test_torn_tail_is_skipped_and_logged_once(void **state)
{
	struct journal *j = open_journal();

	append_records(j, 0, 9);
	uint64_t last_frame_at = journal_backlog_bytes(j);
	append_records(j, 9, 1);
	assert_int_equal(journal_seal(j), 1);
	uint64_t size = file_size(seg_path(1, false));
	assert_int_equal(truncate(seg_path(1, false), (off_t)(size - 7)), 0);   /* mid-frame */

	char offset[64];
	snprintf(offset, sizeof(offset), "at offset %" PRIu64 ";", last_frame_at);
	int before = log_count(seg_path(1, false));
	assert_int_equal(replay(j), 9);
	assert_collected(0, 9);
	assert_true(log_has_line(seg_path(1, false), "truncated frame", offset));
	assert_int_equal(log_count(seg_path(1, false)), before + 1);
	assert_int_equal(replay(j), 9);                     /* read again: not logged again */
	assert_int_equal(log_count(seg_path(1, false)), before + 1);

	/* a torn tail is what a crash mid-write leaves: the file is simply removed */
	assert_true(journal_release(j, 1));
	assert_false(exists(seg_path(1, false)));
	assert_false(exists(seg_path(1, true)));
	journal_close(j);
}

static void test_truncated_frame_header_is_skipped(void **state)
{
	struct journal *j = open_journal();
	append_records(j, 0, 4);
	uint64_t end = journal_backlog_bytes(j);
	append_records(j, 4, 1);
	journal_close(j);
	assert_int_equal(truncate(seg_path(1, false), (off_t)end + 5), 0);     /* 5 header bytes */

	j = open_journal();
	assert_int_equal(replay(j), 4);
	assert_collected(0, 4);
	assert_true(log_has_line(seg_path(1, false), "truncated frame header", "records before it are kept"));
	journal_close(j);
}

static void test_corrupt_byte_in_last_frame_is_skipped_and_logged(void **state)
{
	struct journal *j = open_journal();
	struct journal_stats st;

	append_records(j, 0, 9);
	uint64_t last_frame_at = journal_backlog_bytes(j);
	append_records(j, 9, 1);
	assert_int_equal(journal_seal(j), 1);
	flip_byte(seg_path(1, false), last_frame_at + JOURNAL_FRAME_HEADER_BYTES + 20);

	char offset[64];
	snprintf(offset, sizeof(offset), "at offset %" PRIu64 ";", last_frame_at);
	assert_int_equal(replay(j), 9);
	assert_collected(0, 9);
	assert_true(log_has_line(seg_path(1, false), "bad CRC", offset));
	journal_get_stats(j, &st);
	assert_int_equal(st.damaged_segments, 1);

	/* damaged (not merely torn): kept for inspection instead of unlinked */
	assert_true(journal_release(j, 1));
	assert_false(exists(seg_path(1, false)));
	assert_true(exists(seg_path(1, true)));
	assert_true(log_has_line(seg_path(1, false), "kept as", ".corrupt"));
	journal_close(j);

	/* a kept file's number is never reused */
	j = open_journal();
	assert_int_equal(replay(j), 0);
	assert_true(exists(seg_path(1, true)));
	assert_true(exists(seg_path(2, false)));
	journal_close(j);
}

static void test_bad_frame_in_the_middle_ends_its_segment_only(void **state)
{
	struct journal *j = open_journal();

	append_records(j, 0, 4);
	uint64_t fifth_at = journal_backlog_bytes(j);
	append_records(j, 4, 6);
	assert_int_equal(journal_seal(j), 1);
	append_records(j, 10, 10);
	assert_int_equal(journal_seal(j), 2);
	flip_byte(seg_path(1, false), fifth_at + JOURNAL_FRAME_HEADER_BYTES + 3);   /* frame 5's id */

	char offset[64];
	snprintf(offset, sizeof(offset), "at offset %" PRIu64 ";", fifth_at);
	assert_int_equal(replay(j), 14);                    /* 4 of segment 1, all of segment 2 */
	assert_collected_at(0, 0, 4);
	assert_collected_at(4, 10, 10);
	assert_int_equal(got.segs[3], 1);
	assert_int_equal(got.segs[4], 2);
	assert_true(log_has_line(seg_path(1, false), "bad CRC", offset));
	journal_close(j);
}

static void test_bad_magic_is_skipped(void **state)
{
	struct journal *j = open_journal();
	append_records(j, 0, 3);
	uint64_t end = journal_backlog_bytes(j);
	journal_close(j);

	/* what a machine crash may leave: zeros where unsynced data was */
	int fd = open(seg_path(1, false), O_WRONLY | O_APPEND);
	uint8_t zeros[100] = { 0 };
	assert_true(fd >= 0);
	assert_int_equal(write(fd, zeros, sizeof(zeros)), (ssize_t)sizeof(zeros));
	close(fd);

	char offset[64];
	snprintf(offset, sizeof(offset), "at offset %" PRIu64 ";", end);
	j = open_journal();
	assert_int_equal(replay(j), 3);
	assert_collected(0, 3);
	assert_true(log_has_line(seg_path(1, false), "bad frame magic", offset));
	journal_close(j);
}

static void test_unsupported_record_version_is_skipped(void **state)
{
	struct journal *j = open_journal();
	append_records(j, 0, 2);
	journal_close(j);

	/* a well-formed frame of a future version, as a newer pgsluice would write */
	uint8_t frame[JOURNAL_FRAME_HEADER_BYTES + 8] = { 'S', 'L', 'U', 'J', 2, 0, 0, 0, 8, 0, 0, 0 };
	memset(frame + JOURNAL_FRAME_HEADER_BYTES, 0xab, 8);
	uint32_t crc = reference_crc32(0, frame + 4, 8);
	crc = reference_crc32(crc, frame + JOURNAL_FRAME_HEADER_BYTES, 8);
	for (int i = 0; i < 4; i++)
		frame[12 + i] = (uint8_t)(crc >> (8 * i));
	int fd = open(seg_path(1, false), O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, frame, sizeof(frame)), (ssize_t)sizeof(frame));
	close(fd);

	j = open_journal();
	assert_int_equal(replay(j), 2);
	assert_true(log_has_line(seg_path(1, false), "unsupported record version 2", "offset"));
	journal_close(j);
}

static void test_release_unlinks_segments_up_to_seq(void **state)
{
	struct journal *j = open_journal();
	struct journal_stats st;
	uint64_t seq;

	for (int s = 0; s < 3; s++) {
		append_records(j, s * 10, 10);
		journal_seal(j);
	}
	append_records(j, 30, 1);                           /* current: 4 */
	assert_true(journal_release(j, 2));
	assert_false(exists(seg_path(1, false)));
	assert_false(exists(seg_path(2, false)));
	assert_true(exists(seg_path(3, false)));
	assert_true(journal_oldest_unreleased(j, &seq));
	assert_int_equal(seq, 3);
	assert_int_equal(replay(j), 10);
	assert_collected(20, 10);

	/* the current segment is never released, even if named */
	assert_true(journal_release(j, UINT64_MAX));
	assert_false(exists(seg_path(3, false)));
	assert_true(exists(seg_path(4, false)));
	assert_false(journal_oldest_unreleased(j, &seq));
	assert_int_equal(replay(j), 0);
	journal_get_stats(j, &st);
	assert_int_equal(st.segments_released, 3);
	assert_int_equal(st.unreleased_segments, 0);
	assert_int_equal(st.records_appended, 31);
	journal_close(j);

	/* released records are not replayed by the next run */
	j = open_journal();
	assert_int_equal(replay(j), 1);
	assert_collected(30, 1);
	journal_close(j);
}

static void test_backlog_bytes_counts_unreleased_segments(void **state)
{
	struct journal *j = open_journal();
	uint64_t on_disk;

	assert_int_equal(journal_backlog_bytes(j), 0);
	append_records(j, 0, 20);
	count_segments(&on_disk);
	assert_int_equal(journal_backlog_bytes(j), on_disk);    /* the current segment counts */
	journal_seal(j);
	append_records(j, 20, 7);
	count_segments(&on_disk);
	assert_int_equal(journal_backlog_bytes(j), on_disk);

	uint64_t first = file_size(seg_path(1, false));
	assert_true(journal_release(j, 1));
	assert_int_equal(journal_backlog_bytes(j), on_disk - first);
	journal_close(j);

	j = open_journal();
	count_segments(&on_disk);
	assert_int_equal(journal_backlog_bytes(j), on_disk);
	assert_int_equal(journal_backlog_bytes(j), file_size(seg_path(2, false)));
	journal_close(j);
}

static void test_segments_rotate_by_size(void **state)
{
	struct journal *j = open_journal();
	struct journal_stats st;

	journal_set_segment_max_bytes(j, 1);                /* raised to 4096 */
	append_records(j, 0, 100);
	size_t segments = count_segments(NULL);
	assert_true(segments > 5);
	for (uint64_t seq = 1; seq <= segments; seq++)
		assert_true(file_size(seg_path(seq, false)) <= 4096);
	journal_get_stats(j, &st);
	assert_int_equal(st.segments_sealed, segments - 1);

	assert_int_equal(journal_seal(j), segments);
	assert_int_equal(replay(j), 100);
	assert_collected(0, 100);
	for (size_t k = 1; k < got.n; k++)
		assert_true(got.segs[k] == got.segs[k - 1] || got.segs[k] == got.segs[k - 1] + 1);
	assert_true(journal_sync(j));
	journal_close(j);
}

/*
 * Every frame on disk carries zlib's CRC-32 of its version, flags, length
 * and payload, whatever computed it (ISA-L folds 16 bytes at a time with
 * PCLMULQDQ where the CPU has it): payloads of many lengths, short and
 * long, checked against a bit-by-bit CRC-32.
 */
static void test_frame_crc_is_zlib_crc32(void **state)
{
	struct journal *j = open_journal();
	append_records(j, 0, 300);
	uint64_t seq = journal_seal(j);
	journal_close(j);

	FILE *f = fopen(seg_path(seq, false), "rb");
	static uint8_t data[1 << 20];
	size_t size = fread(data, 1, sizeof(data), f), at = 0, frames = 0, lengths = 0;
	bool seen[1024] = { false };
	fclose(f);
	while (at + 16 <= size) {
		uint32_t len = (uint32_t)data[at + 8] | (uint32_t)data[at + 9] << 8 |
		               (uint32_t)data[at + 10] << 16 | (uint32_t)data[at + 11] << 24;
		uint32_t crc = (uint32_t)data[at + 12] | (uint32_t)data[at + 13] << 8 |
		               (uint32_t)data[at + 14] << 16 | (uint32_t)data[at + 15] << 24;
		assert_true(at + 16 + len <= size);
		uint32_t want = reference_crc32(0, data + at + 4, 8);
		want = reference_crc32(want, data + at + 16, len);
		assert_int_equal(crc, want);
		if (len < sizeof(seen) && !seen[len]) {
			seen[len] = true;
			lengths++;
		}
		at += 16 + len;
		frames++;
	}
	assert_int_equal(at, size);
	assert_int_equal(frames, 300);
	assert_true(lengths > 50);    /* many lengths, so every remainder mod 16 */
}

/* Lengths the caller measured give the same frames; a wrong, too large one is measured again. */
static void test_append_measured_writes_the_same_frames(void **state)
{
	char err[JOURNAL_ERRBUF_SIZE];
	struct usage_record r;
	struct journal *j = open_journal();
	for (int i = 0; i < 40; i++) {
		make_record(i, &r);
		assert_true(journal_append(j, &r, err, sizeof(err)));
	}
	uint64_t plain = journal_seal(j);
	for (int i = 0; i < 40; i++) {
		make_record(i, &r);
		uint16_t lens[JOURNAL_TEXT_FIELDS] = {
			(uint16_t)strlen(r.subject), (uint16_t)strlen(r.db_user), (uint16_t)strlen(r.database),
			(uint16_t)strlen(r.model), (uint16_t)strlen(r.conversation_id), (uint16_t)strlen(r.trace_id),
			i % 2 ? (uint16_t)strlen(r.instance) : UINT16_MAX,
		};
		assert_true(journal_append_measured(j, &r, lens, err, sizeof(err)));
	}
	uint64_t measured = journal_seal(j);
	journal_close(j);

	static char a[1 << 16], b[1 << 16];
	FILE *f = fopen(seg_path(plain, false), "rb");
	size_t na = fread(a, 1, sizeof(a), f);
	fclose(f);
	f = fopen(seg_path(measured, false), "rb");
	size_t nb = fread(b, 1, sizeof(b), f);
	fclose(f);
	assert_true(na > 40 * 16);
	assert_int_equal(na, nb);
	assert_memory_equal(a, b, na);
}

/*
 * journal_current_seq names the segment each append went to, through size
 * rotations and seals: the usage writer keeps what it appended to a segment
 * in memory by that number and ships it instead of reading the file back,
 * so it must be the segment replay finds the record in.
 */
static void test_current_seq_is_the_segment_of_the_last_append(void **state)
{
	char err[JOURNAL_ERRBUF_SIZE];
	struct usage_record r;
	uint64_t seqs[60];
	struct journal *j = open_journal();

	assert_int_equal(journal_current_seq(j), 1);
	journal_set_segment_max_bytes(j, 1);                /* raised to 4096: rotates */
	for (int i = 0; i < 60; i++) {
		make_record(i, &r);
		if (!journal_append(j, &r, err, sizeof(err)))
			fail_msg("journal_append %d: %s", i, err);
		seqs[i] = journal_current_seq(j);
		if (i == 30)
			assert_int_equal(journal_seal(j), seqs[i]);
	}
	assert_int_equal(journal_seal(j), seqs[59]);
	assert_true(journal_current_seq(j) > seqs[59]);
	assert_int_equal(replay(j), 60);
	assert_collected(0, 60);
	for (int i = 0; i < 60; i++)
		assert_int_equal(got.segs[i], seqs[i]);
	assert_true(seqs[59] > seqs[0]);
	journal_close(j);
}

static void test_second_open_of_the_same_directory_is_refused(void **state)
{
	char err[JOURNAL_ERRBUF_SIZE];
	struct journal *j = open_journal();

	append_records(j, 0, 3);
	assert_null(journal_open(journal_dir, err, sizeof(err)));
	assert_non_null(strstr(err, "is locked by another process"));
	assert_non_null(strstr(err, journal_dir));
	/* the refused open touched nothing */
	assert_true(journal_seal(j) == 1);
	assert_int_equal(replay(j), 3);
	journal_close(j);
}

static void test_open_reports_a_directory_it_cannot_create(void **state)
{
	char err[JOURNAL_ERRBUF_SIZE], path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/file", base_dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/file/journal", base_dir);
	assert_null(journal_open(path, err, sizeof(err)));
	assert_non_null(strstr(err, "could not create usage journal directory"));
}

static void test_leftovers_empty_segments_removed_numbers_not_reused(void **state)
{
	struct journal *j = open_journal();
	journal_close(j);
	char path[PATH_MAX + 32];
	FILE *f;

	/* an empty segment, a kept damaged one, and a stranger */
	assert_non_null(f = fopen(seg_path(5, false), "w"));
	fclose(f);
	assert_non_null(f = fopen(seg_path(9, true), "w"));
	fclose(f);
	snprintf(path, sizeof(path), "%s/notes.txt", journal_dir);
	assert_non_null(f = fopen(path, "w"));
	fclose(f);

	j = open_journal();
	assert_false(exists(seg_path(5, false)));
	assert_true(exists(seg_path(9, true)));
	assert_true(exists(path));
	assert_true(exists(seg_path(10, false)));
	assert_int_equal(replay(j), 0);
	append_records(j, 0, 1);
	assert_int_equal(journal_seal(j), 10);
	journal_close(j);
}

static void test_failed_write_is_cut_off_and_later_records_survive(void **state)
{
	char err[JOURNAL_ERRBUF_SIZE];
	struct usage_record r;
	struct rlimit old, lim;
	struct journal_stats st;
	struct journal *j = open_journal();

	append_records(j, 0, 5);
	uint64_t size = file_size(seg_path(1, false));

	/* the file may grow 10 bytes: the next frame is written in part, then EFBIG */
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)size + 10;
	void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	make_record(5, &r);
	bool ok = journal_append(j, &r, err, sizeof(err));
	int saved = errno;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, old_handler);

	assert_false(ok);
	assert_int_equal(saved, EFBIG);
	assert_non_null(strstr(err, "could not write to usage journal file"));
	assert_non_null(strstr(err, seg_path(1, false)));
	assert_int_equal(file_size(seg_path(1, false)), size);     /* the partial frame is gone */
	assert_int_equal(journal_backlog_bytes(j), size);
	journal_get_stats(j, &st);
	assert_int_equal(st.append_failures, 1);

	append_records(j, 6, 5);
	assert_int_equal(journal_seal(j), 1);
	int warnings = log_count(seg_path(1, false));
	assert_int_equal(replay(j), 10);
	assert_int_equal(log_count(seg_path(1, false)), warnings); /* nothing damaged */
	assert_collected_at(0, 0, 5);
	assert_collected_at(5, 6, 5);                       /* record 5 was refused */
	journal_close(j);
}

static void test_sync_writes_pending_segments(void **state)
{
	struct journal *j = open_journal();
	struct journal_stats st;

	assert_true(journal_sync(j));                       /* nothing to do */
	append_records(j, 0, 3);
	assert_true(journal_sync(j));
	append_records(j, 3, 3);
	journal_seal(j);
	assert_true(journal_sync(j));                       /* sealed segment and directory */
	journal_get_stats(j, &st);
	assert_int_equal(st.sync_failures, 0);
	assert_int_equal(replay(j), 6);
	journal_close(j);
	journal_close(NULL);
}

int main(void)
{
	snprintf(log_path, sizeof(log_path), "/tmp/test_journal.%d.log", (int)getpid());
	if (!log_setup(log_path, false, NULL, NULL, 0, true)) {
		perror(log_path);
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_creates_private_directory_and_segment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_records_round_trip_with_every_field, setup, teardown),
		cmocka_unit_test_setup_teardown(test_string_without_nul_is_stored_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal_of_empty_segment_seals_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreach_reads_sealed_segments_oldest_first_not_the_current, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_after_close_without_seal_replays_everything, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sigkill_loses_no_appended_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_is_skipped_and_logged_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_frame_header_is_skipped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_byte_in_last_frame_is_skipped_and_logged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_frame_in_the_middle_ends_its_segment_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_magic_is_skipped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unsupported_record_version_is_skipped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_release_unlinks_segments_up_to_seq, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backlog_bytes_counts_unreleased_segments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segments_rotate_by_size, setup, teardown),
		cmocka_unit_test_setup_teardown(test_frame_crc_is_zlib_crc32, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append_measured_writes_the_same_frames, setup, teardown),
		cmocka_unit_test_setup_teardown(test_current_seq_is_the_segment_of_the_last_append, setup, teardown),
		cmocka_unit_test_setup_teardown(test_second_open_of_the_same_directory_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_reports_a_directory_it_cannot_create, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leftovers_empty_segments_removed_numbers_not_reused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_write_is_cut_off_and_later_records_survive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync_writes_pending_segments, setup, teardown),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	if (failed == 0)
		unlink(log_path);
	else
		fprintf(stderr, "log: %s\n", log_path);
	return failed;
}
