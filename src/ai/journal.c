/* SPDX-License-Identifier: PostgreSQL */
/*
 * journal.c - the append-only usage journal; see journal.h and src/ai/README.md.
 * One segment file is appended to with write(2); sealed segments wait in a
 * sorted array until the writer releases them. CRC-32 comes from ISA-L.
 */
#include "ai/journal.h"

#include "log.h"

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <isa-l/crc.h>

/*
 * Record encoding, version 1 (the payload of a frame; little-endian):
 *   offset  0  id               16 bytes
 *          16  created_at_us    i64
 *          24  input_tokens     i64
 *          32  output_tokens    i64
 *          40  llm_latency_ms   i64
 *          48  statement_ms     IEEE 754 binary64, as u64
 *          56  cached           u8, 0 or 1
 *          57  seven strings, each u16 length + bytes (no NUL, length at most
 *              sizeof(field) - 1), in this order: subject, db_user, database,
 *              model, conversation_id, trace_id, instance
 * The payload is exactly that long. A new field means a new version: the
 * writer writes the newest, the reader decodes every version it knows.
 */
#define RECORD_V1_FIXED_BYTES 57
#define RECORD_V1_MIN_BYTES   (RECORD_V1_FIXED_BYTES + 7 * 2)

static const uint8_t frame_magic[4] = { 'S', 'L', 'U', 'J' };

/* Upper bound of an encoded version 1 record (every string at its longest). */
#define RECORD_V1_MAX_BYTES (RECORD_V1_MIN_BYTES + 127 + 63 + 63 + 127 + 127 + 63 + 159)
#define FRAME_WRITE_MAX     (JOURNAL_FRAME_HEADER_BYTES + RECORD_V1_MAX_BYTES)

#define SEGMENT_MAX_BYTES_MIN UINT64_C(4096)

/* Reads go through one buffer that holds the largest frame. */
#define READ_BUF_BYTES (JOURNAL_FRAME_HEADER_BYTES + JOURNAL_PAYLOAD_READ_MAX + 65536)

#define LOCK_FILE_NAME "usage.lock"
#define SEGMENT_PREFIX "usage-"
#define SEGMENT_SUFFIX ".journal"
#define CORRUPT_SUFFIX ".corrupt"
#define SEGMENT_DIGITS 20
#define NAME_BYTES 64

struct segment {
	uint64_t seq;
	int fd;                 /* open (for appending or a pending fsync); -1: closed */
	uint64_t size_bytes;    /* bytes in the file */
	bool need_sync;         /* written since its last fdatasync */
	bool torn;              /* a write left part of a frame at the end: append no more */
	bool reported;          /* replay found a bad frame and logged it */
	bool damaged;           /* ... and it was not just a torn tail: keep the file */
};

struct journal {
	char *dir;
	int dir_fd;
	int lock_fd;
	bool dir_dirty;                 /* segments created since the directory's last fsync */

	struct segment cur;             /* the segment appended to */
	bool have_cur;                  /* false after a failed creation: append retries */
	bool rotate_warned;             /* logged that a size rotation failed */

	struct segment *sealed;         /* sealed, unreleased; ascending seq */
	size_t n_sealed, cap_sealed;

	uint64_t next_seq;
	uint64_t segment_max_bytes;
	uint64_t backlog_bytes;
	uint8_t *read_buf;              /* READ_BUF_BYTES, allocated on first read */
	struct journal_stats stats;
};

/* ---- little-endian encoding ---- */

/* Stores of a little-endian value: one move each (a byte loop cost ~58 Ir per u64). */
static void put_u16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, 2);
}

static void put_u32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static void put_u64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

static uint16_t get_u16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/*
 * The frame CRC is CRC-32 as zlib and gzip define it, computed by ISA-L
 * (crc32_gzip_refl, folding 16 bytes a step with PCLMULQDQ where the CPU has
 * it): zlib 1.2.13's byte-wise crc32 was ~5 Ir a byte, a quarter of a
 * record's cost (callgrind, bench mw part). Same function, same bytes on
 * disk: journals written with zlib's crc32 replay unchanged.
 */
/* CRC-32 of a frame: header bytes 4..11 (version, flags, length), then the payload. */
static uint32_t frame_crc(const uint8_t *header, const uint8_t *payload, size_t len)
{
	return crc32_gzip_refl(crc32_gzip_refl(0, header + 4, 8), payload, len);
}

/* A string as u16 length + bytes; len is its strnlen if known (<= field_size - 1), else SIZE_MAX. */
static uint8_t *put_string(uint8_t *p, const char *s, size_t field_size, size_t len)
{
	if (len > field_size - 1)
		len = strnlen(s, field_size - 1);
	put_u16(p, (uint16_t)len);
	memcpy(p + 2, s, len);
	return p + 2 + len;
}

/* Encode r (lens: see journal_append_measured) as one frame into out (FRAME_WRITE_MAX bytes); returns the frame's length. */
static size_t encode_frame(const struct usage_record *r, const uint16_t *lens, uint8_t *out)
{
	uint8_t *payload = out + JOURNAL_FRAME_HEADER_BYTES;
	uint8_t *p = payload;
	uint64_t ms_bits;

	memcpy(p, r->id, 16);
	put_u64(p + 16, (uint64_t)r->created_at_us);
	put_u64(p + 24, (uint64_t)r->input_tokens);
	put_u64(p + 32, (uint64_t)r->output_tokens);
	put_u64(p + 40, (uint64_t)r->llm_latency_ms);
	memcpy(&ms_bits, &r->statement_ms, sizeof(ms_bits));
	put_u64(p + 48, ms_bits);
	p[56] = r->cached ? 1 : 0;
	p += RECORD_V1_FIXED_BYTES;
#define LEN(i) (lens ? (size_t)lens[i] : SIZE_MAX)
	p = put_string(p, r->subject, sizeof(r->subject), LEN(0));
	p = put_string(p, r->db_user, sizeof(r->db_user), LEN(1));
	p = put_string(p, r->database, sizeof(r->database), LEN(2));
	p = put_string(p, r->model, sizeof(r->model), LEN(3));
	p = put_string(p, r->conversation_id, sizeof(r->conversation_id), LEN(4));
	p = put_string(p, r->trace_id, sizeof(r->trace_id), LEN(5));
	p = put_string(p, r->instance, sizeof(r->instance), LEN(6));
#undef LEN

	size_t len = (size_t)(p - payload);
	/* The CRC's input, version, flags and length, is first put right before
	 * the payload (where length and CRC go) so that one pass covers it. */
	put_u16(out + 8, JOURNAL_RECORD_VERSION);
	put_u16(out + 10, 0);
	put_u32(out + 12, (uint32_t)len);
	uint32_t crc = crc32_gzip_refl(0, out + 8, 8 + len);
	memcpy(out, frame_magic, 4);
	put_u16(out + 4, JOURNAL_RECORD_VERSION);
	put_u16(out + 6, 0);
	put_u32(out + 8, (uint32_t)len);
	put_u32(out + 12, crc);
	return JOURNAL_FRAME_HEADER_BYTES + len;
}

static bool get_string(const uint8_t **p, const uint8_t *end, char *field, size_t field_size)
{
	if (end - *p < 2)
		return false;
	size_t len = get_u16(*p);
	*p += 2;
	if (len > field_size - 1 || (size_t)(end - *p) < len || memchr(*p, '\0', len))
		return false;
	memcpy(field, *p, len);
	field[len] = '\0';
	*p += len;
	return true;
}

/* Decode a version 1 payload into *r; false when it is not a valid encoding. */
static bool decode_record_v1(const uint8_t *payload, size_t len, struct usage_record *r)
{
	const uint8_t *p = payload, *end = payload + len;
	uint64_t ms_bits;

	memset(r, 0, sizeof(*r));
	if (len < RECORD_V1_MIN_BYTES || p[56] > 1)
		return false;
	memcpy(r->id, p, 16);
	r->created_at_us = (int64_t)get_u64(p + 16);
	r->input_tokens = (int64_t)get_u64(p + 24);
	r->output_tokens = (int64_t)get_u64(p + 32);
	r->llm_latency_ms = (int64_t)get_u64(p + 40);
	ms_bits = get_u64(p + 48);
	memcpy(&r->statement_ms, &ms_bits, sizeof(ms_bits));
	r->cached = p[56] == 1;
	p += RECORD_V1_FIXED_BYTES;
	return get_string(&p, end, r->subject, sizeof(r->subject)) &&
	       get_string(&p, end, r->db_user, sizeof(r->db_user)) &&
	       get_string(&p, end, r->database, sizeof(r->database)) &&
	       get_string(&p, end, r->model, sizeof(r->model)) &&
	       get_string(&p, end, r->conversation_id, sizeof(r->conversation_id)) &&
	       get_string(&p, end, r->trace_id, sizeof(r->trace_id)) &&
	       get_string(&p, end, r->instance, sizeof(r->instance)) &&
	       p == end;
}

/* ---- files ---- */

static void segment_name(uint64_t seq, char *out)
{
	snprintf(out, NAME_BYTES, SEGMENT_PREFIX "%0*" PRIu64 SEGMENT_SUFFIX, SEGMENT_DIGITS, seq);
}

static void segment_path(const struct journal *j, uint64_t seq, char *out, size_t len)
{
	char name[NAME_BYTES];
	segment_name(seq, name);
	snprintf(out, len, "%s/%s", j->dir, name);
}

/*
 * Is name a segment file ("usage-<20 digits>.journal") or a kept damaged one
 * (the same + ".corrupt")? Sets *seq and *corrupt.
 */
static bool parse_segment_name(const char *name, uint64_t *seq, bool *corrupt)
{
	size_t plen = strlen(SEGMENT_PREFIX), slen = strlen(SEGMENT_SUFFIX);
	size_t base = plen + SEGMENT_DIGITS + slen;
	size_t len = strlen(name);
	uint64_t v = 0;

	if (strncmp(name, SEGMENT_PREFIX, plen) != 0)
		return false;
	for (size_t i = plen; i < plen + SEGMENT_DIGITS; i++) {
		if (name[i] < '0' || name[i] > '9')
			return false;
		unsigned d = (unsigned)(name[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (strncmp(name + plen + SEGMENT_DIGITS, SEGMENT_SUFFIX, slen) != 0)
		return false;
	if (len == base)
		*corrupt = false;
	else if (strcmp(name + base, CORRUPT_SUFFIX) == 0)
		*corrupt = true;
	else
		return false;
	*seq = v;
	return true;
}

/* Write all of buf, retrying on EINTR and short writes; *written = bytes that reached the file. */
static bool write_all(int fd, const uint8_t *buf, size_t len, size_t *written)
{
	*written = 0;
	while (*written < len) {
		ssize_t n = write(fd, buf + *written, len - *written);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		if (n == 0) {
			errno = EIO;
			return false;
		}
		*written += (size_t)n;
	}
	return true;
}

static bool sync_fd(int fd, bool data_only)
{
	int rc;
	do
		rc = data_only ? fdatasync(fd) : fsync(fd);
	while (rc != 0 && errno == EINTR);
	return rc == 0;
}

static int open_at(int dir_fd, const char *name, int flags, mode_t mode)
{
	int fd;
	do
		fd = openat(dir_fd, name, flags, mode);
	while (fd < 0 && errno == EINTR);
	return fd;
}

/* mkdir -p with mode 0700 for the components that are missing. */
static bool make_dirs(const char *dir, char *errbuf, size_t errlen)
{
	char path[PATH_MAX];
	size_t len = strlen(dir);

	if (len == 0 || len >= sizeof(path)) {
		snprintf(errbuf, errlen, "invalid usage journal directory \"%s\"", dir);
		return false;
	}
	memcpy(path, dir, len + 1);
	for (char *p = path + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(path, 0700) != 0 && errno != EEXIST) {
			snprintf(errbuf, errlen, "could not create usage journal directory \"%s\": %s",
			         path, strerror(errno));
			return false;
		}
		*p = c;
		if (c == '\0')
			return true;
	}
}

/* Create segment next_seq (skipping numbers whose file exists) into *out. */
static bool create_segment(struct journal *j, struct segment *out, char *errbuf, size_t errlen)
{
	char name[NAME_BYTES];

	for (;;) {
		if (j->next_seq == 0) {     /* wrapped around: 2^64 segments */
			snprintf(errbuf, errlen, "usage journal \"%s\" has run out of segment numbers",
			         j->dir);
			return false;
		}
		segment_name(j->next_seq, name);
		int fd = open_at(j->dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
		if (fd < 0 && errno == EEXIST) {
			j->next_seq++;
			continue;
		}
		if (fd < 0) {
			snprintf(errbuf, errlen, "could not create usage journal file \"%s/%s\": %s",
			         j->dir, name, strerror(errno));
			return false;
		}
		*out = (struct segment){ .seq = j->next_seq++, .fd = fd };
		j->dir_dirty = true;
		return true;
	}
}

/* Room for one more sealed segment. */
static bool reserve_sealed(struct journal *j)
{
	if (j->n_sealed < j->cap_sealed)
		return true;
	size_t cap = j->cap_sealed ? j->cap_sealed * 2 : 16;
	struct segment *s = realloc(j->sealed, cap * sizeof(*s));
	if (!s)
		return false;
	j->sealed = s;
	j->cap_sealed = cap;
	return true;
}

/*
 * Move the current segment to the sealed list (no fsync: journal_sync does
 * it). False, nothing changed, when out of memory.
 */
static bool retire_current(struct journal *j)
{
	if (!reserve_sealed(j))
		return false;
	struct segment s = j->cur;
	if (!s.need_sync && s.fd >= 0) {
		close(s.fd);
		s.fd = -1;
	}
	j->sealed[j->n_sealed++] = s;
	j->have_cur = false;
	j->stats.segments_sealed++;
	return true;
}

static bool open_current(struct journal *j, char *errbuf, size_t errlen)
{
	struct segment s;
	if (!create_segment(j, &s, errbuf, errlen))
		return false;
	j->cur = s;
	j->have_cur = true;
	return true;
}

static int compare_seq(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/*
 * Take over the segments a previous run left: fsync them and list them as
 * sealed (empty ones are removed); next_seq follows the highest number seen,
 * kept .corrupt files included, so no name is ever reused.
 */
static bool adopt_leftovers(struct journal *j, char *errbuf, size_t errlen)
{
	DIR *d = opendir(j->dir);
	uint64_t *seqs = NULL, max_seq = 0;
	size_t n = 0, cap = 0;
	struct dirent *de;
	bool ok = false;

	if (!d) {
		snprintf(errbuf, errlen, "could not read usage journal directory \"%s\": %s",
		         j->dir, strerror(errno));
		return false;
	}
	while ((de = readdir(d)) != NULL) {
		uint64_t seq;
		bool corrupt;
		if (!parse_segment_name(de->d_name, &seq, &corrupt))
			continue;
		if (seq > max_seq)
			max_seq = seq;
		if (corrupt || seq == 0)
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			uint64_t *s = realloc(seqs, ncap * sizeof(*s));
			if (!s) {
				snprintf(errbuf, errlen, "out of memory");
				goto out;
			}
			seqs = s;
			cap = ncap;
		}
		seqs[n++] = seq;
	}
	if (n > 0)
		qsort(seqs, n, sizeof(*seqs), compare_seq);

	uint64_t bytes = 0;
	for (size_t i = 0; i < n; i++) {
		char name[NAME_BYTES];
		struct stat st;
		segment_name(seqs[i], name);
		int fd = open_at(j->dir_fd, name, O_RDONLY | O_CLOEXEC, 0);
		if (fd < 0 || fstat(fd, &st) != 0) {
			snprintf(errbuf, errlen, "could not open usage journal file \"%s/%s\": %s",
			         j->dir, name, strerror(errno));
			if (fd >= 0)
				close(fd);
			goto out;
		}
		if (st.st_size == 0) {
			close(fd);
			unlinkat(j->dir_fd, name, 0);
			continue;
		}
		if (!sync_fd(fd, true))
			log_error("could not fsync usage journal file \"%s/%s\": %s",
			          j->dir, name, strerror(errno));
		close(fd);
		if (!reserve_sealed(j)) {
			snprintf(errbuf, errlen, "out of memory");
			goto out;
		}
		j->sealed[j->n_sealed++] = (struct segment){
			.seq = seqs[i], .fd = -1, .size_bytes = (uint64_t)st.st_size,
		};
		bytes += (uint64_t)st.st_size;
	}
	j->backlog_bytes += bytes;
	j->next_seq = max_seq + 1;
	if (j->n_sealed > 0)
		log_info("usage journal \"%s\": %zu unreleased segment%s (%" PRIu64 " bytes) from a previous run, to be replayed",
		         j->dir, j->n_sealed, j->n_sealed == 1 ? "" : "s", bytes);
	ok = true;
out:
	free(seqs);
	closedir(d);
	return ok;
}

/* ---- public ---- */

struct journal *journal_open(const char *dir, char *errbuf, size_t errlen)
{
	struct journal *j;
	struct stat st;

	if (!dir || !make_dirs(dir, errbuf, errlen))
		return NULL;
	j = calloc(1, sizeof(*j));
	if (!j || !(j->dir = strdup(dir))) {
		free(j);
		snprintf(errbuf, errlen, "out of memory");
		return NULL;
	}
	j->dir_fd = j->lock_fd = -1;
	j->cur.fd = -1;
	j->segment_max_bytes = JOURNAL_SEGMENT_MAX_BYTES_DEFAULT;
	j->next_seq = 1;

	j->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (j->dir_fd < 0 || fstat(j->dir_fd, &st) != 0) {
		snprintf(errbuf, errlen, "could not open usage journal directory \"%s\": %s",
		         dir, strerror(errno));
		goto fail;
	}
	if (st.st_mode & 077)
		log_warning("usage journal directory \"%s\" is accessible to other users (mode %04o); 0700 is expected",
		            dir, (unsigned)(st.st_mode & 07777));

	j->lock_fd = open_at(j->dir_fd, LOCK_FILE_NAME, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (j->lock_fd < 0) {
		snprintf(errbuf, errlen, "could not open lock file \"%s/%s\": %s",
		         dir, LOCK_FILE_NAME, strerror(errno));
		goto fail;
	}
	if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno == EWOULDBLOCK)
			snprintf(errbuf, errlen, "usage journal directory \"%s\" is locked by another process", dir);
		else
			snprintf(errbuf, errlen, "could not lock \"%s/%s\": %s",
			         dir, LOCK_FILE_NAME, strerror(errno));
		goto fail;
	}

	if (!adopt_leftovers(j, errbuf, errlen) || !open_current(j, errbuf, errlen))
		goto fail;
	if (sync_fd(j->dir_fd, false))
		j->dir_dirty = false;
	return j;

fail:
	journal_close(j);
	return NULL;
}

void journal_set_segment_max_bytes(struct journal *j, uint64_t max_bytes)
{
	if (max_bytes == 0)
		max_bytes = JOURNAL_SEGMENT_MAX_BYTES_DEFAULT;
	j->segment_max_bytes = max_bytes < SEGMENT_MAX_BYTES_MIN ? SEGMENT_MAX_BYTES_MIN : max_bytes;
}

/* Start a new segment if the frame would take the current one past its size. */
static void rotate_if_full(struct journal *j, size_t frame_len)
{
	char err[JOURNAL_ERRBUF_SIZE];
	struct segment next;

	if (j->cur.size_bytes == 0 || j->cur.size_bytes + frame_len <= j->segment_max_bytes)
		return;
	if (!reserve_sealed(j)) {
		snprintf(err, sizeof(err), "out of memory");
	} else if (create_segment(j, &next, err, sizeof(err))) {
		retire_current(j);          /* cannot fail: reserved */
		j->cur = next;
		j->have_cur = true;
		j->rotate_warned = false;
		return;
	}
	if (!j->rotate_warned)
		log_warning("could not start a new usage journal segment: %s; appending to the full one", err);
	j->rotate_warned = true;
}

bool journal_append(struct journal *j, const struct usage_record *r, char *errbuf, size_t errlen)
{
	return journal_append_measured(j, r, NULL, errbuf, errlen);
}

bool journal_append_measured(struct journal *j, const struct usage_record *r, const uint16_t *lens,
                             char *errbuf, size_t errlen)
{
	uint8_t frame[FRAME_WRITE_MAX];
	size_t len = encode_frame(r, lens, frame), written;

	if (j->have_cur && j->cur.torn && !retire_current(j)) {
		snprintf(errbuf, errlen, "out of memory");
		goto fail;
	}
	if (!j->have_cur && !open_current(j, errbuf, errlen))
		goto fail;
	rotate_if_full(j, len);

	if (!write_all(j->cur.fd, frame, len, &written)) {
		int err = errno;
		char path[PATH_MAX + NAME_BYTES];
		segment_path(j, j->cur.seq, path, sizeof(path));
		snprintf(errbuf, errlen, "could not write to usage journal file \"%s\": %s",
		         path, strerror(err));
		if (written > 0 && ftruncate(j->cur.fd, (off_t)j->cur.size_bytes) != 0) {
			/* Part of the frame stays: seal the segment so nothing follows it. */
			log_warning("could not remove a partly written record from \"%s\": %s; the segment is sealed",
			            path, strerror(errno));
			j->cur.size_bytes += written;
			j->backlog_bytes += written;
			j->cur.need_sync = true;
			j->cur.torn = true;
			retire_current(j);      /* if out of memory, the next append retries */
		}
		errno = err;
		goto fail;
	}
	j->cur.size_bytes += len;
	j->cur.need_sync = true;
	j->backlog_bytes += len;
	j->stats.records_appended++;
	return true;

fail:
	j->stats.append_failures++;
	return false;
}

uint64_t journal_current_seq(const struct journal *j)
{
	return j->have_cur ? j->cur.seq : 0;
}

bool journal_sync(struct journal *j)
{
	char path[PATH_MAX + NAME_BYTES];
	bool ok = true;

	if (j->have_cur && j->cur.need_sync) {
		if (sync_fd(j->cur.fd, true)) {
			j->cur.need_sync = false;
		} else {
			segment_path(j, j->cur.seq, path, sizeof(path));
			log_error("could not fsync usage journal file \"%s\": %s", path, strerror(errno));
			j->stats.sync_failures++;
			ok = false;
		}
	}
	for (size_t i = 0; i < j->n_sealed; i++) {
		struct segment *s = &j->sealed[i];
		if (s->fd < 0)
			continue;
		if (s->need_sync && !sync_fd(s->fd, true)) {
			segment_path(j, s->seq, path, sizeof(path));
			log_error("could not fsync usage journal file \"%s\": %s", path, strerror(errno));
			j->stats.sync_failures++;
			ok = false;
			continue;
		}
		close(s->fd);
		s->fd = -1;
		s->need_sync = false;
	}
	if (j->dir_dirty) {
		if (sync_fd(j->dir_fd, false)) {
			j->dir_dirty = false;
		} else {
			log_error("could not fsync usage journal directory \"%s\": %s", j->dir, strerror(errno));
			j->stats.sync_failures++;
			ok = false;
		}
	}
	return ok;
}

uint64_t journal_seal(struct journal *j)
{
	char err[JOURNAL_ERRBUF_SIZE];
	uint64_t seq;

	if (!j->have_cur) {
		if (!open_current(j, err, sizeof(err)))
			log_warning("%s; the next append tries again", err);
		return 0;
	}
	if (j->cur.size_bytes == 0)
		return 0;
	seq = j->cur.seq;
	if (!retire_current(j)) {
		log_warning("could not seal usage journal segment %" PRIu64 ": out of memory", seq);
		return 0;
	}
	if (!open_current(j, err, sizeof(err)))
		log_warning("%s; the next append tries again", err);
	return seq;
}

/* A buffered reader over one segment file. */
struct reader {
	int fd;
	uint8_t *buf;
	size_t start, end;      /* unread bytes: buf[start..end) */
	bool eof;
	int error;              /* errno of a failed read, 0 if none */
};

/* Make at least want bytes readable; returns how many are (fewer only at EOF or error). */
static size_t reader_fill(struct reader *rd, size_t want)
{
	if (rd->end - rd->start >= want || rd->eof || rd->error)
		return rd->end - rd->start;
	if (rd->start > 0) {
		memmove(rd->buf, rd->buf + rd->start, rd->end - rd->start);
		rd->end -= rd->start;
		rd->start = 0;
	}
	while (rd->end < want) {
		ssize_t n = read(rd->fd, rd->buf + rd->end, READ_BUF_BYTES - rd->end);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rd->error = errno;
			break;
		}
		if (n == 0) {
			rd->eof = true;
			break;
		}
		rd->end += (size_t)n;
	}
	return rd->end - rd->start;
}

/*
 * Deliver the records of one sealed segment up to its first bad frame; log
 * the bad frame the first time it is seen.
 */
static size_t read_segment(struct journal *j, struct segment *s, journal_record_fn fn, void *arg)
{
	char path[PATH_MAX + NAME_BYTES], name[NAME_BYTES], why[128] = "";
	struct reader rd = { .fd = -1 };
	struct usage_record rec;
	uint64_t offset = 0;
	size_t count = 0;
	bool torn = false;

	segment_name(s->seq, name);
	segment_path(j, s->seq, path, sizeof(path));
	if (!j->read_buf && !(j->read_buf = malloc(READ_BUF_BYTES))) {
		log_error("could not read usage journal file \"%s\": out of memory", path);
		return 0;
	}
	rd.buf = j->read_buf;
	rd.fd = open_at(j->dir_fd, name, O_RDONLY | O_CLOEXEC, 0);
	if (rd.fd < 0) {
		if (!s->reported)
			log_warning("could not open usage journal file \"%s\": %s; its records are skipped",
			            path, strerror(errno));
		s->reported = true;
		return 0;
	}

	for (;;) {
		size_t avail = reader_fill(&rd, JOURNAL_FRAME_HEADER_BYTES);
		if (rd.error) {
			snprintf(why, sizeof(why), "read error (%s)", strerror(rd.error));
			break;
		}
		if (avail == 0)
			break;              /* clean end */
		if (avail < JOURNAL_FRAME_HEADER_BYTES) {
			snprintf(why, sizeof(why), "truncated frame header (%zu of %d bytes)",
			         avail, JOURNAL_FRAME_HEADER_BYTES);
			torn = true;
			break;
		}
		const uint8_t *h = rd.buf + rd.start;
		unsigned version = get_u16(h + 4);
		uint32_t len = get_u32(h + 8);
		if (memcmp(h, frame_magic, 4) != 0) {
			snprintf(why, sizeof(why), "bad frame magic");
			break;
		}
		if (len > JOURNAL_PAYLOAD_READ_MAX) {
			snprintf(why, sizeof(why), "bad frame length %" PRIu32, len);
			break;
		}
		avail = reader_fill(&rd, JOURNAL_FRAME_HEADER_BYTES + len);
		h = rd.buf + rd.start;
		if (rd.error) {
			snprintf(why, sizeof(why), "read error (%s)", strerror(rd.error));
			break;
		}
		if (avail < JOURNAL_FRAME_HEADER_BYTES + len) {
			snprintf(why, sizeof(why), "truncated frame (%zu of %zu bytes)",
			         avail, (size_t)JOURNAL_FRAME_HEADER_BYTES + len);
			torn = true;
			break;
		}
		if (get_u32(h + 12) != frame_crc(h, h + JOURNAL_FRAME_HEADER_BYTES, len)) {
			snprintf(why, sizeof(why), "bad CRC");
			break;
		}
		if (version != 1) {
			snprintf(why, sizeof(why), "unsupported record version %u", version);
			break;
		}
		if (!decode_record_v1(h + JOURNAL_FRAME_HEADER_BYTES, len, &rec)) {
			snprintf(why, sizeof(why), "bad record encoding");
			break;
		}
		fn(arg, s->seq, &rec);
		count++;
		rd.start += JOURNAL_FRAME_HEADER_BYTES + len;
		offset += JOURNAL_FRAME_HEADER_BYTES + len;
	}

	if (why[0] && !s->reported) {
		struct stat st;
		uint64_t size = fstat(rd.fd, &st) == 0 ? (uint64_t)st.st_size : offset;
		log_warning("usage journal file \"%s\": %s at offset %" PRIu64 "; the %zu records before it are kept, the %" PRIu64 " bytes from there on are skipped",
		            path, why, offset, count, size > offset ? size - offset : 0);
		s->reported = true;
		if (!torn) {
			s->damaged = true;
			j->stats.damaged_segments++;
		}
	}
	close(rd.fd);
	return count;
}

size_t journal_foreach_unreleased(struct journal *j, journal_record_fn fn, void *arg)
{
	size_t count = 0;
	for (size_t i = 0; i < j->n_sealed; i++)
		count += read_segment(j, &j->sealed[i], fn, arg);
	return count;
}

bool journal_oldest_unreleased(const struct journal *j, uint64_t *seq)
{
	if (j->n_sealed == 0)
		return false;
	*seq = j->sealed[0].seq;
	return true;
}

size_t journal_foreach_in_segment(struct journal *j, uint64_t seq, journal_record_fn fn,
                                  void *arg)
{
	for (size_t i = 0; i < j->n_sealed; i++)
		if (j->sealed[i].seq == seq)
			return read_segment(j, &j->sealed[i], fn, arg);
	return 0;
}

bool journal_release(struct journal *j, uint64_t seq)
{
	size_t keep = 0;
	bool ok = true;

	for (size_t i = 0; i < j->n_sealed; i++) {
		struct segment s = j->sealed[i];
		char name[NAME_BYTES], kept[NAME_BYTES + sizeof(CORRUPT_SUFFIX)];
		int rc;

		if (s.seq > seq) {
			j->sealed[keep++] = s;
			continue;
		}
		if (s.fd >= 0) {
			close(s.fd);
			s.fd = -1;
		}
		segment_name(s.seq, name);
		if (s.damaged) {
			snprintf(kept, sizeof(kept), "%s" CORRUPT_SUFFIX, name);
			rc = renameat(j->dir_fd, name, j->dir_fd, kept);
			if (rc == 0)
				log_warning("damaged usage journal file \"%s/%s\" is kept as \"%s\" for inspection",
				            j->dir, name, kept);
		} else {
			rc = unlinkat(j->dir_fd, name, 0);
		}
		if (rc != 0 && errno != ENOENT) {
			log_error("could not remove usage journal file \"%s/%s\": %s",
			          j->dir, name, strerror(errno));
			s.need_sync = false;
			j->sealed[keep++] = s;
			ok = false;
			continue;
		}
		j->backlog_bytes -= s.size_bytes;
		j->stats.segments_released++;
	}
	j->n_sealed = keep;
	return ok;
}

uint64_t journal_backlog_bytes(const struct journal *j)
{
	return j->backlog_bytes;
}

void journal_get_stats(const struct journal *j, struct journal_stats *out)
{
	*out = j->stats;
	out->unreleased_segments = j->n_sealed;
	out->backlog_bytes = j->backlog_bytes;
}

void journal_close(struct journal *j)
{
	if (!j)
		return;
	if (j->dir_fd >= 0 && j->lock_fd >= 0)
		journal_sync(j);
	if (j->have_cur) {
		close(j->cur.fd);
		if (j->cur.size_bytes == 0) {
			char name[NAME_BYTES];
			segment_name(j->cur.seq, name);
			unlinkat(j->dir_fd, name, 0);
		}
	}
	for (size_t i = 0; i < j->n_sealed; i++)
		if (j->sealed[i].fd >= 0)
			close(j->sealed[i].fd);
	if (j->lock_fd >= 0)
		close(j->lock_fd);
	if (j->dir_fd >= 0)
		close(j->dir_fd);
	free(j->sealed);
	free(j->read_buf);
	free(j->dir);
	free(j);
}
