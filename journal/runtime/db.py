"""The database engine and the one retry rule for database work (DESIGN §7).

Every connection is pre-pinged when it leaves the pool, so a connection the
server closed while idle is replaced before it is used.  A failure *during* a
unit of work (``OperationalError``: the server restarted, a connection was
terminated) is retried exactly once, on a fresh connection, without disposing
the pool: the broken connection is invalidated alone.  An ``IntegrityError`` is
an answer, not a fault, and is never retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from psycopg.errors import QueryCanceled
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from herald.journal.runtime.settings import Settings

__all__ = ["DatabaseUnavailable", "make_engine", "run_in_transaction"]

T = TypeVar("T")


class DatabaseUnavailable(Exception):
    """The database could not be reached, even after one retry on a fresh connection."""

    code = "database_unavailable"


def make_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    """The process's one async engine (psycopg 3), sized and timed from ``HERALD_DB_*``."""
    url = url or settings.database_url
    options = f"-c statement_timeout={settings.db_statement_timeout_ms} -c TimeZone=UTC"
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": max(1, round(settings.db_connect_timeout_s)),
            "options": options,
        },
    )
    event.listen(engine.sync_engine, "handle_error", _invalidate_alone)
    return engine


def _invalidate_alone(context: ExceptionContext) -> None:
    # SQLAlchemy's default on a disconnect is to recycle *every* pooled connection
    # (all of that "generation"); one terminated backend would then cost every
    # healthy connection a reconnect.  Pre-ping already catches the dead ones.
    context.invalidate_pool_on_disconnect = False


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, IntegrityError):
        return False
    if isinstance(exc.orig if isinstance(exc, DBAPIError) else None, QueryCanceled):
        return False  # a statement timeout: running it again would only double the wait
    if isinstance(exc, OperationalError):
        return True
    # psycopg reports a connection lost mid-statement as InterfaceError on some paths.
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


async def run_in_transaction(
    engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]]
) -> T:
    """Run ``work`` in one transaction; on a connection fault retry it once on a
    fresh connection.  ``work`` must therefore be safe to run twice (it is: a
    transaction that failed was rolled back).  Raises ``DatabaseUnavailable``
    when the retry fails too, and lets every other error through unchanged."""
    for attempt in (1, 2):
        try:
            async with engine.begin() as conn:
                return await work(conn)
        except PoolTimeout as e:
            # Every connection is busy: a retry would wait as long again.
            raise DatabaseUnavailable(
                f"no free database connection within {engine.pool.timeout()} s"  # type: ignore[attr-defined]
            ) from e
        except (OperationalError, DBAPIError, OSError) as e:
            if isinstance(e, DBAPIError) and not _retryable(e):
                raise
            if attempt == 2:
                raise DatabaseUnavailable(f"the database is unavailable: {_reason(e)}") from e
    raise AssertionError("unreachable")


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
