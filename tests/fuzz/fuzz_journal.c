/* SPDX-License-Identifier: PostgreSQL */
/*
 * fuzz_journal.c - libFuzzer target for the usage journal's segment reader
 * (ai/journal.c): a segment left by an earlier run is read at start-up and
 * replayed. The input becomes the content of usage-...01.journal in a fresh
 * directory; journal_open adopts it and journal_foreach_unreleased reads
 * it. A damaged segment must give its good records up to the damage and be
 * skipped from there (with one log line), never crash, loop or deliver a
 * record with a field that is not NUL-terminated.
 *
 * Byte 0 chooses how the rest is used: even, as the file's raw bytes; odd,
 * as frames to wrap in a valid header and CRC (each: u8 version, u16 length,
 * payload), so that the fuzzer reaches the record decoder past the CRC.
 */
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <isa-l/crc.h>

#include "ai/journal.h"

static char base[256], dir[300];

static void remove_dir(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[600];

	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		CHECK(unlink(path) == 0);
	}
	closedir(d);
	CHECK(rmdir(dir) == 0);
}

/* libFuzzer ends a timed run with exit(): leave no directory behind. */
static void remove_tmp(void)
{
	remove_dir();
	rmdir(base);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* tmpfs when there is one: journal_open fsyncs */
	const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

	snprintf(base, sizeof base, "%s/pgsluice-fuzz-journal-XXXXXX", tmp);
	CHECK(mkdtemp(base) != NULL);
	snprintf(dir, sizeof dir, "%s/j", base);
	atexit(remove_tmp);
	fuzz_quiet_log();
	return 0;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t) (v >> (8 * i));
}

/* Frames with a valid magic, length and CRC around the payloads in data. */
static size_t make_frames(const uint8_t *data, size_t size, uint8_t *out)
{
	size_t i = 0, o = 0;

	while (size - i >= 3) {
		unsigned version = data[i];
		size_t len = (size_t) data[i + 1] | (size_t) data[i + 2] << 8;

		i += 3;
		if (len > size - i)
			len = size - i;
		memcpy(out + o, "SLUJ", 4);
		put_le(out + o + 4, version, 2);
		put_le(out + o + 6, 0, 2);
		put_le(out + o + 8, len, 4);
		memcpy(out + o + 16, data + i, len);
		uint32_t crc = crc32_gzip_refl(0, out + o + 4, 8);

		crc = crc32_gzip_refl(crc, out + o + 16, len);
		put_le(out + o + 12, crc, 4);
		o += 16 + len;
		i += len;
	}
	return o;
}

static void check_record(void *arg, uint64_t segment, const struct usage_record *r)
{
	size_t *n = arg;

	CHECK(segment == 1);
	CHECK(strnlen(r->subject, sizeof r->subject) < sizeof r->subject);
	CHECK(strnlen(r->db_user, sizeof r->db_user) < sizeof r->db_user);
	CHECK(strnlen(r->database, sizeof r->database) < sizeof r->database);
	CHECK(strnlen(r->model, sizeof r->model) < sizeof r->model);
	CHECK(strnlen(r->conversation_id, sizeof r->conversation_id) < sizeof r->conversation_id);
	CHECK(strnlen(r->trace_id, sizeof r->trace_id) < sizeof r->trace_id);
	CHECK(strnlen(r->instance, sizeof r->instance) < sizeof r->instance);
	(*n)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[600], err[JOURNAL_ERRBUF_SIZE];
	uint8_t *content;
	size_t len, delivered = 0, again = 0;
	struct journal *j;
	FILE *f;

	if (size == 0)
		return 0;
	/* every 3 input bytes make at most 16 bytes more of frame header */
	content = malloc(size * 6 + 16);
	CHECK(content != NULL);
	if (data[0] & 1) {
		len = make_frames(data + 1, size - 1, content);
	} else {
		len = size - 1;
		memcpy(content, data + 1, len);
	}
	CHECK(mkdir(dir, 0700) == 0);
	snprintf(path, sizeof path, "%s/usage-%020d.journal", dir, 1);
	f = fopen(path, "w");
	CHECK(f != NULL);
	CHECK(fwrite(content, 1, len, f) == len && fclose(f) == 0);
	free(content);

	j = journal_open(dir, err, sizeof err);
	CHECK(j != NULL);
	size_t n = journal_foreach_unreleased(j, check_record, &delivered);

	CHECK(n == delivered);
	/* read again: the same records, the damage not reported twice */
	CHECK(journal_foreach_unreleased(j, check_record, &again) == n && again == n);
	if (n > 0 || len > 0) {
		uint64_t seq;

		CHECK(journal_oldest_unreleased(j, &seq) && seq == 1);
		CHECK(journal_release(j, 1));
	}
	journal_close(j);
	remove_dir();
	return 0;
}
