"""The fan-out's own Python cost per delivery, in one process, without sockets.

Run from the repository root::

    python bench/fanout_cpu.py [--readers 1000] [--events 300] [--repeats 3]

N readers of one topic, each with its own user stream as well (as ``GET
/api/events?topic=...`` reads), wait in the live loop of ``herald.streams.live``
behind an in-memory journal and hub.  Each event published on the topic is fanned
out by the hub to every reader's fast path, and written to a writer that drops the
bytes, so what is timed is Herald's Python around each write: the hub's loop, the
session's frame, the live loop's bookkeeping (and, spread over the readers, the
in-memory journal's one publish per event: negligible at hundreds of readers).
``bench/fanout.py`` measures the whole path with real sockets; this isolates the
part that is Herald's own code.

Printed per repeat: the first event (a new topic: its readers have no position in it
yet) and the later ones, in microseconds per delivery (the minimum over the events is
the figure least disturbed by other load on the machine; the median is also shown).
These are for A/B comparisons of Herald's code on one machine; the absolute figures
depend on the machine, so no speed target is set here (``bench/fanout.py`` holds the
targets against Nchan).

Target: every delivery, the first event's included, is written from the hub's loop
(none is queued for a reader's own task: the fast path of ``herald.streams.live``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time

import uvloop

from herald.journal.base import JournalLimits, PublishRequest
from herald.journal.memory import MemoryJournal
from herald.journal.positions import Target
from herald.streams.hub import Subscription
from herald.streams.hub_memory import MemoryHub
from herald.streams.session import Session, SessionLimits

TOPIC = Target.topic("bench-fanout-cpu")


class DroppingWriter:
    """A ``DirectWriter`` (``herald.streams.live``) that drops what it is given."""

    __slots__ = ()

    def ready(self) -> bool:
        return True

    def write_now(self, chunk: bytes) -> None:
        return None

    async def emit(self, chunk: bytes) -> None:
        return None


async def one_run(readers: int, events: int) -> tuple[float, list[float], int]:
    """(first event, later events) in seconds per delivery, and the deliveries queued
    for a reader's task instead of written from the hub's loop."""
    journal = MemoryJournal(JournalLimits(stream_maxlen=events + 10))
    hub = MemoryHub(journal)
    subs: list[Subscription] = []
    tasks: list[asyncio.Task[None]] = []
    async with contextlib.AsyncExitStack() as stack:
        for i in range(readers):
            targets = {"u": Target.user(f"reader-{i}"), f"t:{TOPIC.name}": TOPIC}
            session = Session(journal, targets, None, SessionLimits())
            sub = await stack.enter_async_context(hub.subscribe(session.channels, 100))
            await session.open()
            live = session.live(sub, DroppingWriter().emit, 15.0)
            tasks.append(asyncio.create_task(live))
            subs.append(sub)
        async with asyncio.timeout(30):
            while any(sub.direct is None for sub in subs):  # noqa: ASYNC110 - polled, with a deadline
                await asyncio.sleep(0)
        times: list[float] = []
        queued = 0
        for n in range(events):
            started = time.perf_counter()
            await journal.publish_many([PublishRequest(TOPIC, "bench.tick", {"n": n})])
            times.append((time.perf_counter() - started) / readers)
            queued += sum(1 for sub in subs if sub.pending())
            await asyncio.sleep(0)  # a queued delivery's task runs before the next event
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return times[0], times[1:], queued


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readers", type=int, default=1000)
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(
        f"fan-out CPU, {args.readers:,} readers, {args.events} events, "
        f"Python {sys.version.split()[0]}; microseconds per delivery"
    )
    firsts, mins, queued = [], [], 0
    for r in range(args.repeats):
        first, later, declined = uvloop.run(one_run(args.readers, args.events))
        firsts.append(first)
        mins.append(min(later))
        queued += declined
        print(
            f"  run {r + 1}: first event {first * 1e6:.2f}, later events min "
            f"{min(later) * 1e6:.2f}, median {statistics.median(later) * 1e6:.2f}"
        )
    print(
        f"  medians over runs: first event {statistics.median(firsts) * 1e6:.2f}, "
        f"later events {statistics.median(mins) * 1e6:.2f}"
    )
    total = args.repeats * args.readers * args.events
    verdict = "PASS" if queued == 0 else "FAIL"
    print(
        f"{verdict}  every delivery written from the hub's loop: {queued:,} of {total:,} "
        "queued for a reader's task"
    )


if __name__ == "__main__":
    main()
