# SPDX-License-Identifier: PostgreSQL
"""sluice.sqlalchemy - pgsluice's tags on every statement SQLAlchemy sends.

    import sluice, sluice.sqlalchemy

    engine = create_engine("postgresql+psycopg://app@localhost:6432/app")   # or +psycopg2
    with Session(engine) as session:
        with sluice.sqlalchemy.attribute(session, user, "gpt-4o"):
            session.execute(select(Answer).where(Answer.k == key))      # ... /*ai_model='gpt-4o',ai_user='...'*/
        with sluice.sqlalchemy.attribute(session, user, **sluice.usage(response)):
            session.execute(insert(Answer).values(k=key, text=text))     # usage recorded with the row
        rows = sluice.sqlalchemy.execute(session, text("SELECT ..."), attempts=3).all()

attribute() hooks the engine once (a before_cursor_execute listener) and, for
the block, sets the tags in a context variable: every statement any hooked
engine sends in that block (this thread or this asyncio task) ends with their
sqlcommenter comment, which pgsluice reads. Outside a block nothing is added.
Works under SQLAlchemy 1.4 and 2 with psycopg 3 (postgresql+psycopg, SQLAlchemy 2
only) and psycopg2 (postgresql+psycopg2); the statements are tagged, not SET, so
it works in any pool mode and does not need a connection of its own.
"""

import contextlib
import contextvars
import time

from sqlalchemy import event

from sluice import comment, retry_after

__all__ = ["instrument", "attribute", "execute", "current_tags"]

_TAGS = contextvars.ContextVar("sluice_sqlalchemy_tags", default=None)


def current_tags():
    """The tags of the innermost attribute() block (a new dict), {} outside any."""
    return dict(_TAGS.get() or {})


def _engine(bind):
    """The Engine behind an Engine, Connection, Session or scoped_session."""
    if hasattr(bind, "get_bind") and not hasattr(bind, "dialect"):   # Session, scoped_session
        bind = bind.get_bind()
    return getattr(bind, "engine", bind)                             # Connection -> Engine


def _append_comment(conn, cursor, statement, parameters, context, executemany):
    """before_cursor_execute (retval=True): statement with the current tags' comment at its end.

    The comment is the statement's last one, where pgsluice reads it. Drivers
    with the format/pyformat paramstyle (psycopg, psycopg2) read "%" as a
    placeholder whenever parameters are passed, so the comment's "%" are doubled then.
    """
    text = comment(**(_TAGS.get() or {}))
    if not text:
        return statement, parameters
    no_parameters = context is not None and getattr(context, "no_parameters", False)
    if conn.dialect.paramstyle in ("format", "pyformat") and parameters is not None and not no_parameters:
        text = text.replace("%", "%%")
    return f"{statement.rstrip().rstrip(';')} {text}", parameters


def instrument(bind):
    """Hook bind's engine (Engine, Connection or Session) so attribute() blocks tag its statements.

    Idempotent; returns the engine. attribute() calls it; call it yourself to
    hook an engine once at start-up and then use attribute(None, ...).
    """
    engine = _engine(bind)
    if not event.contains(engine, "before_cursor_execute", _append_comment):
        event.listen(engine, "before_cursor_execute", _append_comment, retval=True)
    return engine


@contextlib.contextmanager
def attribute(bind, user, model=None, **tags):
    """Inside the block, statements are tagged ai_user=user (and ai_model=model, and tags).

    bind: an Engine, Connection or Session to hook (see instrument()), or None
    when the engine is hooked already. tags are further sqlcommenter tags, e.g.
    **sluice.usage(response) (its ai_model counts unless model is given). Blocks
    nest: an inner block's tags add to and override the outer's. Yields the tags.
    """
    if bind is not None:
        instrument(bind)
    merged = {**(_TAGS.get() or {}), **tags, "ai_user": user}
    if model is not None:
        merged["ai_model"] = model
    token = _TAGS.set(merged)
    try:
        yield dict(merged)
    finally:
        _TAGS.reset(token)


def execute(bind, statement, params=None, *, attempts=3, max_wait=60.0, sleep=time.sleep):
    """bind.execute(statement, params), retried after a rate-limit refusal (53400) as its HINT says.

    bind is a Session or Connection (SQLAlchemy 2 style, or 1.4's legacy one). Retries only a statement that opens its
    own transaction: when bind is already in a transaction, earlier work in it
    would be lost, so the refusal is raised (retry the whole transaction
    instead). Before a retry the failed transaction is rolled back. A refusal
    whose retry time is unknown or above max_wait seconds, the last of attempts
    tries, and any other error are raised. Returns the Result.
    """
    fresh = not bind.in_transaction()
    for attempt in range(1, attempts + 1):
        try:
            return bind.execute(statement, params)
        except Exception as e:      # sqlalchemy.exc.DBAPIError around the driver's error
            wait = retry_after(e)
            if wait is None or wait > max_wait or attempt == attempts or not fresh:
                raise
            rollback = getattr(bind, "rollback", None)   # SQLAlchemy 1.4's legacy Connection has none
            if rollback is not None:
                rollback()
            sleep(wait)
