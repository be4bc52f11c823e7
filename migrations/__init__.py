"""Alembic migrations, driven from code: ``upgrade(url)`` and head/current revisions.

Kept as a package so the installed ``herald`` command finds its scripts without an
alembic.ini in the working directory.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

__all__ = ["config", "current_revision", "head_revision", "upgrade"]

_HERE = Path(__file__).resolve().parent


def config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``.  Synchronous: call it outside an event loop."""
    command.upgrade(config(database_url), revision)


def head_revision() -> str:
    head = ScriptDirectory.from_config(config("postgresql+psycopg://")).get_current_head()
    assert head is not None, "migrations/versions has no revision"
    return head


def current_revision(database_url: str) -> str | None:
    """The revision the database is at (None: never migrated).  Synchronous."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
