"""Maintenance jobs and runs as values, and the JSON both the API and the
``maintenance.run.*`` events show of them (one place, so they never disagree)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from herald.journal.envelope import format_time
from herald.journal.maintenance.cutoff import utc_now
from herald.journal.maintenance.schedule import InvalidSchedule, InvalidTimezone, Schedule

__all__ = [
    "FINISHED",
    "STATUSES",
    "TRIGGERS",
    "Job",
    "Run",
    "RunStatus",
    "Trigger",
]

Trigger = Literal["scheduled", "manual"]
# `skipped` is a tick that was decided but not run: missed while no scheduler ran and
# older than the catch-up window, or due while the job's previous run still ran.
# Recording it under the same UNIQUE (job, tick) key keeps that decision exactly-once
# too, and shows in the history why a tick has no result.
RunStatus = Literal["running", "success", "failed", "skipped"]
TRIGGERS: Final = ("scheduled", "manual")
STATUSES: Final = ("running", "success", "failed", "skipped")
FINISHED: Final = frozenset({"success", "failed", "skipped"})


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    key: str
    job_type: str
    schedule_cron: str | None
    timezone: str
    enabled: bool
    visible_in_ui: bool
    params: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @property
    def schedule(self) -> Schedule | None:
        """The parsed schedule; None without one, or when the stored one no longer
        parses (e.g. a time zone the system lost): such a job is never due."""
        if self.schedule_cron is None:
            return None
        try:
            return Schedule(self.schedule_cron, self.timezone)
        except (InvalidSchedule, InvalidTimezone):
            return None

    def next_run_at(self, now: datetime | None = None) -> datetime | None:
        """When the scheduler will next run it (UTC), or None (disabled, no schedule)."""
        schedule = self.schedule
        if not self.enabled or schedule is None:
            return None
        return schedule.next_after(now or utc_now())

    def to_json(
        self, *, now: datetime | None = None, last_run: Run | None = None
    ) -> dict[str, Any]:
        return {
            "key": self.key,
            "job_type": self.job_type,
            "schedule_cron": self.schedule_cron,
            "timezone": self.timezone,
            "enabled": self.enabled,
            "visible_in_ui": self.visible_in_ui,
            "params": self.params,
            "next_run_at": _time(self.next_run_at(now)),
            "last_run": last_run.to_json() if last_run is not None else None,
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class Run:
    id: uuid.UUID
    job_id: int
    job_key: str
    job_type: str
    trigger: Trigger
    scheduled_for: datetime | None
    status: RunStatus
    message: str | None
    result: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime

    @property
    def duration_s(self) -> float | None:
        """Started to finished (so far, while running); None before it started."""
        if self.started_at is None:
            return None
        end = self.finished_at or utc_now()
        return round(max(0.0, (end - self.started_at).total_seconds()), 3)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "job": self.job_key,
            "job_type": self.job_type,
            "trigger": self.trigger,
            "scheduled_for": _time(self.scheduled_for),
            "status": self.status,
            "message": self.message,
            "result": self.result,
            "created_at": format_time(self.created_at),
            "started_at": _time(self.started_at),
            "finished_at": _time(self.finished_at),
            "heartbeat_at": format_time(self.heartbeat_at),
            "duration_s": self.duration_s,
        }

    def event_data(self) -> dict[str, Any]:
        """What every ``maintenance.run.*`` envelope carries about the run."""
        view = self.to_json()
        view["run_id"] = view.pop("id")
        view["key"] = view.pop("job")
        return view
