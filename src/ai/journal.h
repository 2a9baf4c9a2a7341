/* SPDX-License-Identifier: PostgreSQL */
/*
 * journal.h - the append-only usage journal (docs/design.md, src/ai/README.md): usage records
 * written to checksummed segment files in usage_journal_dir before the client
 * is told, fsynced on a timer, removed once PostgreSQL has committed them.
 */
#ifndef SLUICE_AI_JOURNAL_H
#define SLUICE_AI_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * How the journal gives exactly-once storage together with the usage writer,
 * and what each kind of failure can lose, is explained in src/ai/README.md.
 *
 * Files: one segment file per number, usage-<20-digit seq>.journal, mode 0600,
 * in a directory of mode 0700, plus usage.lock (held with flock while open).
 * Exactly one segment, the current one, is open for appending; the others
 * are sealed and stay on disk, "unreleased", until journal_release. A sealed
 * segment in which a damaged frame was found is renamed to
 * usage-<seq>.journal.corrupt on release instead of being unlinked.
 *
 * Frame (all integers little-endian), one per record:
 *   magic   4 bytes  "SLUJ"
 *   version u16      record encoding version, JOURNAL_RECORD_VERSION
 *   flags   u16      0
 *   length  u32      payload bytes, at most JOURNAL_PAYLOAD_READ_MAX
 *   crc     u32      CRC-32 (zlib's crc32 function, computed by ISA-L) of version, flags, length, payload
 *   payload length bytes, the record encoded as described in journal.c
 *
 * Not thread-safe: one event loop owns a struct journal. journal_append and
 * journal_seal block no longer than a write(2) or open(2), journal_release
 * than an unlink(2); journal_sync, journal_open and journal_close fsync, and
 * the foreach functions read whole segments (the writer's side, off the
 * data path).
 */

/* One LLM call (a row of sluice.llm_usage, without cost_cents). */
struct usage_record {
	uint8_t id[16];               /* UUID v4 made by pgsluice: with created_at_us the idempotency key */
	int64_t created_at_us;        /* wall clock, microseconds since the epoch (UTC) */
	char subject[128];            /* text fields: NUL-terminated bytes, stored as given */
	char db_user[64];             /* (the journal neither checks nor repairs UTF-8); */
	char database[64];            /* a field without a NUL in its array is stored */
	char model[128];              /* truncated to sizeof(field) - 1 bytes; "" = none */
	int64_t input_tokens;
	int64_t output_tokens;
	int64_t llm_latency_ms;       /* -1: not given */
	double statement_ms;          /* the statement's time through pgsluice */
	bool cached;                  /* answered from the completion cache */
	char conversation_id[128];
	char trace_id[64];
	char instance[160];
};

/* Segments rotate once they would pass this size (journal_set_segment_max_bytes). */
#define JOURNAL_SEGMENT_MAX_BYTES_DEFAULT (UINT64_C(16) * 1024 * 1024)

/* The record encoding journal_append writes; readers decode it and older ones. */
#define JOURNAL_RECORD_VERSION 1

/* Frame header bytes, and the largest payload a reader accepts (any version). */
#define JOURNAL_FRAME_HEADER_BYTES 16
#define JOURNAL_PAYLOAD_READ_MAX 65536

/* An errbuf this large never truncates a journal message (paths up to ~3.8 kB). */
#define JOURNAL_ERRBUF_SIZE 4352

struct journal;

/*
 * Per record of a sealed segment: its segment number and the record, which is
 * borrowed for the call only (copy what you keep). fn must not call into the
 * journal.
 */
typedef void (*journal_record_fn)(void *arg, uint64_t segment, const struct usage_record *r);

/*
 * Open the journal in dir, creating dir (and missing parents) with mode 0700
 * if needed, and lock it with flock so that a second pgsluice cannot use the
 * same directory. Segments left by a previous run (crash or plain close) are
 * fsynced and become sealed and unreleased, to be replayed by the writer;
 * empty ones are removed. A fresh current segment is created, numbered after
 * the highest segment number found. Replays nothing itself. Returns NULL with
 * errbuf set (e.g. `usage journal directory "/x" is locked by another
 * process`) on failure. Free with journal_close.
 */
struct journal *journal_open(const char *dir, char *errbuf, size_t errlen);

/*
 * Rotate segments once appending a frame would take the current one past
 * max_bytes (0: JOURNAL_SEGMENT_MAX_BYTES_DEFAULT, the value at open; values
 * below 4096 are raised to 4096). Takes effect from the next append. A
 * segment passes max_bytes only when a new one cannot be created.
 */
void journal_set_segment_max_bytes(struct journal *j, uint64_t max_bytes);

/*
 * Append one record: encode it and write(2) the frame to the current segment
 * (O_APPEND; EINTR and short writes handled; no fsync). When the record is in
 * the file, returns true: it survives a SIGKILL of pgsluice from now on, and a
 * machine crash from the next journal_sync. Rotates first if the segment is
 * full (a new segment that cannot be created leaves appends going to the
 * full one). Returns false with errbuf set, e.g.
 *   could not write to usage journal file "/x/usage-...journal": No space left on device
 * when the record could not be written whole; any part of it that reached
 * the file is cut off again (or, if that fails, the segment is sealed with a
 * torn tail that replay skips), so later records are not hidden behind it.
 * The caller must then not acknowledge the statement as recorded.
 */
bool journal_append(struct journal *j, const struct usage_record *r, char *errbuf, size_t errlen);

/*
 * The text fields of a usage_record in the order the record encoding
 * stores them (journal.c): subject, db_user, database, model,
 * conversation_id, trace_id, instance.
 */
#define JOURNAL_TEXT_FIELDS 7

/*
 * As journal_append, with the lengths of r's text fields known to the
 * caller, who measured them when it copied them: lens[i] is
 * strnlen(field, sizeof(field) - 1) of the i-th field in the order above
 * (a larger value is measured again). lens NULL: all are measured here.
 */
bool journal_append_measured(struct journal *j, const struct usage_record *r, const uint16_t *lens,
                             char *errbuf, size_t errlen);

/*
 * The number of the current segment: the one the last successful
 * journal_append wrote its record to (appends go to no other); 0 when there
 * is none (creating it failed). Lets the usage writer keep, in memory, what
 * it appended to each segment, and ship a sealed segment without reading it
 * back.
 */
uint64_t journal_current_seq(const struct journal *j);

/*
 * fdatasync the current segment if anything was appended since its last sync,
 * every sealed segment not yet synced (closing it for writing), and the
 * directory if segments were created. Call from a timer (e.g. every
 * usage_flush_interval): its period bounds what a machine crash can lose.
 * Blocks for the duration of the fsyncs. Returns false (and logs the file and
 * error) when an fsync failed; the data then stays marked unsynced and is
 * fsynced again by the next call.
 */
bool journal_sync(struct journal *j);

/*
 * Seal the current segment (it will be fsynced by the next journal_sync, not
 * here) and start a new one. Returns the sealed segment's number, or 0 when
 * there is nothing to seal: the current segment holds no record (nothing
 * changes), or there is none because creating it failed (this call tries
 * again). If the new segment cannot be created, a warning is logged and the
 * next journal_append tries again.
 */
uint64_t journal_seal(struct journal *j);

/*
 * Call fn for each record of every sealed, unreleased segment, oldest segment
 * first, records in append order; the current segment is not read. A segment
 * is read up to its first bad frame (truncated, bad magic, length, CRC,
 * version or encoding) or read error: the valid records before it are
 * delivered, the rest of the segment is skipped, and a warning naming the
 * file, the offset and the reason is logged the first time only. Returns the
 * number of records delivered.
 */
size_t journal_foreach_unreleased(struct journal *j, journal_record_fn fn, void *arg);

/*
 * The oldest sealed, unreleased segment: true with *seq set, false when there
 * is none. With journal_foreach_in_segment, lets the writer ship one segment
 * per transaction.
 */
bool journal_oldest_unreleased(const struct journal *j, uint64_t *seq);

/*
 * As journal_foreach_unreleased, for the one sealed, unreleased segment seq
 * (0 records if there is no such segment). Returns the records delivered.
 */
size_t journal_foreach_in_segment(struct journal *j, uint64_t seq, journal_record_fn fn,
                                  void *arg);

/*
 * The records of every sealed segment numbered <= seq are committed in
 * PostgreSQL: unlink those segment files (rename damaged ones to .corrupt).
 * The current segment is never released. Returns false (and logs) if a file
 * could not be removed; that segment stays unreleased and is replayed again
 * later, which the idempotency key makes harmless.
 */
bool journal_release(struct journal *j, uint64_t seq);

/*
 * Bytes in unreleased segments, the current one included (file sizes). For
 * the backlog warning and metrics.
 */
uint64_t journal_backlog_bytes(const struct journal *j);

/* Counters for metrics and SHOW USAGE. */
struct journal_stats {
	uint64_t records_appended;     /* journal_append successes */
	uint64_t append_failures;      /* journal_append failures (records not stored) */
	uint64_t sync_failures;        /* failed fsyncs */
	uint64_t segments_sealed;      /* by journal_seal and by size */
	uint64_t segments_released;
	uint64_t damaged_segments;     /* segments where replay found a bad frame */
	uint64_t unreleased_segments;  /* sealed, not yet released (current not counted) */
	uint64_t backlog_bytes;        /* as journal_backlog_bytes */
};

void journal_get_stats(const struct journal *j, struct journal_stats *out);

/*
 * fsync and close every segment and free j (NULL is ignored). Does not seal:
 * the current segment, if not empty, is replayed by the next journal_open.
 */
void journal_close(struct journal *j);

#endif
