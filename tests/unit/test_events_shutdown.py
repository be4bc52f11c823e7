"""Streams requested while the process shuts down end at once, like the streams open
at the signal: between the signal and the listening socket closing, a reconnecting
client must not get a stream that lives until the shutdown deadline cuts it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.state import AppState, memory_state
from herald.journal.positions import Target
from herald.journal.runtime.settings import Settings

SECRET = "s" * 40


def _env(**settings: Any) -> tuple[AppState, httpx.AsyncClient, dict[str, str]]:
    config = Settings(jwt_secret=SECRET, redis_url="memory://", **settings)  # type: ignore[arg-type]
    auth = Authenticator(config)
    state = memory_state(config, auth)
    transport = httpx.ASGITransport(app=create_app(config, state=state))
    http = httpx.AsyncClient(transport=transport, base_url="http://herald")
    # From the first event: a replay, charged against the replay budget.
    headers = {"Authorization": f"Bearer {auth.issue('ann', (), 60)}", "Last-Event-ID": "0-0"}
    return state, http, headers


async def test_a_stream_requested_while_closing_ends_at_once_and_charges_nothing() -> None:
    state, http, headers = _env(replay_budget=1)
    await state.journal.publish(Target.user("ann"), "demo.seq", {"n": 1})
    state.close_streams()
    async with http:
        # The in-process transport returns once the response is complete: a stream
        # that did not end would hold this request until the deadline.
        async with asyncio.timeout(5):
            r = await http.get("/api/events", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text == f"retry: {state.settings.retry_ms}\n\n"
    # The one replay of the budget is still there.
    assert await state.budgets.charge_replay("ann") == 0.0
    assert state.open_streams == 0


async def test_a_stream_subscribing_just_after_the_close_ends_at_once_too() -> None:
    """The signal lands after the request was let in, before its subscription: the
    hub's close_all cannot reach a subscription not made yet."""
    state, http, headers = _env()
    await state.journal.publish(Target.user("ann"), "demo.seq", {"n": 1})
    hub = state.hub
    subscribe = hub.subscribe

    def signal_then_subscribe(*args: Any, **kwargs: Any) -> Any:
        state.close_streams()
        return subscribe(*args, **kwargs)

    hub.subscribe = signal_then_subscribe  # type: ignore[method-assign]
    async with http, asyncio.timeout(5):
        r = await http.get("/api/events", headers=headers)
    assert r.status_code == 200, r.text
    assert "data:" not in r.text, r.text
    assert state.open_streams == 0
