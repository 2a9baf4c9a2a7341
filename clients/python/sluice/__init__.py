# SPDX-License-Identifier: PostgreSQL
"""sluice - a small kit for applications behind pgsluice (psycopg 3).

pgsluice reads sqlcommenter tags on statements (docs/ai-middleware.md). This
module builds them safely and wraps the three things an AI application does
with them:

    import sluice

    # tag one statement (values URL-encoded as sqlcommenter says)
    conn.execute(sluice.tag("INSERT INTO answers VALUES (%s)", (text,), ai_user=user, **sluice.usage(resp)))

    # attribute every statement of a connection (SET sluice.user, answered by pgsluice)
    with sluice.attribute(conn, user, model="gpt-4o"):
        conn.execute("SELECT ...")

    # run a statement for a subject; on a rate-limit refusal (53400) wait as
    # the HINT says and try again
    rows = sluice.execute(conn, "SELECT answer FROM llm_cache WHERE k = %s", (key,), ai_user=user).fetchall()

Nothing here needs more than the standard library, except execute() and
attribute(), which take a psycopg 3 connection. For SQLAlchemy, see
sluice.sqlalchemy (imported on its own: `import sluice.sqlalchemy`).
"""

import contextlib
import re
import time
from urllib.parse import quote

__all__ = ["comment", "tag", "usage", "attribute", "execute", "retry_after", "budget_status",
           "RATE_LIMITED"]

RATE_LIMITED = "53400"          # configuration_limit_exceeded: a limit or budget refused it
_RETRY_AFTER = re.compile(r"Retry after ([0-9]+(?:\.[0-9]+)?) s")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def comment(**tags):
    """The sqlcommenter comment for tags: comment(ai_user="o'brien") == "/*ai_user='o%27brien'*/".

    Keys sorted, values URL-encoded (RFC 3986: everything but letters, digits
    and "-._~"), each in single quotes, as the sqlcommenter specification
    says. Tags whose value is None are left out; an empty result is "".
    """
    parts = []
    for key in sorted(tags):
        value = tags[key]
        if value is None:
            continue
        if not _KEY.match(key):
            raise ValueError(f"invalid tag name {key!r}")
        if isinstance(value, bool):
            raise TypeError(f"tag {key} takes a string or a number, not a bool")
        parts.append(f"{key}='{quote(str(value), safe='')}'")
    return f"/*{','.join(parts)}*/" if parts else ""


def tag(sql, params=None, **tags):
    """sql with the comment of tags appended at its end (pgsluice reads the last comment).

    With params (psycopg's %s placeholders), the comment's "%" are doubled
    so psycopg does not read them as placeholders.
    """
    text = comment(**tags)
    if not text:
        return sql
    if params is not None:
        text = text.replace("%", "%%")
    return f"{sql.rstrip().rstrip(';')} {text}"


def _field(obj, name):
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def usage(response):
    """ai_model, ai_tokens_in and ai_tokens_out tags from an LLM response's usage.

    Reads OpenAI Chat Completions (usage.prompt_tokens, completion_tokens),
    OpenAI Responses and Anthropic Messages (usage.input_tokens,
    output_tokens; Anthropic's cache_creation_input_tokens and
    cache_read_input_tokens count as input), as SDK objects or as dicts.
    Keys whose value is unknown are left out.
    """
    u = _field(response, "usage")
    tokens_in = _field(u, "prompt_tokens")
    if tokens_in is None:
        tokens_in = _field(u, "input_tokens")
        if tokens_in is not None:
            for extra in ("cache_creation_input_tokens", "cache_read_input_tokens"):
                tokens_in += _field(u, extra) or 0
    tokens_out = _field(u, "completion_tokens")
    if tokens_out is None:
        tokens_out = _field(u, "output_tokens")
    tags = {"ai_model": _field(response, "model"), "ai_tokens_in": tokens_in,
            "ai_tokens_out": tokens_out}
    return {k: v for k, v in tags.items() if v is not None}


def _literal(value):
    """A SQL string literal (standard_conforming_strings): ' doubled; NUL refused."""
    value = str(value)
    if "\0" in value:
        raise ValueError("a subject or model cannot contain a NUL byte")
    return "'" + value.replace("'", "''") + "'"


@contextlib.contextmanager
def attribute(conn, user, model=None):
    """Inside the block, every statement of conn is charged to user (and model).

    Sends SET sluice.user (and sluice.model), which pgsluice answers itself
    and keeps for this client under any pool mode; on leaving the block the
    values the connection had before are put back. Needs pgsluice: on a
    direct PostgreSQL connection SET sluice.user is a syntax error.
    """
    def current(name):
        return conn.execute(f"SHOW sluice.{name}").fetchone()[0] or ""

    before = {"user": current("user"), "model": current("model")}
    wanted = {"user": user, "model": model}
    try:
        for name, value in wanted.items():
            if value is not None:
                conn.execute(f"SET sluice.{name} = {_literal(value)}")
        yield conn
    finally:
        for name, value in wanted.items():
            if value is None:
                continue
            if before[name]:
                conn.execute(f"SET sluice.{name} = {_literal(before[name])}")
            else:
                conn.execute(f"RESET sluice.{name}")


def retry_after(error):
    """Seconds a 53400 refusal asks to wait (its HINT "Retry after N s."), else None.

    None also for a limit of 0 or a budget that resets at a date: waiting a
    little would not help. error is a psycopg 3 or psycopg2 error, or SQLAlchemy's
    DBAPIError around one.
    """
    error = getattr(error, "orig", None) or error     # SQLAlchemy's DBAPIError wraps the driver's
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)   # psycopg 3 / psycopg2
    if code != RATE_LIMITED:
        return None
    diag = getattr(error, "diag", None)
    m = _RETRY_AFTER.search(getattr(diag, "message_hint", None) or "")
    return float(m.group(1)) if m else None


def budget_status(conn, subject, model=None):
    """The budgets in force for subject (and model; None: the subject over all models), from
    sluice.budget_status in ai_database: a list of dicts with dimension ("tokens_per_day",
    "cost_cents_per_month"), limit, used, reserved, remaining and resets_at. conn must reach
    ai_database (directly or through pgsluice)."""
    cur = conn.execute(
        "SELECT dimension, \"limit\", used, reserved, remaining, resets_at FROM sluice.budget_status"
        " WHERE subject = %s AND model IS NOT DISTINCT FROM %s ORDER BY dimension",
        (subject, model))
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def execute(conn, sql, params=None, *, attempts=3, max_wait=60.0, sleep=time.sleep, **tags):
    """conn.execute(tag(sql, params, **tags), params), retried on a rate-limit refusal.

    A 53400 with a retry time up to max_wait seconds is retried after that
    time, up to attempts tries in all; any other error, or the last refusal,
    is raised. In a transaction, let the error leave the transaction block
    and retry the whole block instead. Returns the cursor.
    """
    query = tag(sql, params, **tags)
    for attempt in range(1, attempts + 1):
        try:
            return conn.execute(query, params)
        except Exception as e:       # psycopg.Error: this module does not import psycopg
            wait = retry_after(e)
            if wait is None or wait > max_wait or attempt == attempts:
                raise
            sleep(wait)
