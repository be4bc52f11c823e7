"""The database engine: async SQLAlchemy on psycopg 3, pre-ping on checkout."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["make_engine"]


def make_engine(database_url: str) -> AsyncEngine:
    return create_async_engine(database_url, pool_pre_ping=True)
