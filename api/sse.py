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

It is also the fast path's ``DirectWriter`` (``herald.streams.live``): the hub
writes a chunk with ``write_now``, which runs the server's ``send`` to completion
without a task when it completes at once, as uvicorn's does for a body chunk
unless the transport is paused.  If it does wait, the rest of that ``send`` runs
in a task, and ``ready`` is False until it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any, cast

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from herald.streams.hub import Subscription

__all__ = ["Closer", "Emit", "EventStreamResponse"]


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


Emit = Callable[[bytes], Awaitable[None]]


@functools.cache
def _encoded_headers(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    return StreamingResponse((), headers=dict(headers), media_type="text/event-stream").raw_headers


class _Gone(Exception):
    """The client went away or stopped reading: stop producing."""


class _Resumed:
    """Awaiting it continues a coroutine that was started outside a task and
    suspended on ``first`` (what it yielded): the task that awaits this drives it."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, None], first: Any) -> None:
        self.coro, self.first = coro, first

    def __await__(self) -> Generator[Any, Any, None]:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except BaseException as e:  # cancellation too: the coroutine sees it
                try:
                    value = coro.throw(e)
                except StopIteration:
                    return
            else:
                try:
                    value = coro.send(sent)
                except StopIteration:
                    return


async def _finish(resumed: _Resumed) -> None:
    await resumed


def _coroutine(awaitable: Awaitable[Any]) -> Coroutine[Any, Any, Any]:
    """``awaitable`` if it is a coroutine, else a coroutine that awaits it: uvicorn's and
    Herald's own ``send``/``receive`` return coroutines, some servers' (granian's)
    other awaitables, and both are driven here with ``.send``."""
    if hasattr(awaitable, "send"):
        return cast(Coroutine[Any, Any, Any], awaitable)
    return _awaiting(awaitable)


async def _awaiting(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class _Watch:
    """Runs the server's ``receive()`` until it returns (the client went away), then
    calls ``on_done``.  Driven by the callbacks of the futures it waits on, not by a
    task: a task per idle connection cost ~0.6 KiB (the task, and its entries in
    asyncio's weak set of all tasks)."""

    __slots__ = ("_coro", "_on_done", "_waiting", "done")

    def __init__(self, coro: Coroutine[Any, Any, Any], on_done: Callable[[], None]) -> None:
        self._coro, self._on_done = coro, on_done
        self._waiting: asyncio.Future[Any] | None = None
        self.done = False
        self._step(None)

    def _step(self, _: object) -> None:
        self._waiting = None
        try:
            waiting = self._coro.send(None)
        except BaseException:  # returned (the disconnect message) or failed: gone either way
            self.done = True
            self._on_done()
            return
        if waiting is None:  # a bare yield (sleep(0)): just run it again soon
            asyncio.get_running_loop().call_soon(self._step, None)
            return
        self._waiting = waiting
        waiting.add_done_callback(self._step)

    def cancel(self) -> None:
        if self.done:
            return
        self.done = True
        if self._waiting is not None:
            self._waiting.remove_done_callback(self._step)
            self._waiting = None
        self._coro.close()


def _chunked_wire(send: Send) -> Any:
    """The server's per-request state behind ``send`` if it is Herald's own
    (``herald.api.httpserver.Exchange``) or uvicorn's httptools/h11 cycle, streaming
    a chunked body, else None (then ``write_now`` always goes through
    ``send``).  Checked by duck typing: any other server just takes the general path."""
    cycle = getattr(send, "__self__", None)
    flow = getattr(cycle, "flow", None)
    if (
        getattr(cycle, "chunked_encoding", None) is True
        and getattr(cycle, "response_started", False) is True
        and getattr(cycle, "response_complete", True) is False
        and hasattr(cycle, "transport")
        and hasattr(cycle, "disconnected")
        and isinstance(getattr(flow, "write_paused", None), bool)
    ):
        return cycle
    return None


class _ServerWatch:
    """A ``_Watch`` for a server that says itself when the client is gone (Herald's
    own HTTP protocol, ``herald.api.httpserver.Exchange.when_gone``): no pending
    ``receive()`` coroutine and future per idle stream."""

    __slots__ = ("_exchange",)

    def __init__(self, exchange: Any, on_done: Callable[[], None]) -> None:
        self._exchange = exchange
        exchange.when_gone(on_done)

    @property
    def done(self) -> bool:
        return bool(self._exchange.gone)

    def cancel(self) -> None:
        self._exchange.when_gone(None)


class _NoWatch:
    """In place of a ``_Watch`` when the client was gone before the stream started."""

    __slots__ = ()
    done = True

    def cancel(self) -> None:
        return None


_ALREADY_GONE = _NoWatch()


class EventStreamResponse:
    """Runs ``produce(closer, emit)``; each ``await emit(chunk)`` writes one chunk.

    Push rather than an async generator: a generator held open per connection is
    one more object graph per idle client. Not a Starlette ``Response`` subclass,
    whose per-instance dict would cost more than these slots.
    """

    __slots__ = (
        "_pending",
        "_send",
        "_watcher",
        "_wire",
        "args",
        "closer",
        "produce",
        "raw_headers",
        "send_timeout_s",
    )

    def __init__(
        self,
        produce: Callable[..., Awaitable[None]],
        args: tuple[Any, ...],
        *,
        headers: Mapping[str, str],
        send_timeout_s: float,
    ) -> None:
        """``produce(*args, closer, emit)`` runs the stream.  Arguments, not a closure:
        a closure's cells cost more than a tuple, once per open stream."""
        # Not StreamingResponse.__init__: every stream has the same headers, so they
        # are encoded once and shared (copied only if a cookie is added).
        self.raw_headers = _encoded_headers(tuple(headers.items()))
        self.produce = produce
        self.args = args
        self.closer = Closer()
        self.send_timeout_s = send_timeout_s
        self._send: Send | None = None
        self._watcher: _Watch | _ServerWatch | _NoWatch | None = None
        self._pending: asyncio.Future[None] | None = None  # a write_now still in flight
        self._wire: Any = None  # the server's connection state, when write_now may bypass send

    def set_cookie(self, *args: Any, **kwargs: Any) -> None:
        """As ``Response.set_cookie``; the shared header list is copied first."""
        formatter = Response()
        formatter.set_cookie(*args, **kwargs)
        self.raw_headers = [*self.raw_headers, formatter.raw_headers[-1]]

    async def emit(self, chunk: bytes) -> None:
        """Write one chunk; raises ``_Gone`` when the client left or stopped reading."""
        assert self._send is not None and self._watcher is not None
        if self._watcher.done:
            raise _Gone  # uvicorn would drop the bytes anyway
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await self._drain()
                await self._send({"type": "http.response.body", "body": chunk, "more_body": True})
        except TimeoutError:
            raise _Gone from None  # the client stopped reading

    async def _drain(self) -> None:
        """Wait for a ``write_now`` still in flight (its bytes come first)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                await pending
            except Exception as e:
                raise _Gone from e

    def ready(self) -> bool:
        watcher, pending = self._watcher, self._pending
        return (
            watcher is not None
            and not watcher.done
            and (pending is None or (pending.done() and not pending.exception()))
        )

    def write_now(self, chunk: bytes) -> None:
        """Write one chunk without a task switch (call only when ``ready``)."""
        assert self._send is not None
        self._pending = None
        wire = self._wire
        if wire is not None and not wire.flow.write_paused and not wire.disconnected:
            # The server's own send would do exactly this for a body chunk of a
            # chunked response, after its checks; straight to the transport it costs
            # a third.
            wire.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            return
        coro = _coroutine(
            self._send({"type": "http.response.body", "body": chunk, "more_body": True})
        )
        try:
            first = coro.send(None)
        except StopIteration:
            return  # written: the usual case
        except Exception:
            coro.close()
            self.closer.close()  # the stream ends; the client resumes from its cursor
            return
        # The transport is paused: the send finishes when it drains.
        self._pending = asyncio.ensure_future(_finish(_Resumed(coro, first)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        closer = self.closer
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        # A GET has nothing after its (empty) body but the disconnect, so after
        # taking the body (one message, or several with ``more_body``) the watcher is
        # receive() itself, or the server's own signal where it has one.
        first = await receive()
        while first["type"] == "http.request" and first.get("more_body", False):
            first = await receive()
        watcher: _Watch | _ServerWatch | _NoWatch = _ALREADY_GONE
        exchange = getattr(receive, "__self__", None)
        if first["type"] == "http.disconnect":
            closer.close()
        elif callable(getattr(exchange, "when_gone", None)):
            watcher = _ServerWatch(exchange, closer.close)
        else:
            watcher = _Watch(_coroutine(receive()), closer.close)
        self._send, self._watcher = send, watcher
        self._wire = _chunked_wire(send)
        try:
            with contextlib.suppress(_Gone):
                await self.produce(*self.args, closer, self.emit)
                if not watcher.done:
                    async with asyncio.timeout(self.send_timeout_s):
                        await self._drain()
            if not watcher.done:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            closer.close()
            if self._pending is not None:
                self._pending.cancel()
            self._send = self._watcher = self._pending = self._wire = None
