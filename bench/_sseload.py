"""A lean Server-Sent Events load client: thousands of concurrent subscribers in one process.

Used by ``bench/fanout.py``.  Each subscriber is a bare ``asyncio.Protocol`` on a raw TCP
connection that sends one HTTP/1.1 ``GET`` and then parses the response as it arrives:
status line and headers, optional chunked transfer coding, then the event stream.  There is
no task, no ``StreamReader`` and no HTTP library per connection, because on a 2-core machine
this client shares the CPU with the server it measures and must hold 10,000 connections and
take in ~100,000 events/s with as little Python per byte as possible.

Every event's ``data:`` is expected to be a JSON object with a ``data`` member holding
``{"p": <phase>, "seq": <int>, "t": <publisher time.time_ns()>}`` (a CloudEvents envelope
as Herald sends it; the Nchan publisher sends the same shape).  The client counts events of
the current phase per connection and records publish-to-receive latency for each.  Events of
another phase (stragglers of the previous one) and repeated sequence numbers are counted
apart, so completeness is never inflated.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

__all__ = [
    "ConnectReport",
    "HttpStatusError",
    "LoadSnapshot",
    "SseLoad",
    "describe_errors",
    "loop_factory",
    "percentile",
    "raise_nofile",
]

# A response head larger than this is not an SSE endpoint we understand.
_MAX_HEAD = 64 * 1024


def raise_nofile(want: int = 65536) -> int:
    """Raise RLIMIT_NOFILE towards ``want`` and return the soft limit now in force.

    The hard limit can only go up with privileges (root here); children started afterwards
    inherit both limits, which matters for nginx workers that drop root before they could
    raise it themselves.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """uvloop's loop factory when installed (a much cheaper loop per socket), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None, "asyncio"
    version = getattr(uvloop, "__version__", "?")
    return uvloop.new_event_loop, f"uvloop {version}"


def percentile(sorted_values: array[float] | list[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    n = len(sorted_values)
    if n == 0:
        return None
    k = max(0, min(n - 1, math.ceil(p / 100.0 * n) - 1))
    return float(sorted_values[k])


class HttpStatusError(Exception):
    """The server answered the subscribe request with something other than 200."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status = status


class _Subscriber(asyncio.Protocol):
    """One SSE connection.  All state is plain attributes: read by ``SseLoad`` for totals."""

    __slots__ = (
        "_chunk_left",
        "_head",
        "_raw",
        "_sse",
        "chunked",
        "closed",
        "connected",
        "dups",
        "events",
        "gaps",
        "last_seq",
        "load",
        "other",
        "pings",
        "ready",
        "request",
        "stray",
        "transport",
    )

    def __init__(self, load: SseLoad, request: bytes, ready: asyncio.Future[None]) -> None:
        self.load = load
        self.request = request
        self.ready = ready
        self.transport: asyncio.Transport | None = None
        self.connected = False
        self.closed = False
        self.chunked = False
        self._head = b""
        self._raw = b""  # undecoded chunked-coding bytes
        self._chunk_left = 0  # >0: payload bytes left; 0: expect size line; -2: expect CRLF
        self._sse = b""  # decoded stream bytes not yet ending in a blank line
        self.events = 0
        self.dups = 0
        self.stray = 0
        self.other = 0
        self.pings = 0
        self.last_seq = -1
        self.gaps: set[int] = set()  # sequence numbers skipped over, not yet received

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.load._closed(self)
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed before the response head"))
        elif self.connected:
            self.load.lost += 1

    def data_received(self, data: bytes) -> None:
        if not self.connected:
            rest = self._read_head(data)
            if rest is None:
                return
            data = rest
        if self.chunked:
            data = self._dechunk(data)
        if data:
            self._feed(data)

    # -- parsing ------------------------------------------------------------------------

    def _read_head(self, data: bytes) -> bytes | None:
        """Consume the response head; return the body bytes after it, or None if incomplete."""
        head = self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            self._head = head
            if len(head) > _MAX_HEAD:
                self._fail(ConnectionError("response head too large"))
            return None
        self._head = b""
        lines = head[:end].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        try:
            status = int(parts[1])
        except (IndexError, ValueError):
            self._fail(ConnectionError(f"bad status line {lines[0][:80]!r}"))
            return None
        if status != 200:
            reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
            self._fail(HttpStatusError(status, reason))
            return None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunked = True
        self.connected = True
        if not self.ready.done():
            self.ready.set_result(None)
        return head[end + 4 :]

    def _fail(self, exc: Exception) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def _dechunk(self, data: bytes) -> bytes:
        """Decode as much chunked transfer coding as ``data`` completes; keep the rest."""
        buf = self._raw + data if self._raw else data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while pos < n:
            left = self._chunk_left
            if left > 0:
                take = min(left, n - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._chunk_left = left - take if take < left else -2
            elif left == -2:
                if n - pos < 2:
                    break
                pos += 2
                self._chunk_left = 0
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(buf[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                if size == 0:
                    # End of body: the server closed the stream; trailers are irrelevant.
                    pos = n
                    break
                self._chunk_left = size
        self._raw = buf[pos:]
        return out[0] if len(out) == 1 else b"".join(out)

    def _feed(self, data: bytes) -> None:
        buf = self._sse + data if self._sse else data
        # sse-starlette ends lines with CRLF, nginx with LF; normalise once per read rather
        # than per line.  A CR at the very end stays and meets its LF in the next read.
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        if b"\n\n" not in buf:
            self._sse = buf
            return
        blocks = buf.split(b"\n\n")
        self._sse = blocks.pop()
        # One clock read per socket read: every event in it arrived at the same moment.
        now = time.time_ns()
        load = self.load
        for block in blocks:
            payload: bytes | None = None
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    value = line[6:] if line[5:6] == b" " else line[5:]
                    payload = value if payload is None else payload + b"\n" + value
                elif line.startswith(b":"):
                    self.pings += 1
            if payload is not None:
                self._event(payload, now, load)

    def _event(self, payload: bytes, now: int, load: SseLoad) -> None:
        try:
            data = orjson.loads(payload)["data"]
            phase = data["p"]
            seq = data["seq"]
            t = data["t"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.other += 1
            return
        if phase != load.phase:
            self.stray += 1
            return
        last = self.last_seq
        if seq > last:
            if seq > last + 1:
                # Skipped sequence numbers may still come: several publishes in flight can
                # reach the server in another order than their numbers.
                self.gaps.update(range(last + 1, seq))
            self.last_seq = seq
        elif seq in self.gaps:
            self.gaps.discard(seq)
        else:
            self.dups += 1
            return
        self.events += 1
        load.latencies_ms.append((now - t) * 1e-6)
        load.last_event_ns = now


@dataclass(slots=True)
class ConnectReport:
    requested: int
    connected: int
    seconds: float
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class LoadSnapshot:
    open: int  # connections still open
    lost: int  # connections the server (or the network) closed since the last reset
    received: int  # events of the current phase, counted once per connection and sequence
    dups: int
    stray: int
    other: int
    pings: int
    starved: int  # open connections that received no event of the phase at all
    min_events: int  # fewest events any open connection received
    latencies_ms: array[float]
    last_event_ns: int


class SseLoad:
    """A set of SSE subscribers to one server, connected in paced batches."""

    def __init__(self, host: str, port: int, request_for: Callable[[int], bytes]) -> None:
        self.host = host
        self.port = port
        self.request_for = request_for
        self.subscribers: list[_Subscriber] = []
        self.phase = 0
        self.lost = 0
        self.latencies_ms: array[float] = array("d")
        self.last_event_ns = 0  # time.time_ns() when the latest counted event arrived
        self._next_index = 0
        # Subscribers close() still waits for, and the event set when the last one goes.
        self._closing: set[_Subscriber] = set()
        self._all_closed = asyncio.Event()

    def _closed(self, sub: _Subscriber) -> None:
        if sub in self._closing:
            self._closing.discard(sub)
            if not self._closing:
                self._all_closed.set()

    async def connect(
        self,
        n: int,
        *,
        batch: int = 500,
        timeout_s: float = 15.0,
        deadline_s: float = 120.0,
    ) -> ConnectReport:
        """Open ``n`` more subscribers, ``batch`` at a time, each until its response head.

        Pacing keeps the listen backlog and the server's accept loop from overflowing (a
        burst of 10,000 SYNs costs retransmits that would look like server latency).  Each
        connection has its own timeout and the whole ramp a deadline, so a dead server
        costs seconds, not minutes.
        """
        loop = asyncio.get_running_loop()
        errors: Counter[str] = Counter()
        started = time.monotonic()
        deadline = started + deadline_s
        connected = 0
        done = 0
        while done < n:
            if time.monotonic() >= deadline:
                errors["ramp deadline"] += n - done
                break
            size = min(batch, n - done)
            results = await asyncio.gather(
                *(self._open(loop, timeout_s) for _ in range(size)), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    errors[_error_key(result)] += 1
                else:
                    connected += 1
            done += size
        return ConnectReport(n, connected, time.monotonic() - started, dict(errors))

    async def _open(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        index = self._next_index
        self._next_index += 1
        ready: asyncio.Future[None] = loop.create_future()
        sub = _Subscriber(self, self.request_for(index), ready)
        try:
            async with asyncio.timeout(timeout_s):
                await loop.create_connection(lambda: sub, self.host, self.port)
                await ready
        except BaseException:
            if sub.transport is not None:
                sub.transport.abort()
            # Retrieve a late exception so asyncio does not log it as never retrieved.
            if ready.done() and not ready.cancelled():
                ready.exception()
            raise
        self.subscribers.append(sub)

    def reset(self, phase: int) -> None:
        """Start counting events of ``phase`` only, from zero."""
        self.phase = phase
        self.lost = 0
        self.latencies_ms = array("d")
        self.last_event_ns = 0
        for sub in self.subscribers:
            sub.events = sub.dups = sub.stray = sub.other = sub.pings = 0
            sub.last_seq = -1
            sub.gaps = set()

    def snapshot(self) -> LoadSnapshot:
        subs = self.subscribers
        open_counts = [s.events for s in subs if not s.closed]
        return LoadSnapshot(
            open=sum(1 for s in subs if not s.closed),
            lost=self.lost,
            received=sum(s.events for s in subs),
            dups=sum(s.dups for s in subs),
            stray=sum(s.stray for s in subs),
            other=sum(s.other for s in subs),
            pings=sum(s.pings for s in subs),
            starved=sum(1 for n in open_counts if n == 0),
            min_events=min(open_counts, default=0),
            latencies_ms=self.latencies_ms,
            last_event_ns=self.last_event_ns,
        )

    async def close(self, timeout_s: float = 10.0) -> None:
        """Close every connection and wait (bounded) until the loop has seen them go."""
        for sub in self.subscribers:
            if sub.transport is not None and not sub.closed:
                sub.transport.close()
        self._closing = {s for s in self.subscribers if not s.closed}
        self._all_closed.clear()
        if self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout_s)
        self._closing = set()
        for sub in self.subscribers:
            if not sub.closed and sub.transport is not None:
                sub.transport.abort()
        self.subscribers.clear()


def _error_key(exc: BaseException) -> str:
    if isinstance(exc, HttpStatusError):
        return f"HTTP {exc.status}"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__} errno {exc.errno}"
    return type(exc).__name__


def describe_errors(errors: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "none"
