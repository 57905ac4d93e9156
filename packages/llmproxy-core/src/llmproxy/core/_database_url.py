"""Database URLs checked without SQLAlchemy (settings validate them in packages that have no SQL)."""

from __future__ import annotations

_BACKENDS = ("postgresql", "sqlite")


class DatabaseURLError(ValueError):
    """The database URL is malformed or names an unsupported backend."""


def database_backend(url: str) -> str:
    """``postgresql`` or ``sqlite`` for a SQLAlchemy URL (``postgresql+psycopg://…``, ``sqlite:///…``)."""
    if not isinstance(url, str) or "://" not in url:
        raise DatabaseURLError(f"not a database URL: {url!r}")
    backend = url.split("://", 1)[0].split("+", 1)[0].lower()
    if backend not in _BACKENDS:
        raise DatabaseURLError(
            f"unsupported database {backend!r} in {url!r}; use postgresql+psycopg:// or sqlite://"
        )
    return backend
