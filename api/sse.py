"""A lean ``text/event-stream`` ASGI response.

Why not sse-starlette (measured, see bench/README.md, fanout.py): it runs four
tasks per connection (stream, ping, shutdown poller, disconnect listener) and an
anyio cancel scope plus lock around every send; at 1,000 idle connections that
was ~47 KiB each and most of the per-event CPU.  Here a connection costs its
request task and one small task waiting on ``receive()``:

* keepalives come from the frame generator itself (it knows when it is idle);
* shutdown, token expiry, a full queue and a client disconnect all end the
  stream the same way: ``Closer.close()`` puts CLOSE into the subscription, the
  generator returns, and the chunked body is finished properly;
* a send that blocks longer than ``send_timeout_s`` (a client that stopped
  reading) ends the response.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from streams.hub import Subscription

__all__ = ["Closer", "EventStreamResponse"]


class Closer:
    """Ends one stream from outside its generator: disconnect, expiry, shutdown."""

    __slots__ = ("closed", "sub")

    def __init__(self) -> None:
        self.closed = False
        self.sub: Subscription | None = None

    def attach(self, sub: Subscription) -> None:
        self.sub = sub
        if self.closed:
            sub.close()

    def close(self, *_: object) -> None:
        self.closed = True
        if self.sub is not None:
            self.sub.close()


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class EventStreamResponse(StreamingResponse):
    def __init__(
        self,
        frames: Callable[[Closer], AsyncIterator[bytes]],
        *,
        headers: Mapping[str, str],
        send_timeout_s: float,
    ) -> None:
        self.closer = Closer()
        super().__init__(frames(self.closer), headers=headers, media_type="text/event-stream")
        self.send_timeout_s = send_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        closer = self.closer
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        watcher = asyncio.ensure_future(_until_disconnect(receive))
        watcher.add_done_callback(closer.close)
        body = self.body_iterator
        try:
            async for chunk in body:
                if closer.closed and watcher.done():
                    break  # the client is gone: uvicorn would drop the bytes anyway
                try:
                    async with asyncio.timeout(self.send_timeout_s):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except TimeoutError:
                    break  # the client stopped reading
            if not watcher.done():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.remove_done_callback(closer.close)
            watcher.cancel()
            closer.close()
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
