"""Maintenance on the worker runtime: the scheduler that claims ticks, the task
that runs a claimed run, and the job types (retention among them)."""

from herald.workers.maintenance.jobs import (
    JobContext,
    JobError,
    JobFn,
    JobType,
    JobTypes,
    default_job_types,
)
from herald.workers.maintenance.scheduler import Decision, PassReport, Scheduler, plan

__all__ = [
    "Decision",
    "JobContext",
    "JobError",
    "JobFn",
    "JobType",
    "JobTypes",
    "PassReport",
    "Scheduler",
    "default_job_types",
    "plan",
]
