/* SPDX-License-Identifier: PostgreSQL */
/*
 * fuzz_settings_scan.c - libFuzzer target for ai/settings_scan.c: any
 * statement text gives one of the documented answers, without reading past
 * len (the text is not NUL-terminated) and the same answer twice.
 */
#include "fuzz.h"

#include "ai/settings_scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum settings_effect e = settings_effect((const char *) data, size);

	CHECK(e == SETTINGS_NONE || e == SETTINGS_REPORTED || e == SETTINGS_UNKNOWN);
	CHECK(e == settings_effect((const char *) data, size));
	return 0;
}
