/* SPDX-License-Identifier: PostgreSQL */
/*
 * fuzz_config.c - libFuzzer target for config.c's loader (inih, the key
 * table, [databases], [users], [limits] lines handed to ai/limits.c): the
 * input is written to a file in a private temporary directory and loaded.
 * A load gives a config or an error message, and a loaded config prints
 * every key back (SHOW CONFIG) and takes each printed value again.
 * Inputs naming a path in an %include ('/' after "include") are skipped: a
 * FIFO or /dev/zero would stall the run, and the file is the
 * administrator's. A relative include is read from the working directory
 * (scripts/fuzz runs each target in a directory of its own).
 */
#include "fuzz.h"

#include <stdio.h>
#include <unistd.h>

#include "config.h"

static char dir[64] = "/tmp/pgsluice-fuzz-config-XXXXXX", path[128];

/* libFuzzer ends a timed run with exit(): leave no directory behind. */
static void remove_tmp(void)
{
	unlink(path);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof path, "%s/pgsluice.ini", dir);
	atexit(remove_tmp);
	fuzz_quiet_log();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *inc = memmem(data, size, "include", 7);
	char err[4096];
	struct sluice_config *cfg;
	FILE *f;

	if (inc && memchr(inc, '/', size - (size_t) (inc - data)))
		return 0;
	f = fopen(path, "w");
	CHECK(f != NULL);
	CHECK(fwrite(data, 1, size, f) == size);
	CHECK(fclose(f) == 0);

	err[0] = '\0';
	cfg = config_load(path, err, sizeof err);
	if (!cfg) {
		CHECK(err[0] != '\0' && strnlen(err, sizeof err) < sizeof err);
		return 0;
	}
	size_t n;
	const struct config_key *keys = config_keys(&n);

	for (size_t i = 0; i < n; i++) {
		char value[4096];
		const char *shown = config_format_value(cfg, &keys[i], value, sizeof value);

		char why[512];

		CHECK(shown != NULL);
		/* what SHOW CONFIG prints, SET takes back (reloadable keys only can be SET) */
		if (keys[i].reloadable && !config_set(cfg, keys[i].name, shown, why, sizeof why)) {
			fprintf(stderr, "SET %s = '%s' refused what SHOW CONFIG printed: %s\n", keys[i].name, shown, why);
			abort();
		}
	}
	config_free(cfg);
	return 0;
}
