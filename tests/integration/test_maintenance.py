"""Maintenance runs against real PostgreSQL and Redis: one run per tick however
many schedulers ask, no overlap, a claim and its task committed together, runs
executed by the worker runtime with their events, abandoned runs failed, and the
scheduler's DST and catch-up rules through the real store with a frozen clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from herald.journal.maintenance import (
    DispatchFailed,
    JobRunning,
    Run,
    dispatcher,
    scheduler_passes,
)
from herald.journal.tables import maintenance_runs
from herald.journal.tasks.queue import tasks_key
from tests.maintenance import Maint, maint_env

pytestmark = pytest.mark.integration

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
async def maint(unique: str, migrated_database: str) -> AsyncIterator[Maint]:
    async for env in maint_env(unique):
        yield env


def whole(at: datetime) -> datetime:
    """``at`` without its fraction of a second: the base for counting per-second ticks."""
    return at.replace(microsecond=0)


def frozen(at: datetime) -> list[datetime]:
    """A clock that tells ``box[0]``; tests move it by assigning."""
    return [at]


async def count_runs(maint: Maint, job_id: int) -> int:
    async with maint.engine.connect() as conn:
        q = select(func.count()).where(maintenance_runs.c.job_id == job_id)
        return int((await conn.execute(q)).scalar_one())


async def test_three_schedulers_claim_each_tick_exactly_once(maint: Maint):
    job = await maint.job("every-second", schedule_cron="* * * * * *")
    now = whole(job.updated_at) + timedelta(seconds=5.5)
    schedulers = [maint.scheduler(clock=lambda: now) for _ in range(3)]
    reports = await asyncio.gather(*(s.run_pass() for s in schedulers))
    claimed = [run for report in reports for run in report.runs if run.job_id == job.id]
    ticks = [run.scheduled_for for run in claimed]
    assert len(ticks) == len(set(ticks)) == 5  # each second once, by one of the three
    assert await count_runs(maint, job.id) == 5
    # One runs; the ticks due while it runs are skipped, never started alongside it.
    assert sorted(run.status for run in claimed) == ["running"] + ["skipped"] * 4
    assert await maint.redis.xlen(tasks_key(maint.name)) == 1


async def test_a_job_still_running_is_not_started_again(maint: Maint):
    job = await maint.job("overlap", schedule_cron="* * * * * *")
    clock = frozen(whole(job.updated_at) + timedelta(seconds=1.5))
    scheduler = maint.scheduler(clock=lambda: clock[0])
    (first,) = [r for r in (await scheduler.run_pass()).runs if r.job_id == job.id]
    assert first.status == "running"
    clock[0] += timedelta(seconds=1)
    (second,) = [r for r in (await scheduler.run_pass()).runs if r.job_id == job.id]
    assert second.status == "skipped" and "still running" in (second.message or "")
    with pytest.raises(JobRunning):
        await maint.store.start_manual(job.key, dispatcher(maint.tasks, maint.settings))
    await maint.store.finish(first.id, "success", result={})
    clock[0] += timedelta(seconds=1)
    (third,) = [r for r in (await scheduler.run_pass()).runs if r.job_id == job.id]
    assert third.status == "running"


async def test_a_claim_whose_enqueue_fails_is_rolled_back(maint: Maint):
    job = await maint.job("no-queue", schedule_cron="0 3 * * *")
    tick = datetime(2027, 1, 1, 3, 0, tzinfo=UTC)
    enqueued: list[Run] = []

    async def enqueue_then_fail(run: Run) -> None:
        await dispatcher(maint.tasks, maint.settings)(run)
        enqueued.append(run)
        raise ConnectionError("the queue went away")

    with pytest.raises(DispatchFailed, match="the queue went away"):
        await maint.store.claim_tick(job, tick, enqueue_then_fail)
    assert await count_runs(maint, job.id) == 0  # the tick is still free
    again = await maint.store.claim_tick(job, tick, dispatcher(maint.tasks, maint.settings))
    assert again is not None and again.status == "running"
    # The task of the rolled-back claim finds no run and does nothing; the real one runs.
    await maint.worker().run_until_idle()
    assert (await maint.store.run(enqueued[0].id)) is None
    done = await maint.store.run(again.id)
    assert done is not None and done.status == "success"
    events = await maint.events()
    assert [t for t, d in events if d["run_id"] == str(enqueued[0].id)] == []


async def test_the_worker_runs_a_claimed_run_and_publishes_its_events(maint: Maint):
    job = await maint.job("worked", schedule_cron="* * * * * *", params={"sleep_s": 0.3})
    after = await maint.topic_position()
    clock = frozen(whole(job.updated_at) + timedelta(seconds=1.5))
    (run,) = [r for r in (await maint.scheduler(clock=lambda: clock[0]).run_pass()).runs]
    await maint.worker().run_until_idle()
    done = await maint.store.run(run.id)
    assert done is not None and done.status == "success" and done.result == {"slept_s": 0.3}
    assert done.started_at is not None and done.finished_at is not None
    assert done.duration_s is not None and done.duration_s >= 0.3
    assert done.heartbeat_at > run.heartbeat_at  # it heartbeat while it slept
    events = await maint.events(after)
    assert [t for t, _ in events] == ["maintenance.run.started", "maintenance.run.completed"]
    for _, data in events:
        assert data["run_id"] == str(run.id) and data["key"] == job.key
        assert data["trigger"] == "scheduled"
        assert data["scheduled_for"] == run.to_json()["scheduled_for"]
    assert events[1][1]["result"] == {"slept_s": 0.3} and events[1][1]["status"] == "success"
    # A task delivered again (as after a lost worker) publishes the outcome once more
    # under the same idempotency key: stored once.
    await dispatcher(maint.tasks, maint.settings)(done)
    await maint.worker().run_until_idle()
    assert [t for t, _ in await maint.events(after)] == [
        "maintenance.run.started",
        "maintenance.run.completed",
    ]


@pytest.mark.parametrize(
    ("job_type", "params", "code"),
    [
        ("no_such_type", {}, "unknown_job_type"),
        ("noop", {"sleep_s": "soon"}, "invalid_params"),
    ],
)
async def test_a_failing_run_is_failed_with_a_code(
    maint: Maint, job_type: str, params: dict[str, object], code: str
):
    job = await maint.job("fails", job_type, params=params)
    after = await maint.topic_position()
    run = await maint.store.start_manual(job.key, dispatcher(maint.tasks, maint.settings))
    await maint.worker().run_until_idle()
    done = await maint.store.run(run.id)
    assert done is not None and done.status == "failed" and done.trigger == "manual"
    assert done.result is not None and done.result["error"]["code"] == code
    types = [(t, d.get("code")) for t, d in await maint.events(after)]
    assert types == [("maintenance.run.started", None), ("maintenance.run.failed", code)]


async def test_a_run_whose_heartbeat_stops_is_failed_as_abandoned(maint: Maint):
    job = await maint.job("lost")
    after = await maint.topic_position()
    run = await maint.store.start_manual(job.key, dispatcher(maint.tasks, maint.settings))
    scheduler = maint.scheduler(maintenance_stale_s=0.3)  # no worker: nobody heartbeats
    async with asyncio.timeout(30):
        while not [r for r in (await scheduler.run_pass()).reaped if r.id == run.id]:
            pass
    done = await maint.store.run(run.id)
    assert done is not None and done.status == "failed" and done.message == "abandoned"
    events = await maint.events(after)
    assert [(t, d["code"]) for t, d in events] == [("maintenance.run.failed", "abandoned")]
    # Its task, delivered late, does not run it after all.
    await maint.worker().run_until_idle()
    again = await maint.store.run(run.id)
    assert again is not None and again.status == "failed" and again.started_at is None


async def test_a_scheduled_run_whose_heartbeat_stops_is_failed_as_abandoned(maint: Maint):
    # A run claimed by the scheduler starts with a JSON null result: reaping it must
    # still give an object with the error (null || object would be an array, and the
    # scheduler's own pass failed on it).
    job = await maint.job("lost-tick", schedule_cron="* * * * * *")
    after = await maint.topic_position()
    now = whole(job.updated_at) + timedelta(seconds=1.5)
    scheduler = maint.scheduler(clock=lambda: now, maintenance_stale_s=0.3)
    claimed = [r for r in (await scheduler.run_pass()).runs if r.job_id == job.id]
    assert [r.status for r in claimed] == ["running"]
    async with asyncio.timeout(30):
        while not [r for r in (await scheduler.run_pass()).reaped if r.id == claimed[0].id]:
            pass
    done = await maint.store.run(claimed[0].id)
    assert done is not None and done.status == "failed"
    assert done.result == {"error": {"code": "abandoned", "message": "abandoned"}}
    events = [(t, d.get("code")) for t, d in await maint.events(after)]
    assert ("maintenance.run.failed", "abandoned") in events
    await scheduler.run_pass()  # and the scheduler goes on


async def test_spring_forward_and_fall_back_run_0230_berlin_once_each(maint: Maint):
    job = await maint.job("dst", schedule_cron="30 2 * * *", timezone="Europe/Berlin")
    clock = frozen(job.updated_at)
    scheduler = maint.scheduler(clock=lambda: clock[0])
    ran: dict[str, list[str]] = {}
    for night in ("2027-03-28", "2027-10-31"):  # the changes after the job was created
        # The evening before (the months in between are recorded as one skipped tick),
        # then a pass every 10 minutes through the night until 06:00.
        clock[0] = datetime.fromisoformat(f"{night}T00:00:00+01:00") - timedelta(hours=3)
        runs: list[Run] = []
        for _ in range(9 * 6):
            for run in (await scheduler.run_pass()).runs:
                await maint.store.finish(run.id, "success", result={})
                if run.job_id == job.id:  # the seeded jobs are due in the same night
                    runs.append(run)
            clock[0] += timedelta(minutes=10)
        assert [r.status for r in runs] == ["skipped", "running"]
        ran[night] = [r.scheduled_for.astimezone(BERLIN).isoformat() for r in runs[1:]]
    assert ran == {
        "2027-03-28": ["2027-03-28T03:00:00+02:00"],  # 02:30 does not exist that night
        "2027-10-31": ["2027-10-31T02:30:00+02:00"],  # the first 02:30, not the second
    }


async def test_a_tick_missed_while_down_runs_once_if_young_else_is_skipped(maint: Maint):
    job = await maint.job("catch-up", schedule_cron="0 * * * *")
    hour = job.updated_at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    # Down from before the next hourly tick until 40 minutes after it.
    clock = frozen(hour + timedelta(minutes=40))
    scheduler = maint.scheduler(clock=lambda: clock[0], scheduler_catchup_s=3600)
    (run,) = (await scheduler.run_pass()).runs
    assert run.scheduled_for == hour and run.status == "running"
    assert run.message is not None and run.message.startswith("catch-up")
    assert (await scheduler.run_pass()).runs == []  # once
    await maint.store.finish(run.id, "success", result={})
    # Down again for three ticks; the newest is 30 minutes old: older than a window of 10.
    clock[0] = hour + timedelta(hours=3, minutes=30)
    scheduler = maint.scheduler(clock=lambda: clock[0], scheduler_catchup_s=600)
    (skipped,) = (await scheduler.run_pass()).runs
    assert skipped.status == "skipped" and skipped.scheduled_for == hour + timedelta(hours=3)
    assert "catch-up window" in (skipped.message or "")
    assert skipped.result is not None and skipped.result["missed_from"]


async def test_a_scheduler_records_its_passes_for_readiness(maint: Maint):
    scheduler = maint.scheduler(scheduler_id=f"{maint.name}-scheduler")
    task = asyncio.create_task(scheduler.run())
    try:
        name = f"{maint.name}-scheduler"
        async with asyncio.timeout(30):
            while name not in (passes := await scheduler_passes(maint.redis)):
                pass  # each check is a round trip to Redis
        assert abs(passes[name] / 1000 - datetime.now(UTC).timestamp()) < 30
    finally:
        scheduler.request_stop()
        await asyncio.wait_for(task, 30)
