"""Maintenance jobs and runs over HTTP.

Reading (jobs, runs) needs any credential; changing a job or starting a run needs
role ``admin``, and so does listing the jobs hidden from the UI.  Starting a run
answers ``202 {"run_id", "status_url"}`` at once: a worker runs it and the topic
``maintenance`` carries ``maintenance.run.started`` / ``.completed`` / ``.failed``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.api.auth import require_role
from herald.api.errors import ApiError
from herald.api.openapi import UUID_PATH, endpoint
from herald.api.responses import JSONResponse
from herald.api.schemas import parse_body, read_json, whole_number
from herald.api.sources import database_errors_as_503
from herald.api.state import AppState, state_of
from herald.api.uploads import parse_id, require_workers
from herald.journal.base import JournalUnavailable
from herald.journal.maintenance import (
    DispatchFailed,
    MaintenanceStore,
    dispatcher,
    publish_job_event,
)
from herald.journal.maintenance.store import EDITABLE
from herald.journal.tasks.queue import TaskQueueError

__all__ = [
    "JobPatch",
    "JobView",
    "JobsPage",
    "RunStarted",
    "RunView",
    "RunsPage",
    "routes",
]

MANUAL_RETENTION_JOB = "retention_cleanup_manual"
MAX_RUNS = 500
_NO_RUN = ApiError(404, "run_not_found", "no maintenance run with this id")


class JobPatch(BaseModel):
    """``PATCH /api/maintenance/jobs/{key}``: any of these; ``schedule_cron: null``
    removes the schedule (the job then runs only when asked to)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool | None = None
    schedule_cron: str | None = Field(None, min_length=1, max_length=200)
    timezone: str | None = Field(None, min_length=1, max_length=100)
    params: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> JobPatch:
        if not self.model_fields_set:
            raise ValueError(f"give at least one of: {', '.join(sorted(EDITABLE))}")
        for name in ("enabled", "timezone", "params"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class RunView(BaseModel):
    """A run as ``GET /api/maintenance/runs`` shows it; times are RFC 3339 UTC."""

    id: uuid.UUID
    job: str
    job_type: str
    trigger: Literal["scheduled", "manual"]
    scheduled_for: datetime | None
    status: Literal["running", "success", "failed", "skipped"]
    message: str | None
    result: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime
    duration_s: float | None


class JobView(BaseModel):
    key: str
    job_type: str
    schedule_cron: str | None
    timezone: str
    enabled: bool
    visible_in_ui: bool
    params: dict[str, Any]
    next_run_at: datetime | None  # None: disabled or no schedule
    last_run: RunView | None
    created_at: datetime
    updated_at: datetime


class JobsPage(BaseModel):
    jobs: list[JobView]


class RunsPage(BaseModel):
    runs: list[RunView]


class RunStarted(BaseModel):
    run_id: uuid.UUID
    status_url: str


def _storable(key: str) -> bool:
    # PostgreSQL text cannot hold NUL, so such a key can name no job.
    return len(key) <= 200 and "\x00" not in key


def _job_key(request: Request) -> str:
    key: str = request.path_params["key"]
    if not _storable(key):
        raise ApiError(404, "job_not_found", f"no maintenance job {key[:200]!r}")
    return key


def _store(state: AppState) -> MaintenanceStore:
    engine, _ = require_workers(state)
    return MaintenanceStore(engine)


class JobsQuery(BaseModel):
    visible_in_ui: Literal["true", "false", "all"] = Field(
        "true", description="false and all: admins only"
    )


@endpoint(
    "Maintenance jobs",
    {200: JobsPage},
    query=JobsQuery,
    errors=(
        "bad_filter",
        "role_missing",
        "database_unavailable",
        "database_busy",
        "tasks_unavailable",
    ),
    tags=("maintenance",),
)
async def list_jobs(request: Request) -> Response:
    """``?visible_in_ui=true`` (default), ``false`` or ``all`` (the last two: admin)."""
    state = state_of(request)
    principal = await state.principal(request)
    which = request.query_params.get("visible_in_ui", "true")
    if which not in ("true", "false", "all"):
        raise ApiError(400, "bad_filter", "visible_in_ui must be true, false or all")
    if which != "true":
        require_role(principal, "admin")
    visible = None if which == "all" else which == "true"
    async with database_errors_as_503():
        found = await _store(state).jobs(visible=visible)
    return JSONResponse({"jobs": [job.to_json(last_run=last) for job, last in found]})


@endpoint(
    "One maintenance job",
    {200: JobView},
    errors=("job_not_found", "database_unavailable", "database_busy", "tasks_unavailable"),
    tags=("maintenance",),
)
async def get_job(request: Request) -> Response:
    state = state_of(request)
    await state.principal(request)
    key = _job_key(request)
    async with database_errors_as_503():
        found = await _store(state).job_with_last_run(key)
    if found is None:
        raise ApiError(404, "job_not_found", f"no maintenance job {key!r}")
    job, last = found
    return JSONResponse(job.to_json(last_run=last))


@endpoint(
    "Change a job's schedule, time zone, params or enabled state (admin)",
    {200: JobView},
    body=JobPatch,
    errors=(
        "role_missing",
        "job_not_found",
        "invalid_schedule",
        "invalid_timezone",
        "database_unavailable",
        "database_busy",
        "tasks_unavailable",
    ),
    tags=("maintenance",),
)
async def patch_job(request: Request) -> Response:
    """Admin: change ``enabled``, ``schedule_cron`` (validated: 422 with the cron
    parser's reason), ``timezone`` (IANA) or ``params``."""
    state = state_of(request)
    require_role(await state.principal(request), "admin")
    key = _job_key(request)
    body = parse_body(JobPatch, await read_json(request, limit=64 * 1024))
    store = _store(state)
    # UnknownJob, InvalidSchedule and InvalidTimezone map to 404/422 by their code.
    async with database_errors_as_503():
        job = await store.update_job(key, body.changes())
        found = await store.job_with_last_run(key)
    view = job.to_json(last_run=found[1] if found else None)
    await publish_job_event(state.journal, view)
    return JSONResponse(view)


# What starting a run may answer besides 401.
_START_ERRORS = (
    "role_missing",
    "job_not_found",
    "job_running",
    "database_unavailable",
    "database_busy",
    "tasks_unavailable",
)


@endpoint(
    "Start a run now (admin)",
    {202: RunStarted},
    errors=_START_ERRORS,
    tags=("maintenance",),
)
async def run_job(request: Request) -> Response:
    """Admin: start a run now → ``202 {"run_id", "status_url"}``; ``409 job_running``
    while the job has a run in progress."""
    state = state_of(request)
    require_role(await state.principal(request), "admin")
    return await _start(state, _job_key(request))


@endpoint(
    "Run retention now (admin)",
    {202: RunStarted},
    errors=_START_ERRORS,
    tags=("maintenance",),
)
async def run_retention(request: Request) -> Response:
    """Admin: "run retention now" — a run of the hidden ``retention_cleanup_manual``."""
    state = state_of(request)
    require_role(await state.principal(request), "admin")
    return await _start(state, MANUAL_RETENTION_JOB)


async def _start(state: AppState, key: str) -> Response:
    engine, tasks = require_workers(state)
    try:
        async with database_errors_as_503():
            run = await MaintenanceStore(engine).start_manual(
                key, dispatcher(tasks, state.settings)
            )
    except (DispatchFailed, TaskQueueError, JournalUnavailable, RedisError, OSError) as e:
        raise ApiError(
            503, "tasks_unavailable", "the task queue is unavailable; nothing was started"
        ) from e
    body = {"run_id": str(run.id), "status_url": f"/api/maintenance/runs/{run.id}"}
    return JSONResponse(body, status_code=202)


class RunsQuery(BaseModel):
    limit: int = Field(50, ge=1, le=MAX_RUNS, description="runs per page")
    job: str | None = Field(None, description="only this job's runs")


@endpoint(
    "Maintenance runs, newest first",
    {200: RunsPage},
    query=RunsQuery,
    errors=("bad_limit", "database_unavailable", "database_busy", "tasks_unavailable"),
    tags=("maintenance",),
)
async def list_runs(request: Request) -> Response:
    """Newest first: ``?limit=N`` (1..500, default 50), ``?job=KEY``."""
    state = state_of(request)
    await state.principal(request)
    limit = whole_number(request.query_params.get("limit"), "limit", 50, 1, MAX_RUNS)
    job = request.query_params.get("job") or None
    if job is not None and not _storable(job):
        raise ApiError(
            400, "bad_filter", "job must be a job key (printable, at most 200 characters)"
        )
    async with database_errors_as_503():
        found = await _store(state).runs(limit=limit, job=job)
    return JSONResponse({"runs": [run.to_json() for run in found]})


@endpoint(
    "One maintenance run",
    {200: RunView},
    path={"run_id": UUID_PATH},
    errors=("run_not_found", "database_unavailable", "database_busy", "tasks_unavailable"),
    tags=("maintenance",),
)
async def get_run(request: Request) -> Response:
    state = state_of(request)
    await state.principal(request)
    run_id = parse_id(request.path_params["run_id"], _NO_RUN)
    async with database_errors_as_503():
        run = await _store(state).run(run_id)
    if run is None:
        raise _NO_RUN
    return JSONResponse(run.to_json())


routes = [
    Route("/api/maintenance/jobs", list_jobs, methods=["GET"]),
    Route("/api/maintenance/jobs/{key}", get_job, methods=["GET"]),
    Route("/api/maintenance/jobs/{key}", patch_job, methods=["PATCH"]),
    Route("/api/maintenance/jobs/{key}/run", run_job, methods=["POST"]),
    Route("/api/maintenance/runs", list_runs, methods=["GET"]),
    Route("/api/maintenance/runs/{run_id}", get_run, methods=["GET"]),
    Route("/api/maintenance/retention/run", run_retention, methods=["POST"]),
]
