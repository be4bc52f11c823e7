"""A small SSE client for tests that drive a real ``herald serve`` over HTTP.

It parses the wire format the way a browser's EventSource does (``id:``, ``data:``,
``event:``, ``retry:`` fields, ``:`` comments, a blank line dispatches), but leaves
reconnecting to the test, so a test decides exactly when a connection drops and
which ``Last-Event-ID`` it resumes from.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

__all__ = ["SseEvent", "SseRefused", "SseStream", "open_sse"]


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: its ``id:`` (None if the server sent none) and data."""

    id: str | None
    data: str
    event: str = "message"

    def json(self) -> dict[str, Any]:
        value = orjson.loads(self.data)
        assert isinstance(value, dict), self.data
        return value


class SseRefused(Exception):
    """The server answered with a status other than 200: the stream never started."""

    def __init__(self, status: int, body: str, retry_after: str | None) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status
        self.body = body
        self.retry_after = retry_after


@dataclass(slots=True)
class SseStream:
    """The events of one open response.  Iterating ends when the server ends it."""

    response: httpx.Response
    retry_ms: int | None = None
    comments: int = 0
    _lines: AsyncIterator[str] = field(init=False)
    _events: AsyncGenerator[SseEvent, None] = field(init=False)

    def __post_init__(self) -> None:
        # httpx's line decoder handles \n, \r\n and \r, also across chunk boundaries.
        self._lines = self.response.aiter_lines()
        # One parser per response, so its state survives between ``next_event`` calls.
        self._events = self._parse()

    def __aiter__(self) -> AsyncIterator[SseEvent]:
        return self._events

    async def next_event(self) -> SseEvent:
        """The next event; ``EOFError`` if the server ended the stream first."""
        try:
            return await anext(self._events)
        except StopAsyncIteration:
            raise EOFError("the server ended the stream") from None

    async def _parse(self) -> AsyncGenerator[SseEvent, None]:
        data: list[str] = []
        event_id: str | None = None
        event_type = "message"
        async for line in self._lines:
            if line == "":
                # Per the spec an event with no data is not dispatched (``retry:`` alone).
                if data:
                    yield SseEvent(event_id, "\n".join(data), event_type)
                data, event_id, event_type = [], None, "message"
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
            elif name == "event":
                event_type = value
            elif name == "retry" and value.isdigit():
                self.retry_ms = int(value)

    async def aclose(self) -> None:
        # Close the generators now rather than leaving them to the garbage collector.
        await self._events.aclose()
        if isinstance(self._lines, AsyncGenerator):
            await self._lines.aclose()


@contextlib.asynccontextmanager
async def open_sse(
    client: httpx.AsyncClient,
    url: str,
    token: str,
    *,
    last_event_id: str | None = None,
    params: Mapping[str, str] | None = None,
) -> AsyncIterator[SseStream]:
    """``GET url`` as an EventSource would; raises ``SseRefused`` on a non-200.

    Leaving the block closes the connection even mid-stream: httpx does not return
    a connection whose body was not read to the pool, so this is a real drop.
    """
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with client.stream("GET", url, headers=headers, params=params) as response:
        if response.status_code != 200:
            body = (await response.aread()).decode(errors="replace")
            raise SseRefused(response.status_code, body, response.headers.get("retry-after"))
        stream = SseStream(response)
        try:
            yield stream
        finally:
            await stream.aclose()
