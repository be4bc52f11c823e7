"""A stream opened after the shutdown signal ends at once, like the streams open at
the signal: between the signal and the listening socket closing, a reconnecting
client must not get a stream that lives until the shutdown deadline cuts it."""

from __future__ import annotations

import asyncio

import httpx

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.state import memory_state
from herald.journal.positions import Target
from herald.journal.runtime.settings import Settings

SECRET = "s" * 40


async def test_a_stream_opened_while_closing_ends_at_once_without_events() -> None:
    settings = Settings(jwt_secret=SECRET, redis_url="memory://")  # type: ignore[arg-type]
    auth = Authenticator(settings)
    state = memory_state(settings, auth)
    app = create_app(settings, state=state)
    await state.journal.publish(Target.user("ann"), "demo.seq", {"n": 1})
    headers = {"Authorization": f"Bearer {auth.issue('ann', (), 60)}", "Last-Event-ID": "0-0"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://herald") as http:
        state.close_streams()
        # The in-process transport returns once the response is complete: a stream
        # that did not end would hold this request until the deadline.
        async with asyncio.timeout(5):
            r = await http.get("/api/events", headers=headers)
    assert r.status_code == 200, r.text
    assert r.text.startswith("retry: ")
    assert "data:" not in r.text, r.text
    assert state.open_streams == 0
