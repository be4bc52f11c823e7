"""The printer probe: one asyncio loop per process that keeps every printer's status
cache fresh and publishes ``printer.status`` when a printer's status changes.

Across replicas each printer is probed once per interval by one process.  Whoever
sets the printer's claim key (``SET NX PX interval``) probes it for that interval;
the others learn the key's remaining time and try again the moment it expires.
So nothing is owned: a process that dies simply stops claiming, and its printers
are picked up by the others when their claims run out — within one interval of
their last probe.  A process only claims what it has free slots for
(``HERALD_PRINTER_PROBE_CONCURRENCY``), so a busy one leaves printers to the rest.

A probe writes the cache first (one upsert: the last attempt always, the snapshot
only on success) and publishes only when the write changed something an observer
cares about (``parse.transition``), with an idempotency key per (printer, time of
the attempt), so a retried publish never doubles.  Every exception of one probe
is logged and counted (``herald_printer_probes_total{outcome="error"}``) and ends
only that probe; the loop itself survives a failing database or Redis and keeps
trying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from herald.journal.base import Journal, JournalUnavailable
from herald.journal.envelope import format_time
from herald.journal.positions import Target
from herald.journal.printers.keys import EVENT_SOURCE, STATUS_EVENT, TOPIC, probe_claim_key
from herald.journal.printers.store import (
    Printer,
    StatusWrite,
    list_printers,
    record_failure,
    record_success,
    register_all,
)
from herald.journal.runtime.db import run_in_transaction
from herald.journal.runtime.metrics import PRINTER_PROBE_SECONDS, PRINTER_PROBES
from herald.workers._support import default_consumer_name
from herald.workers.printers.parse import parse_snapshot, transition
from herald.workers.printers.snmp import SnmpError, SnmpReader

if TYPE_CHECKING:
    from herald.journal.runtime.settings import Settings

__all__ = ["PrinterProbe"]

log = logging.getLogger("herald.printers")

LIST_REFRESH_S = 5.0  # new and deleted printers are noticed this fast
RETRY_S = 1.0  # after Redis or the database failed, try again this soon
# When a claim runs out, its printer is raced for again, by its last prober too.  One
# process claims a whole batch in one round trip, and the same process tends to come
# first every time; up to this much randomness per printer (at most a twentieth of
# the interval) makes each race a fair one, so replicas share the printers.
SPREAD_S = 0.1
PUBLISH_ATTEMPTS = 3
PUBLISH_BACKOFF_S = 0.25


class PrinterProbe:
    """Probes the registered printers until ``request_stop()``; see the module doc.

    ``snmp`` builds the SNMP reader inside the running loop (tests inject one)."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        redis: aioredis.Redis,
        journal: Journal,
        settings: Settings,
        name: str | None = None,
        snmp: Callable[[], SnmpReader] | None = None,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.journal = journal
        self.settings = settings
        self.name = name or default_consumer_name()
        self.interval_s = settings.printer_probe_interval_s
        self.timeout_s = settings.printer_probe_timeout_s
        self.concurrency = settings.printer_probe_concurrency
        self.refresh_s = min(LIST_REFRESH_S, self.interval_s)
        self._snmp_factory = snmp or (
            # One retry of a lost datagram, both attempts within the probe's timeout.
            lambda: SnmpReader(request_timeout_s=self.timeout_s / 2, retries=1)
        )
        self._printers: dict[uuid.UUID, Printer] = {}
        self._due: dict[uuid.UUID, float] = {}  # loop time of the next claim attempt
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._next_refresh = 0.0
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()  # set once the printer list was read the first time

    def request_stop(self) -> None:
        """Stop claiming; ``run()`` returns once the probes in flight are done."""
        self._stopping.set()
        self._wake.set()

    @property
    def running(self) -> int:
        return len(self._running)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        snmp = self._snmp_factory()
        try:
            await self._register_configured()
            while not self._stopping.is_set():
                now = loop.time()
                if now >= self._next_refresh:
                    await self._refresh(now)
                await self._claim_due(snmp, loop.time())
                await self._sleep_until(self._next_wake(), loop)
        finally:
            running = list(self._running.values())
            if running:
                await asyncio.wait(running)
            snmp.close()

    # -- the schedule ---------------------------------------------------------------

    async def _register_configured(self) -> None:
        try:
            await register_all(self.engine, self.settings.printers)
        except Exception:
            # The API registers them too; the probe still probes what is there.
            log.exception("could not register the printers of HERALD_PRINTERS")

    async def _refresh(self, now: float) -> None:
        self._next_refresh = now + self.refresh_s
        try:
            found = await run_in_transaction(self.engine, list_printers)
        except Exception as e:
            log.warning("could not read the printer list (keeping the last one): %s", e)
            self._next_refresh = now + RETRY_S
            return
        self._printers = {p.id: p for p in found}
        for gone in self._due.keys() - self._printers.keys():
            del self._due[gone]
        for new in self._printers.keys() - self._due.keys():
            self._due[new] = now
        self.ready.set()

    async def _claim_due(self, snmp: SnmpReader, now: float) -> None:
        free = self.concurrency - len(self._running)
        due = sorted(
            (at, pid) for pid, at in self._due.items() if at <= now and pid not in self._running
        )
        wanted = [pid for _, pid in due[:free]]
        if not wanted:
            return
        try:
            claimed = await self._claim(wanted)
        except (RedisError, OSError) as e:
            log.warning("could not claim printers to probe: %s", e)
            for pid in wanted:
                self._due[pid] = now + RETRY_S
            return
        spread = min(SPREAD_S, self.interval_s / 20)
        for pid, (won, left_ms) in zip(wanted, claimed, strict=True):
            if won:
                self._due[pid] = now + self.interval_s + random.uniform(0, spread)
                self._start(snmp, self._printers[pid])
            else:
                # Someone else probes it this interval: come back when their claim ends.
                self._due[pid] = now + max(left_ms, 10) / 1000 + random.uniform(0, spread)

    async def _claim(self, printers: list[uuid.UUID]) -> list[tuple[bool, int]]:
        """Try to claim each printer for one interval; for each, whether it was won
        and how long the current claim has left (ms).  One round trip."""
        ttl_ms = max(1, round(self.interval_s * 1000))
        pipe = self.redis.pipeline(transaction=False)
        for pid in printers:
            key = probe_claim_key(pid)
            pipe.set(key, self.name, nx=True, px=ttl_ms)
            pipe.pttl(key)
        replies = await pipe.execute()
        return [(bool(replies[i]), int(replies[i + 1])) for i in range(0, len(replies), 2)]

    def _next_wake(self) -> float:
        candidates = [self._next_refresh]
        if len(self._running) < self.concurrency:
            candidates += [at for pid, at in self._due.items() if pid not in self._running]
        return min(candidates)

    async def _sleep_until(self, deadline: float, loop: asyncio.AbstractEventLoop) -> None:
        self._wake.clear()
        delay = deadline - loop.time()
        if delay <= 0 or self._stopping.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    def _start(self, snmp: SnmpReader, printer: Printer) -> None:
        task = asyncio.create_task(self._probe(snmp, printer), name=f"probe {printer.id}")
        self._running[printer.id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._running.pop(printer.id, None)
            self._wake.set()  # a slot is free

        task.add_done_callback(done)

    # -- one probe ------------------------------------------------------------------

    async def _probe(self, snmp: SnmpReader, printer: Printer) -> None:
        """Probe, write the cache, publish a change.  Never raises."""
        outcome = "error"
        try:
            outcome = await self._probe_once(snmp, printer)
        except Exception:
            log.exception("probe of printer %s (%s) failed", printer.id, printer.name)
        finally:
            PRINTER_PROBES.labels(outcome).inc()

    async def _probe_once(self, snmp: SnmpReader, printer: Printer) -> str:
        at = datetime.now(UTC)
        began = time.perf_counter()
        parsed: dict[str, Any] | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                readings = await snmp.read(printer.host, printer.port, printer.community)
            parsed = parse_snapshot(readings)
            outcome, error = "success", ""
        except TimeoutError:
            outcome, error = "timeout", f"no SNMP answer within {self.timeout_s:g} s"
        except SnmpError as e:
            outcome, error = "failure", str(e) or type(e).__name__
        except Exception as e:
            # Not the printer's fault as far as we know, but it is unreachable all the
            # same: record it, and count it as ours.
            log.exception("reading printer %s (%s) failed", printer.id, printer.name)
            outcome, error = "error", f"{type(e).__name__}: {e}"
        PRINTER_PROBE_SECONDS.labels(outcome).observe(time.perf_counter() - began)

        async def write(conn: AsyncConnection) -> StatusWrite | None:
            if parsed is not None:
                return await record_success(conn, printer.id, parsed, at)
            return await record_failure(conn, printer.id, error, at)

        written = await run_in_transaction(self.engine, write)
        if written is not None:
            data = transition(written)
            if data is not None:
                await self._publish(printer, data, at)
        return outcome

    async def _publish(self, printer: Printer, data: dict[str, Any], at: datetime) -> None:
        key = f"{STATUS_EVENT}:{printer.id}:{format_time(at)}"
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                await self.journal.publish(
                    Target.topic(TOPIC),
                    STATUS_EVENT,
                    data,
                    source=EVENT_SOURCE,
                    idempotency_key=key,
                )
                return
            except JournalUnavailable:
                if attempt == PUBLISH_ATTEMPTS:
                    raise
                await asyncio.sleep(PUBLISH_BACKOFF_S * attempt)
