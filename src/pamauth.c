/* SPDX-License-Identifier: PostgreSQL */
/* pamauth.c - see pamauth.h. */
#include "pamauth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autoconfig.h"

#ifdef HAVE_PAM
#include <security/pam_appl.h>

/* What the conversation answers with, and what the modules told it. */
struct conv_state {
	const char *password;
	struct pamauth_result *res;
};

static void note(struct pamauth_result *res, const char *fmt, const char *text)
{
	size_t used = strlen(res->message);
	if (used + 3 >= sizeof(res->message))
		return;
	if (used > 0) {
		memcpy(res->message + used, "; ", 3);
		used += 2;
	}
	snprintf(res->message + used, sizeof(res->message) - used, fmt, text ? text : "");
}

/*
 * The PAM conversation: a prompt gets the client's password (the only thing
 * a pooler can answer: the client already sent it in one PasswordMessage);
 * error messages are kept for the log, as PgBouncer's pam_conversation().
 */
static int conversation(int n, const struct pam_message **msgs, struct pam_response **out, void *arg)
{
	struct conv_state *st = arg;
	if (n <= 0 || n > PAM_MAX_NUM_MSG)
		return PAM_CONV_ERR;
	struct pam_response *replies = calloc((size_t)n, sizeof(*replies));
	if (!replies)
		return PAM_BUF_ERR;
	for (int i = 0; i < n; i++) {
		switch (msgs[i]->msg_style) {
		case PAM_PROMPT_ECHO_OFF:
		case PAM_PROMPT_ECHO_ON:
			/* the caller (libpam) frees the reply */
			if (!(replies[i].resp = strdup(st->password)))
				goto fail;
			break;
		case PAM_ERROR_MSG:
			note(st->res, "pam_conversation(): PAM error: %s", msgs[i]->msg);
			break;
		case PAM_TEXT_INFO:
			break;
		default:
			note(st->res, "pam_conversation(): unsupported message style %s", "");
			goto fail;
		}
	}
	*out = replies;
	return PAM_SUCCESS;
fail:
	for (int i = 0; i < n; i++)
		free(replies[i].resp);
	free(replies);
	return PAM_CONV_ERR;
}

bool pamauth_available(void)
{
	return true;
}

void pamauth_check(const char *confdir, const char *user, const char *password, const char *rhost,
                   struct pamauth_result *res)
{
	struct conv_state st = { password, res };
	struct pam_conv conv = { conversation, &st };
	pam_handle_t *h = NULL;
	int rc;
	res->ok = false;
	res->message[0] = '\0';
#ifdef HAVE_PAM_START_CONFDIR
	rc = pam_start_confdir(PAMAUTH_SERVICE, user, &conv, confdir && *confdir ? confdir : NULL, &h);
#else
	if (confdir && *confdir) {
		note(res, "auth_pam_confdir needs Linux-PAM 1.4 (pam_start_confdir)%s", "");
		return;
	}
	rc = pam_start(PAMAUTH_SERVICE, user, &conv, &h);
#endif
	if (rc != PAM_SUCCESS) {
		note(res, "pam_start() failed: %s", pam_strerror(h, rc));
		return;
	}
	if (rhost && *rhost && (rc = pam_set_item(h, PAM_RHOST, rhost)) != PAM_SUCCESS) {
		note(res, "pam_set_item(PAM_RHOST) failed: %s", pam_strerror(h, rc));
	} else if ((rc = pam_authenticate(h, PAM_SILENT)) != PAM_SUCCESS) {
		note(res, "pam_authenticate() failed: %s", pam_strerror(h, rc));
	} else if ((rc = pam_acct_mgmt(h, PAM_SILENT)) != PAM_SUCCESS) {
		note(res, "pam_acct_mgmt() failed: %s", pam_strerror(h, rc));
	} else {
		res->ok = true;
	}
	pam_end(h, rc);
}

#else /* !HAVE_PAM */

bool pamauth_available(void)
{
	return false;
}

void pamauth_check(const char *confdir, const char *user, const char *password, const char *rhost,
                   struct pamauth_result *res)
{
	(void)confdir;
	(void)user;
	(void)password;
	(void)rhost;
	res->ok = false;
	snprintf(res->message, sizeof(res->message), "pgsluice was built without PAM support");
}

#endif
