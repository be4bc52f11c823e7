"""OAuth token sets in ``oauth_tokens``: one row per (user, server), sealed at rest.

``save_token_set`` upserts the row with the whole token set (tokens, client
registration, token endpoint: everything a later refresh needs) sealed by a
``SecretBox`` for that user and server; only ``expires_at`` and ``scope`` are
stored in clear, for listing and expiry checks.  ``load_token_set`` opens it and
raises ``SecretBoxError`` if the row was altered or the key changed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from herald.journal.oauth.secretbox import SecretBox
from herald.journal.runtime.db import run_in_transaction
from herald.journal.tables import oauth_tokens

__all__ = ["StoredTokenSet", "load_token_set", "save_token_set", "sealing_context"]


def sealing_context(user: str, server_url: str) -> bytes:
    """The associated data binding a row's ciphertext to its user and server (JSON, so
    no choice of separator can make two different pairs look alike)."""
    return orjson.dumps(["oauth_tokens", user, server_url])


@dataclass(frozen=True, slots=True)
class StoredTokenSet:
    user: str
    server_url: str
    token_set: dict[str, Any]
    expires_at: datetime | None
    scope: str | None
    updated_at: datetime


async def save_token_set(
    engine: AsyncEngine,
    box: SecretBox,
    *,
    user: str,
    server_url: str,
    token_set: dict[str, Any],
    expires_at: datetime | None,
    scope: str | None,
) -> None:
    """Insert or replace the user's token set for ``server_url`` (one transaction)."""
    if expires_at is not None and expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    ciphertext = box.seal(orjson.dumps(token_set), sealing_context(user, server_url))
    stmt = insert(oauth_tokens).values(
        id=uuid.uuid4(),
        user_id=user,
        server_url=server_url,
        token_ciphertext=ciphertext,
        expires_at=expires_at,
        scope=scope,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[oauth_tokens.c.user_id, oauth_tokens.c.server_url],
        set_={
            "token_ciphertext": stmt.excluded.token_ciphertext,
            "expires_at": stmt.excluded.expires_at,
            "scope": stmt.excluded.scope,
            "updated_at": func.now(),
        },
    )

    async def work(conn: AsyncConnection) -> None:
        await conn.execute(stmt)

    await run_in_transaction(engine, work)


async def load_token_set(
    engine: AsyncEngine, box: SecretBox, *, user: str, server_url: str
) -> StoredTokenSet | None:
    """The user's token set for ``server_url``, opened; None if there is none."""
    query = select(
        oauth_tokens.c.token_ciphertext,
        oauth_tokens.c.expires_at,
        oauth_tokens.c.scope,
        oauth_tokens.c.updated_at,
    ).where(oauth_tokens.c.user_id == user, oauth_tokens.c.server_url == server_url)

    async def work(conn: AsyncConnection) -> Any:
        return (await conn.execute(query)).first()

    row = await run_in_transaction(engine, work)
    if row is None:
        return None
    plaintext = box.open(bytes(row.token_ciphertext), sealing_context(user, server_url))
    return StoredTokenSet(
        user, server_url, orjson.loads(plaintext), row.expires_at, row.scope, row.updated_at
    )
