"""SSE delivery under faults, against a real ``herald serve`` (DESIGN §4.1 to 4.3).

Every test reads ``GET /api/events`` over real HTTP with the wire parser in
``tests.sseclient`` and publishes with the Python journal straight into the test
Redis, so what is checked is what a browser's EventSource would see: exactly the
published sequence, in order, once — or a ``herald.gap`` first, and only when
something really is missing.

Faults are injected for real: ``CLIENT KILL TYPE pubsub`` drops the hub's pub/sub
connection (and every other pub/sub client of the shared test Redis, which their
owners must tolerate anyway), the client drops its HTTP connection, and the server
process is restarted on the same port.

Nothing waits for a condition with a sleep: tasks synchronise on counters and
events, and every wait has a deadline (sleeps only pace the publisher and back
off reconnects).  Random choices come from one seed, printed at the
start and quoted in failures; ``HERALD_TEST_SEED=<n>`` replays a schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Literal

import httpx
import pytest
import redis.asyncio as aioredis

from herald.journal.base import JournalLimits
from herald.journal.positions import StreamId, Target
from herald.journal.redis import RedisJournal
from tests.servers import HeraldProcess
from tests.sseclient import SseEvent, SseRefused, SseStream, open_sse

pytestmark = pytest.mark.integration

# Server start-up runs `herald migrate` and imports the app: slow on a busy machine.
START_TIMEOUT_S = 60.0
EVENTS_PATH = "/api/events"
SEQ_TYPE = "demo.seq"
GAP_TYPE = "herald.gap"


# -- fixtures ----------------------------------------------------------------------


def roomy_server(workdir: Path) -> HeraldProcess:
    """A server whose per-user safety limits (DESIGN §4.5) are out of the way: they are
    not under test here, but a test reconnecting dozens of times a minute trips them."""
    return HeraldProcess(
        workdir,
        HERALD_REPLAY_BUDGET="10000",
        HERALD_MAX_CONNECTIONS_PER_USER="50",
        HERALD_STREAM_MAXLEN="20000",
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeraldProcess]:
    """One server for the tests that do not restart it (each uses its own user)."""
    proc = roomy_server(tmp_path_factory.mktemp("herald"))
    proc.start(timeout=START_TIMEOUT_S)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # The read timeout only has to outlast the 15 s keepalive comments.
    timeout = httpx.Timeout(10.0, connect=2.0, read=40.0)
    async with httpx.AsyncClient(timeout=timeout) as client:
        yield client


# -- helpers -----------------------------------------------------------------------


def fresh_seed() -> int:
    """A fresh seed per run unless one is given, so reruns explore new schedules."""
    given = os.environ.get("HERALD_TEST_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


def seq(event: SseEvent) -> int:
    """The ``n`` of a ``demo.seq`` event (fails on anything else, e.g. a gap)."""
    envelope = event.json()
    assert envelope["type"] == SEQ_TYPE, f"expected a {SEQ_TYPE} event, got {envelope}"
    n = envelope["data"]["n"]
    assert isinstance(n, int)
    return n


def entry_id(event: SseEvent) -> str:
    value = event.json()["id"]
    assert isinstance(value, str)
    return value


def cursor_part(cursor: str | None, key: str) -> str:
    """``epoch~id`` of one stream in a composite cursor (``u`` is the user stream)."""
    assert cursor is not None, "every frame must carry an id: cursor"
    for item in cursor.split(","):
        name, _, rest = item.partition("~")
        if name == key:
            return rest
    raise AssertionError(f"no {key!r} in cursor {cursor!r}")


async def take(stream: SseStream, count: int, timeout_s: float = 15.0) -> list[SseEvent]:
    """The next ``count`` events of one open connection (a server-side end fails)."""
    out: list[SseEvent] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(out) < count:
                out.append(await stream.next_event())
    except (TimeoutError, EOFError) as e:
        raise AssertionError(
            f"wanted {count} events, got {len(out)} then {type(e).__name__}; "
            f"last: {out[-1] if out else None}"
        ) from e
    return out


async def publish_range(journal: RedisJournal, target: Target, first: int, last: int) -> list[str]:
    """Publish ``demo.seq`` events n = first..last one by one; their entry ids."""
    ids = []
    for n in range(first, last + 1):
        result = await journal.publish(target, SEQ_TYPE, {"n": n})
        ids.append(str(result.id))
    return ids


async def stream_ids(client: aioredis.Redis, target: Target) -> list[str]:
    """The ids of every entry the stream holds now, oldest first."""
    rows = await client.xrange(target.stream_key)
    return [raw_id.decode() for raw_id, _ in rows or [] if isinstance(raw_id, bytes)]


async def stream_epoch(client: aioredis.Redis, target: Target) -> str:
    raw = await client.hget(target.meta_key, "epoch")
    assert isinstance(raw, bytes), f"{target} has no epoch"
    return raw.decode()


async def assert_next_is(stream: SseStream, journal: RedisJournal, target: Target, n: int) -> None:
    """Publish a sentinel and check it is the very next frame: nothing stray (a
    duplicate, a second gap) was queued behind what the test already read."""
    await journal.publish(target, SEQ_TYPE, {"n": n})
    (event,) = await take(stream, 1)
    assert seq(event) == n


async def kill_pubsub(client: aioredis.Redis) -> int:
    """Drop every pub/sub connection of the test Redis, the server's hub included."""
    return int(await client.client_kill_filter(_type="pubsub"))


async def channel_subscribers(client: aioredis.Redis, channel: str) -> int:
    ((_, count),) = await client.pubsub_numsub(channel)
    return int(count)


def describe(got: list[int], total: int) -> str:
    """What is wrong with a received sequence, in a form that points at the cause."""
    counts = Counter(got)
    duplicates = sorted(n for n, c in counts.items() if c > 1)
    missing = sorted(set(range(1, total + 1)) - counts.keys())
    disorder = next((i for i in range(1, len(got)) if got[i] <= got[i - 1]), None)
    around = got[max(0, disorder - 3) : disorder + 3] if disorder is not None else []
    return (
        f"received {len(got)} of {total}; missing {len(missing)} (first {missing[:10]}); "
        f"duplicates {len(duplicates)} (first {duplicates[:10]}); "
        f"first step backwards at index {disorder} (around it: {around})"
    )


class Progress:
    """A counter other tasks can wait on, instead of polling it with sleeps."""

    def __init__(self) -> None:
        self.value = 0
        self.done = False
        self._waiters: list[tuple[int, asyncio.Event]] = []

    def advance(self, value: int) -> None:
        self.value = value
        for target, event in self._waiters:
            if value >= target:
                event.set()

    def finish(self) -> None:
        """No more progress will come: release every waiter."""
        self.done = True
        for _, event in self._waiters:
            event.set()

    async def reached(self, target: int) -> None:
        if self.done or self.value >= target:
            return
        event = asyncio.Event()
        self._waiters.append((target, event))
        try:
            await event.wait()
        finally:
            self._waiters.remove((target, event))


@dataclass
class FaultRun:
    """What happened during the fault test, for assertions and failure messages."""

    seed: int
    got: list[int] = field(default_factory=list)
    entry_ids: list[str] = field(default_factory=list)
    gaps: list[dict[str, object]] = field(default_factory=list)
    connects: int = 0
    drops: int = 0
    server_ends: int = 0
    transport_errors: list[str] = field(default_factory=list)
    refusals: list[int] = field(default_factory=list)
    kills: list[int] = field(default_factory=list)  # clients killed per hub kill
    restarts: list[float] = field(default_factory=list)  # seconds each took
    faults_log: list[str] = field(default_factory=list)
    connections: list[str] = field(default_factory=list)  # events read, how each ended

    def summary(self, total: int) -> str:
        return (
            f"seed={self.seed}; {describe(self.got, total)}; gaps={self.gaps[:3]}; "
            f"connects={self.connects} drops={self.drops} server_ends={self.server_ends} "
            f"transport_errors={len(self.transport_errors)} {self.transport_errors[:3]} "
            f"refusals={self.refusals[:10]} kills={self.kills} restarts={self.restarts}; "
            f"faults: {self.faults_log}; connections: {self.connections}"
        )


# -- 1. the whole sequence survives every kind of fault at once ----------------------

TOTAL = 5000
GATE_LEAD = 150
DEADLINE_S = 90.0
Outcome = Literal["done", "dropped", "ended"]


class FaultScenario:
    """One publisher, one reconnecting SSE reader and a fault injector, sharing the
    counters they synchronise on."""

    def __init__(
        self,
        server: HeraldProcess,
        http: httpx.AsyncClient,
        redis_client: aioredis.Redis,
        user: str,
        seed: int,
    ) -> None:
        rng = random.Random(seed)
        # Faults at spread points of the publisher's progress: two hub kills before
        # the restart and two after it.
        self.kill_at = [
            rng.randint(a, b) for a, b in ((400, 1100), (1400, 2000), (3000, 3600), (3900, 4500))
        ]
        self.restart_at = rng.randint(2200, 2700)
        # The reader drops its connection right after handling these events.
        self.drop_after = set(rng.sample(range(50, TOTAL - 50), 6))
        # Its own generator, so the pacing draws do not shift the schedule above.
        self.pacing = random.Random(f"{seed}-publisher")

        self.server = server
        self.http = http
        self.redis = redis_client
        self.target = Target.user(user)
        self.token = server.token(user)
        self.journal = RedisJournal(redis_client, JournalLimits(stream_maxlen=20000))
        self.run = FaultRun(seed)
        self.published = Progress()
        self.received = Progress()
        # As EventSource's lastEventId: kept across every kind of reconnect, a cut
        # included. The stream is new: "0-0" reads it from its first event (no cursor
        # would mean "from now on" and miss what was published before connecting).
        self.last_id = "0-0"
        self.faulted = Progress()  # faults injected so far
        # The publisher does not get more than GATE_LEAD events past a kill point before
        # every fault planned up to it is done: a slow restart would otherwise let it
        # publish to the end, and the later kills would land on a finished stream. It
        # publishes on through the restart, and through each kill (the planned ranges
        # leave more than GATE_LEAD events between faults, and before the last event).
        self.plan = sorted([(at, "kill") for at in self.kill_at] + [(self.restart_at, "restart")])
        self.gates = [
            (at + GATE_LEAD, i + 1) for i, (at, what) in enumerate(self.plan) if what == "kill"
        ]

    async def play(self, restarter: ThreadPoolExecutor) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.publish_all())
            tasks.create_task(self.read_all())
            tasks.create_task(self.inject_faults(restarter))

    async def publish_all(self) -> None:
        gates = iter(self.gates)
        gate = next(gates, None)
        for n in range(1, TOTAL + 1):
            if gate is not None and n > gate[0]:
                await self.faulted.reached(gate[1])
                gate = next(gates, None)
            await self.journal.publish(self.target, SEQ_TYPE, {"n": n})
            self.published.advance(n)
            if n % 10 == 0:
                # Spread the events over time (~500-1000/s), so faults land
                # mid-stream rather than after one burst.
                await asyncio.sleep(self.pacing.uniform(0.0, 0.02))

    async def inject_faults(self, restarter: ThreadPoolExecutor) -> None:
        for at, what in self.plan:
            await self.published.reached(at)
            self.run.faults_log.append(f"{what}@{self.published.value}/rx{self.received.value}")
            if what == "kill":
                await self.kill_hub()
            else:
                began = time.monotonic()
                # Blocking (stop, migrate, start): in a thread, so publishing and
                # reading carry on meanwhile.
                await asyncio.get_running_loop().run_in_executor(restarter, self.server.restart)
                self.run.restarts.append(round(time.monotonic() - began, 1))
            self.faulted.advance(self.faulted.value + 1)

    async def kill_hub(self) -> None:
        # Kill only once this server's hub is subscribed to the user's channel, so
        # the kill is known to hit it (not a hub still reconnecting, nor a moment
        # when the reader is between connections); re-check on each frame it gets,
        # and every 50 ms, as the publisher may be waiting for this kill, and a reader
        # that reconnects having read everything gets no frame.
        while not self.received.done:
            if await channel_subscribers(self.redis, self.target.channel) > 0:
                self.run.kills.append(await kill_pubsub(self.redis))
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await self.received.reached(self.received.value + 1)

    async def read_all(self) -> None:
        backoff = 0.05
        try:
            while True:
                try:
                    outcome = await self.read_one_connection()
                    if outcome == "done":
                        return
                    if outcome == "dropped":
                        continue  # dropped on purpose: reconnect at once
                    self.run.server_ends += 1
                except SseRefused as e:
                    # Throttling or a journal hiccup are answers to retry; anything
                    # else (401, or 400 on our own cursor) is a failure.
                    if e.status not in (429, 503):
                        raise
                    self.run.refusals.append(e.status)
                except httpx.TransportError as e:
                    # Refused or cut while the server restarts.
                    self.run.transport_errors.append(type(e).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)
        finally:
            self.received.finish()

    async def read_one_connection(self) -> Outcome:
        """Read from ``last_id`` until the last event, a drop point, or the server
        ending the stream; returns which of the three it was."""
        url = self.server.url + EVENTS_PATH
        first = len(self.run.got)
        how = "refused"
        try:
            async with open_sse(self.http, url, self.token, last_event_id=self.last_id) as s:
                self.run.connects += 1
                how = "cut"
                how = await self.read_frames(s)
                return how
        finally:
            got = self.run.got[first:]
            self.run.connections.append(f"{got[0]}-{got[-1]}:{how}" if got else f"-:{how}")

    async def read_frames(self, stream: SseStream) -> Outcome:
        async for event in stream:
            envelope = event.json()
            assert event.id is not None, f"frame without an id: {event}"
            self.last_id = event.id
            if envelope["type"] == GAP_TYPE:
                self.run.gaps.append(envelope["data"])
                continue
            n = seq(event)
            self.run.got.append(n)
            self.run.entry_ids.append(entry_id(event))
            # The cursor names the entry it follows.
            assert cursor_part(event.id, "u").endswith("~" + entry_id(event)), event
            self.received.advance(len(self.run.got))
            if n == TOTAL:
                return "done"
            if n in self.drop_after:
                self.drop_after.discard(n)
                self.run.drops += 1
                return "dropped"
        return "ended"


async def test_sequence_integrity_under_faults(
    tmp_path: Path, unique: str, real_redis: aioredis.Redis, http: httpx.AsyncClient
) -> None:
    seed = fresh_seed()
    print(f"seed={seed} (HERALD_TEST_SEED={seed} replays this fault schedule)")
    server = roomy_server(tmp_path)
    server.start(timeout=START_TIMEOUT_S)
    try:
        scenario = FaultScenario(server, http, real_redis, unique, seed)
        run = scenario.run
        began = time.monotonic()
        # Leaving the pool waits for a restart still under way, so the server is
        # never stopped in the middle of one.
        with ThreadPoolExecutor(max_workers=1) as restarter:
            try:
                async with asyncio.timeout(DEADLINE_S):
                    await scenario.play(restarter)
            except TimeoutError:
                # Streams that keep ending with no event while the channel has no
                # subscriber point at the hub (a stream ends when Redis does not
                # confirm its subscription in time), not at the session.
                subscribed = await channel_subscribers(real_redis, scenario.target.channel)
                pytest.fail(
                    f"not done within {DEADLINE_S} s: {run.summary(TOTAL)}; Redis "
                    f"subscribers of the user's channel now: {subscribed}\n"
                    f"server log:\n{''.join(server.log[-40:])}"
                )
        elapsed = time.monotonic() - began
    finally:
        server.stop()

    print(f"done in {elapsed:.1f} s: {run.summary(TOTAL)}")
    assert run.got == list(range(1, TOTAL + 1)), run.summary(TOTAL)
    ids = [StreamId.parse(i) for i in run.entry_ids]
    assert all(a < b for a, b in pairwise(ids)), run.summary(TOTAL)
    assert run.gaps == [], run.summary(TOTAL)
    # The faults really happened.
    assert run.drops == 6, run.summary(TOTAL)
    assert len(run.kills) == 4 and all(k >= 1 for k in run.kills), run.summary(TOTAL)
    assert len(run.restarts) == 1, run.summary(TOTAL)


# -- 2. trimmed history: one gap, then contiguous ------------------------------------


async def test_trimmed_stream_gives_exactly_one_gap_then_contiguous(
    server: HeraldProcess, http: httpx.AsyncClient, real_redis: aioredis.Redis, unique: str
) -> None:
    url = server.url + EVENTS_PATH
    target = Target.user(unique)
    journal = RedisJournal(real_redis, JournalLimits(stream_maxlen=50))
    token = server.token(unique)

    await publish_range(journal, target, 1, 10)
    async with open_sse(http, url, token, last_event_id="0-0") as stream:
        seen = await take(stream, 10)
    assert [seq(e) for e in seen] == list(range(1, 11))
    cursor, last_entry = seen[-1].id, entry_id(seen[-1])

    await publish_range(journal, target, 11, 1010)
    # MAXLEN ~ trims whole radix-tree nodes: what is kept is only approximately 50,
    # so expectations come from the stream itself.
    kept = await stream_ids(real_redis, target)
    assert 50 <= len(kept) < 1000, len(kept)
    assert StreamId.parse(kept[0]) > StreamId.parse(last_entry), (kept[0], last_entry)

    async with open_sse(http, url, token, last_event_id=cursor) as stream:
        (gap,) = await take(stream, 1)
        envelope = gap.json()
        assert envelope["type"] == GAP_TYPE, envelope
        assert envelope["data"] == {
            "stream": f"user:{unique}",
            "after": last_entry,
            "first_available": kept[0],
            "reason": "trimmed",
        }
        # Then every kept entry, contiguous up to the newest: no second gap.
        after_gap = await take(stream, len(kept))
    assert [entry_id(e) for e in after_gap] == kept
    assert [seq(e) for e in after_gap] == list(range(1010 - len(kept) + 1, 1011))

    # Resuming from the gap frame's own cursor must not announce the gap again.
    # (No publish in between: one more entry could trim another node.)
    async with open_sse(http, url, token, last_event_id=gap.id) as stream:
        resumed = await take(stream, len(kept))
        assert [entry_id(e) for e in resumed] == kept
        await assert_next_is(stream, journal, target, 1011)


# -- 3. an old cursor is not a gap when nothing was trimmed ---------------------------


async def test_cursor_older_than_first_entry_without_trimming_gives_no_gap(
    server: HeraldProcess, http: httpx.AsyncClient, real_redis: aioredis.Redis, unique: str
) -> None:
    url = server.url + EVENTS_PATH
    target = Target.user(unique)
    journal = RedisJournal(real_redis, JournalLimits())
    token = server.token(unique)
    ids = await publish_range(journal, target, 1, 5)
    first_ms = int(ids[0].split("-")[0])
    before_first = f"{first_ms - 10000}-0"

    # A plain id (hand-written, or from another SSE server) carries no epoch.
    async with open_sse(http, url, token, last_event_id=before_first) as stream:
        events = await take(stream, 5)
        assert [seq(e) for e in events] == [1, 2, 3, 4, 5]
        await assert_next_is(stream, journal, target, 6)

    # The same position with the stream's epoch, as herald itself writes cursors.
    epoch = await stream_epoch(real_redis, target)
    async with open_sse(http, url, token, last_event_id=f"u~{epoch}~{before_first}") as stream:
        events = await take(stream, 6)
        assert [seq(e) for e in events] == [1, 2, 3, 4, 5, 6]
        await assert_next_is(stream, journal, target, 7)


async def test_cursor_from_a_connection_that_saw_nothing_gives_no_gap(
    server: HeraldProcess, http: httpx.AsyncClient, real_redis: aioredis.Redis, unique: str
) -> None:
    """A composite cursor whose user part was taken while the user stream did not
    exist yet (``u~~0-0``): the frames that carried it were a topic's."""
    url = server.url + EVENTS_PATH
    user, topic = Target.user(unique), Target.topic(f"{unique}-topic")
    journal = RedisJournal(real_redis, JournalLimits())
    token = server.token(unique, "admin")  # admins may read any topic
    params = {"topic": topic.name}

    await journal.publish(topic, SEQ_TYPE, {"n": 1})
    # Replay the topic from its start, so the frame is certain to come (a live-only
    # connection could miss a publish made before it subscribed).
    start = f"t:{topic.name}~~0-0"
    async with open_sse(http, url, token, last_event_id=start, params=params) as stream:
        (topic_event,) = await take(stream, 1)
    assert seq(topic_event) == 1
    cursor = topic_event.id
    assert cursor_part(cursor, "u") == "~0-0", cursor  # saw nothing, knows no epoch

    await publish_range(journal, user, 1, 3)
    async with open_sse(http, url, token, last_event_id=cursor, params=params) as stream:
        events = await take(stream, 3)
        assert [seq(e) for e in events] == [1, 2, 3]
        await assert_next_is(stream, journal, user, 4)


# -- 4. lost history: a "lost" gap, then the new stream -------------------------------


async def test_lost_stream_gives_lost_gap(
    server: HeraldProcess, http: httpx.AsyncClient, real_redis: aioredis.Redis, unique: str
) -> None:
    url = server.url + EVENTS_PATH
    target = Target.user(unique)
    journal = RedisJournal(real_redis, JournalLimits())
    token = server.token(unique)

    await publish_range(journal, target, 1, 3)
    async with open_sse(http, url, token, last_event_id="0-0") as stream:
        seen = await take(stream, 3)
    assert [seq(e) for e in seen] == [1, 2, 3]
    cursor, last_entry = seen[-1].id, entry_id(seen[-1])
    old_epoch = cursor_part(cursor, "u").split("~")[0]
    assert old_epoch, cursor

    # What a Redis that lost its data looks like: neither entries nor metadata.
    await real_redis.delete(target.stream_key, target.meta_key)
    new_ids = await publish_range(journal, target, 4, 6)
    new_epoch = await stream_epoch(real_redis, target)
    assert new_epoch != old_epoch

    async with open_sse(http, url, token, last_event_id=cursor) as stream:
        (gap,) = await take(stream, 1)
        envelope = gap.json()
        assert envelope["type"] == GAP_TYPE, envelope
        assert envelope["data"] == {
            "stream": f"user:{unique}",
            "after": last_entry,
            "first_available": new_ids[0],
            "reason": "lost",
        }
        events = await take(stream, 3)
        assert [seq(e) for e in events] == [4, 5, 6]
        assert [entry_id(e) for e in events] == new_ids
        assert cursor_part(events[-1].id, "u") == f"{new_epoch}~{new_ids[-1]}"
        await assert_next_is(stream, journal, target, 7)

    # The gap frame's cursor stands at the start of the new epoch: no second gap.
    async with open_sse(http, url, token, last_event_id=gap.id) as stream:
        events = await take(stream, 4)
        assert [seq(e) for e in events] == [4, 5, 6, 7]


# -- 5. the hub's reconnect refills a connection that never dropped -------------------


async def test_hub_reconnect_backfills_without_client_reconnect(
    server: HeraldProcess, http: httpx.AsyncClient, real_redis: aioredis.Redis, unique: str
) -> None:
    url = server.url + EVENTS_PATH
    target = Target.user(unique)
    journal = RedisJournal(real_redis, JournalLimits())
    token = server.token(unique)

    await journal.publish(target, SEQ_TYPE, {"n": 0})
    async with open_sse(http, url, token, last_event_id="0-0") as stream:
        # Replay runs after the hub confirmed the subscription: once this event is
        # here, the connection is live.
        (warm,) = await take(stream, 1)
        assert seq(warm) == 0

        assert await kill_pubsub(real_redis) >= 1
        # The hub waits before reconnecting, so these publishes find nobody
        # subscribed: their live messages are gone for good.
        assert await channel_subscribers(real_redis, target.channel) == 0
        await publish_range(journal, target, 1, 100)

        events = await take(stream, 100)
        ns = [seq(e) for e in events]
        assert ns == list(range(1, 101)), describe(ns, 100)
        await assert_next_is(stream, journal, target, 101)
