"""What the gateway answers when something fails that is not the client's doing."""

from __future__ import annotations

import sqlalchemy as sa

from llmproxy.core import EdgeError

#: A bug. ``connection: close``: the server drops the connection after a 500, so the client is told.
INTERNAL_ERROR = EdgeError(
    500,
    "internal server error",
    type="server_error",
    code="internal_error",
    headers=[("connection", "close")],
)

#: PostgreSQL (or the SQLite file) cannot be reached, or did not answer within the configured timeouts.
DATABASE_UNAVAILABLE = EdgeError(
    503,
    "The database is unavailable; retry later.",
    type="service_unavailable",
    code="database_unavailable",
    headers=[("retry-after", "1")],
)

#: SQLAlchemy's errors for a database that is down, paused or too slow: connection refused or lost, a
#: connect or statement timeout (OperationalError), a closed connection (InterfaceError), no pooled
#: connection free in time (TimeoutError).
DATABASE_DOWN_ERRORS: tuple[type[Exception], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
)


def database_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, DATABASE_DOWN_ERRORS) or (
        isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
    )


def answer_for(exc: BaseException) -> EdgeError:
    """The answer to an exception nothing else handled: 503 for an unavailable database, else 500."""
    return DATABASE_UNAVAILABLE if database_unavailable(exc) else INTERNAL_ERROR
