/* SPDX-License-Identifier: PostgreSQL */
/*
 * fuzz_admin.c - libFuzzer target for the admin console's command parsing:
 * the tokenizer every console query goes through (admin_tokenize_count:
 * words, 'strings', "names", comments), and the value parsers of SET
 * name = value (config_set, on a fresh default config), which take the rest of
 * the input as the value of the key its first line names. The commands
 * themselves need a running pgsluice and are covered by
 * tests/integration/test_admin.py.
 */
#include "fuzz.h"

#include "admin.h"
#include "config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_log();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_cstring(data, size);
	char *nl = strchr(text, '\n');
	char err[512];
	int n = admin_tokenize_count(text);

	CHECK(n >= -1 && (size_t) (n < 0 ? 0 : n) <= size);
	if (nl) {
		struct sluice_config *cfg = config_load("/dev/null", err, sizeof err);   /* defaults */

		CHECK(cfg != NULL);
		*nl = '\0';
		err[0] = '\0';
		if (!config_set(cfg, text, nl + 1, err, sizeof err))
			CHECK(err[0] != '\0' && strnlen(err, sizeof err) < sizeof err);
		config_free(cfg);
	}
	free(text);
	return 0;
}
