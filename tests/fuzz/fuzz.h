/*
 * fuzz.h - what the libFuzzer targets in tests/fuzz share: a check that
 * aborts (so libFuzzer saves the input), a NUL-terminated copy of the input,
 * and a quiet log. Header-only; each target is one .c file (README.md).
 */
#ifndef SLUICE_FUZZ_H
#define SLUICE_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A broken promise is a crash: libFuzzer writes the input to crash-<sha1>. */
#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

/* data[0..size) as a malloc'd C string (cut at the first NUL); abort on OOM. */
static inline char *fuzz_cstring(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	CHECK(s != NULL);
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/* True when needle occurs in data[0..size). */
static inline int fuzz_contains(const uint8_t *data, size_t size, const char *needle)
{
	return memmem(data, size, needle, strlen(needle)) != NULL;
}

/* Log nothing: a log line per input would be most of the run's time. */
static inline void fuzz_quiet_log(void)
{
	log_setup(NULL, false, NULL, NULL, 0, true);
}

#endif
