"""The proof with real processes: three ``herald scheduler`` replicas on one
database and a ``herald worker`` run a job every second for 20 s — each tick has
exactly one run row and one ``completed`` event, also across a replica SIGKILLed
mid-way; a run longer than its interval never overlaps the next; a worker killed
mid-run has its run taken over and finished once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from itertools import pairwise
from typing import Any

import pytest
from sqlalchemy import select

from herald.journal.maintenance import Run, dispatcher
from herald.journal.tables import maintenance_runs
from tests.maintenance import Maint, herald_commands, maint_env

pytestmark = pytest.mark.integration

TICKS = 20
# Four processes start (each importing the whole stack) and run for 20 s or more:
# beyond the suite's per-test default on a busy machine.
SLOW = pytest.mark.timeout(600)


@pytest.fixture
async def maint(unique: str, migrated_database: str) -> AsyncIterator[Maint]:
    async for env in maint_env(unique):
        yield env


async def all_runs(maint: Maint, job_id: int) -> list[Run]:
    async with maint.engine.connect() as conn:
        ids = (
            await conn.execute(
                select(maintenance_runs.c.id).where(maintenance_runs.c.job_id == job_id)
            )
        ).scalars()
        found = [await maint.store.run(i) for i in list(ids)]
    return sorted((r for r in found if r is not None), key=lambda r: r.created_at)


def completed_count(n: int) -> Any:
    return lambda events: sum(t == "maintenance.run.completed" for t, _ in events) >= n


@SLOW
async def test_three_scheduler_processes_run_each_tick_once_and_survive_a_sigkill(maint: Maint):
    env = {"HERALD_MAINTENANCE_QUEUE": maint.name, "HERALD_SCHEDULER_POLL_S": "1"}
    commands = [("worker", "--queue", maint.name, "--concurrency", "2")]
    commands += [("scheduler",)] * 3
    with herald_commands(*commands, **env) as (worker, *schedulers):
        await worker.await_line("herald: worker")
        for scheduler in schedulers:
            await scheduler.await_line("herald: scheduler")
        after = await maint.topic_position()
        job = await maint.job("every-second", schedule_cron="* * * * * *")
        await maint.wait_for_events(completed_count(TICKS // 2), after)
        schedulers[1].kill()  # SIGKILL mid-way: no goodbye, maybe mid-pass
        await maint.wait_for_events(completed_count(TICKS), after)
        await maint.store.update_job(job.key, {"enabled": False})
        # The ticks claimed before the change finish; nothing new starts.
        async with asyncio.timeout(60):
            while any(r.status == "running" for r in await all_runs(maint, job.id)):
                pass  # each check is a database round trip
        for scheduler in (schedulers[0], schedulers[2]):
            assert await scheduler.stop() == 0
        assert await worker.stop() == 0
    runs = await all_runs(maint, job.id)
    events = await maint.events(after)

    ticks = sorted(r.scheduled_for for r in runs if r.scheduled_for is not None)
    assert len(ticks) >= TICKS
    assert len(set(ticks)) == len(ticks)  # one row per tick
    gaps = [b - a for a, b in pairwise(ticks)]
    assert set(gaps) == {timedelta(seconds=1)}, "a tick was lost"
    assert Counter(r.status for r in runs) == {"success": len(runs)}
    per_run = Counter((t, d["run_id"]) for t, d in events)
    for run in runs:
        assert per_run[("maintenance.run.started", str(run.id))] == 1
        assert per_run[("maintenance.run.completed", str(run.id))] == 1
    completed_ticks = [d["scheduled_for"] for t, d in events if t == "maintenance.run.completed"]
    assert len(completed_ticks) == len(set(completed_ticks)) == len(runs)


async def test_a_run_longer_than_its_interval_never_overlaps_the_next(maint: Maint):
    job = await maint.job("slow", schedule_cron="* * * * * *", params={"sleep_s": 2.5})
    after = await maint.topic_position()
    worker = maint.worker(worker_concurrency=4)  # room to overlap, were it allowed
    schedulers = [maint.scheduler() for _ in range(2)]
    tasks = [asyncio.create_task(worker.run())]
    tasks += [asyncio.create_task(s.run()) for s in schedulers]
    try:
        await maint.wait_for_events(completed_count(3), after)
        await maint.store.update_job(job.key, {"enabled": False})
        for s in schedulers:
            s.request_stop()
        await maint.wait_for_events(
            lambda ev: (
                not {d["run_id"] for t, d in ev if t == "maintenance.run.started"}
                - {d["run_id"] for t, d in ev if t == "maintenance.run.completed"}
            ),
            after,
        )
    finally:
        for s in schedulers:
            s.request_stop()
        worker.request_stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    runs = await all_runs(maint, job.id)
    ran = sorted((r for r in runs if r.status == "success"), key=lambda r: str(r.started_at))
    assert len(ran) >= 3
    for previous, following in pairwise(ran):
        assert previous.finished_at is not None and following.started_at is not None
        assert following.started_at >= previous.finished_at, "two runs of the job overlapped"
    skipped = [r for r in runs if r.status == "skipped"]
    assert skipped and all("still running" in (r.message or "") for r in skipped)
    assert {r.status for r in runs} <= {"success", "skipped"}


@SLOW
async def test_a_worker_killed_mid_run_has_its_run_taken_over_and_finished_once(maint: Maint):
    job = await maint.job("taken-over", params={"sleep_s": 3})
    after = await maint.topic_position()
    env = {"HERALD_MAINTENANCE_QUEUE": maint.name, "HERALD_TASK_VISIBILITY_TIMEOUT_S": "1"}
    run = await maint.store.start_manual(job.key, dispatcher(maint.tasks, maint.settings))
    with herald_commands(("worker", "--queue", maint.name), **env) as (first,):
        await maint.wait_for_events(
            lambda ev: any(t == "maintenance.run.started" for t, _ in ev), after
        )
        first.kill()  # SIGKILL mid-run: the task stays pending
    with herald_commands(("worker", "--queue", maint.name), **env) as (second,):
        await maint.wait_for_events(completed_count(1), after)
        assert await second.stop() == 0
    done = await maint.store.run(run.id)
    assert done is not None and done.status == "success" and done.result == {"slept_s": 3}
    assert [t for t, _ in await maint.events(after)] == [
        "maintenance.run.started",  # again on the take-over, stored once (same key)
        "maintenance.run.completed",
    ]
