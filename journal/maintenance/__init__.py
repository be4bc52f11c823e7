"""Maintenance jobs and runs: the values, the schedule, the store, the events.

Shared by the API (reads, manual runs) and the workers (the scheduler claims
ticks, a worker executes a run); see ``store`` for how a tick runs exactly once.
"""

from herald.journal.maintenance.cutoff import Cutoff, NaiveDatetime, require_aware, utc_now
from herald.journal.maintenance.events import (
    RUN_TASK_KIND,
    SCHEDULERS_KEY,
    TASK_OWNER,
    TOPIC,
    dispatcher,
    publish_job_event,
    publish_run_event,
    record_scheduler_pass,
    run_event,
    scheduler_passes,
    try_publish_run_event,
)
from herald.journal.maintenance.models import FINISHED, STATUSES, TRIGGERS, Job, Run
from herald.journal.maintenance.schedule import InvalidSchedule, InvalidTimezone, Schedule
from herald.journal.maintenance.store import (
    DispatchFailed,
    JobRunning,
    MaintenanceStore,
    UnknownJob,
)

__all__ = [
    "FINISHED",
    "RUN_TASK_KIND",
    "SCHEDULERS_KEY",
    "STATUSES",
    "TASK_OWNER",
    "TOPIC",
    "TRIGGERS",
    "Cutoff",
    "DispatchFailed",
    "InvalidSchedule",
    "InvalidTimezone",
    "Job",
    "JobRunning",
    "MaintenanceStore",
    "NaiveDatetime",
    "Run",
    "Schedule",
    "UnknownJob",
    "dispatcher",
    "publish_job_event",
    "publish_run_event",
    "record_scheduler_pass",
    "require_aware",
    "run_event",
    "scheduler_passes",
    "try_publish_run_event",
    "utc_now",
]
