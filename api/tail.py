"""``herald tail``: follow a user's stream (and topics), or one chat message, from
the terminal.

Prints each envelope as one JSON line on stdout, announces gaps and reconnects on
stderr, and reconnects by itself from the last id it printed — the same contract a
browser's EventSource gets. Following a message, it stops after the message's
terminal envelope: nothing can follow it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TextIO

import httpx
import orjson

__all__ = ["MESSAGE_TERMINAL_TYPES", "SseEvent", "Tail", "parse_sse"]

_BACKOFF_MAX_S = 10.0
# A message stream's terminal envelopes: ``message.`` + ``messages.store.TERMINAL_TYPES``
# (a test keeps them in step), spelled out so the command does not load SQLAlchemy.
MESSAGE_TERMINAL_TYPES = frozenset({"message.end", "message.error"})


@dataclass(slots=True)
class SseEvent:
    id: str | None = None
    data: list[str] = field(default_factory=list)


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str | None, str]]:
    """SSE lines to ``(kind, id, value)``: ("message", id, data) or ("retry", None, ms)."""
    event = SseEvent()
    async for line in lines:
        if line == "":
            if event.data:
                yield "message", event.id, "\n".join(event.data)
            event = SseEvent()
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            event.data.append(value)
        elif name == "id":
            event.id = value
        elif name == "retry" and value.isdigit():
            yield "retry", None, value


class Fatal(Exception):
    """The server refused for a reason retrying will not fix (401, 403, 400)."""


@dataclass
class Tail:
    url: str
    token: str
    topics: list[str]
    cursor: str | None = None
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    max_events: int | None = None  # stop after this many (tests, scripts)
    until_terminal: bool = False  # stop after a message's `end` or `error`
    retry_s: float = 3.0
    printed: int = 0

    async def run(self) -> int:
        backoff = self.retry_s
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http:
            while True:
                try:
                    if await self._once(http):
                        return 0
                    backoff = self.retry_s  # a stream that ran resets the backoff
                except Fatal as e:
                    print(f"herald tail: {e}", file=self.err)
                    return 1
                except (httpx.TransportError, httpx.RemoteProtocolError) as e:
                    print(f"herald tail: disconnected ({type(e).__name__})", file=self.err)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
                print(
                    f"herald tail: reconnecting in {backoff:.1f}s from {self.cursor or 'now'}",
                    file=self.err,
                )
                await asyncio.sleep(backoff)

    async def _once(self, http: httpx.AsyncClient) -> bool:
        """One connection; True when done (max_events reached)."""
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        if self.cursor:
            headers["Last-Event-ID"] = self.cursor
        params = httpx.QueryParams([("topic", t) for t in self.topics])
        async with http.stream("GET", self.url, headers=headers, params=params) as r:
            if r.status_code == 429:
                wait = float(r.headers.get("retry-after", self.retry_s))
                print(f"herald tail: rate limited, waiting {wait:.0f}s", file=self.err)
                await asyncio.sleep(wait)
                return False
            if r.status_code == 204:
                return True  # the server says nothing more will come (an ended message)
            if r.status_code != 200:
                await r.aread()
                raise Fatal(f"HTTP {r.status_code}: {r.text}")
            # Says when it is safe to publish and watch: a stream without a cursor starts live.
            resuming = f", resuming after {self.cursor}" if self.cursor else ""
            print(f"herald tail: connected to {self.url}{resuming}", file=self.err, flush=True)
            async for kind, id_, value in parse_sse(r.aiter_lines()):
                if kind == "retry":
                    self.retry_s = int(value) / 1000
                    continue
                type_ = self._print(value)
                if id_ is not None:
                    self.cursor = id_
                self.printed += 1
                if self.max_events is not None and self.printed >= self.max_events:
                    return True
                if self.until_terminal and type_ in MESSAGE_TERMINAL_TYPES:
                    return True
        return False

    def _print(self, data: str) -> str | None:
        """Print one frame's data; returns its envelope type, if it has one."""
        print(data, file=self.out, flush=True)
        try:
            envelope = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(envelope, dict):
            return None
        type_ = envelope.get("type")
        if type_ == "herald.gap":
            gap = envelope.get("data", {})
            print(
                f"herald tail: GAP in {gap.get('stream')} after {gap.get('after')}: "
                f"{gap.get('reason')} (first available: {gap.get('first_available')})",
                file=self.err,
                flush=True,
            )
        return type_ if isinstance(type_, str) else None
