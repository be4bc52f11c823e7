"""The maintenance HTTP API on the app with real Redis and PostgreSQL: who may
read and change what, schedule validation with the parser's reason, manual runs
(202, then 409 while running) executed by the worker runtime, the run history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from herald.api.app import create_app
from herald.api.auth import Authenticator
from herald.api.maintenance import JobView, RunStarted, RunView
from herald.api.state import open_state
from herald.journal.runtime.settings import Settings
from tests.maintenance import Maint, maint_env
from tests.servers import TEST_SECRET

pytestmark = pytest.mark.integration

BASE = "http://herald.test"


@dataclass
class Api:
    http: httpx.AsyncClient
    maint: Maint
    admin: dict[str, str]
    user: dict[str, str]


@pytest.fixture
async def api(unique: str, migrated_database: str) -> AsyncIterator[Api]:
    async for maint in maint_env(unique):
        settings = maint.settings.model_copy(update={"jwt_secret": TEST_SECRET})
        settings = Settings.model_validate(settings.model_dump())
        auth = Authenticator(settings)
        async with (
            open_state(settings, auth) as state,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(settings, state=state)),
                base_url=BASE,
            ) as http,
        ):
            yield Api(
                http,
                maint,
                {"Authorization": f"Bearer {auth.issue(f'{unique}-admin', ('admin',), 600)}"},
                {"Authorization": f"Bearer {auth.issue(f'{unique}-user', (), 600)}"},
            )


async def test_jobs_lists_visible_jobs_with_their_next_run(api: Api):
    r = await api.http.get("/api/maintenance/jobs", headers=api.user)
    assert r.status_code == 200, r.text
    jobs = {j["key"]: JobView.model_validate(j) for j in r.json()["jobs"]}
    nightly = jobs["retention_cleanup_nightly"]
    assert nightly.job_type == "retention_cleanup" and nightly.schedule_cron == "0 3 * * *"
    assert nightly.enabled and nightly.timezone == "UTC"
    assert nightly.next_run_at is not None
    assert (nightly.next_run_at.hour, nightly.next_run_at.minute) == (3, 0)
    assert timedelta(0) < nightly.next_run_at - datetime.now(UTC) <= timedelta(days=1)
    assert r.json()["jobs"][0]["next_run_at"].endswith("Z")
    assert "retention_cleanup_manual" not in jobs  # hidden from the UI


async def test_hidden_jobs_are_listed_for_admins_only(api: Api):
    for which in ("false", "all"):
        r = await api.http.get(f"/api/maintenance/jobs?visible_in_ui={which}", headers=api.user)
        assert (r.status_code, r.json()["error"]) == (403, "role_missing")
    r = await api.http.get("/api/maintenance/jobs?visible_in_ui=false", headers=api.admin)
    keys = [j["key"] for j in r.json()["jobs"]]
    assert "retention_cleanup_manual" in keys and "retention_cleanup_nightly" not in keys
    manual = next(j for j in r.json()["jobs"] if j["key"] == "retention_cleanup_manual")
    assert manual["schedule_cron"] is None and manual["next_run_at"] is None
    r = await api.http.get("/api/maintenance/jobs?visible_in_ui=maybe", headers=api.admin)
    assert (r.status_code, r.json()["error"]) == (400, "bad_filter")
    r = await api.http.get("/api/maintenance/jobs")
    assert r.status_code == 401


async def test_patch_validates_the_schedule_with_the_parsers_reason(api: Api):
    job = await api.maint.job("patched", schedule_cron="0 3 * * *")
    url = f"/api/maintenance/jobs/{job.key}"
    r = await api.http.patch(url, json={"enabled": False}, headers=api.user)
    assert (r.status_code, r.json()["error"]) == (403, "role_missing")
    r = await api.http.patch(url, json={"schedule_cron": "61 * * * *"}, headers=api.admin)
    assert (r.status_code, r.json()["error"]) == (422, "invalid_schedule")
    assert "Bad minute" in r.json()["detail"]
    r = await api.http.patch(url, json={"timezone": "Mars/Olympus"}, headers=api.admin)
    assert (r.status_code, r.json()["error"]) == (422, "invalid_timezone")
    for body in ({}, {"enabled": None}, {"colour": "red"}, {"enabled": "yes"}):
        r = await api.http.patch(url, json=body, headers=api.admin)
        assert (r.status_code, r.json()["error"]) == (422, "invalid_body"), body
    r = await api.http.patch(
        "/api/maintenance/jobs/nope", json={"enabled": 1 == 1}, headers=api.admin
    )
    assert (r.status_code, r.json()["error"]) == (404, "job_not_found")

    change = {"schedule_cron": "30 2 * * *", "timezone": "Europe/Berlin", "params": {"sleep_s": 1}}
    r = await api.http.patch(url, json=change, headers=api.admin)
    assert r.status_code == 200, r.text
    view = JobView.model_validate(r.json())
    assert (view.schedule_cron, view.timezone, view.params) == (
        "30 2 * * *",
        "Europe/Berlin",
        {"sleep_s": 1},
    )
    assert view.next_run_at is not None
    assert view.updated_at > job.updated_at
    r = await api.http.patch(url, json={"enabled": False, "schedule_cron": None}, headers=api.admin)
    assert (r.json()["enabled"], r.json()["schedule_cron"], r.json()["next_run_at"]) == (
        False,
        None,
        None,
    )
    events = await api.maint.events()
    assert [t for t, _ in events] == ["maintenance.job.updated"] * 2


async def test_run_now_answers_202_then_409_until_the_run_finished(api: Api):
    job = await api.maint.job("manual")
    url = f"/api/maintenance/jobs/{job.key}/run"
    r = await api.http.post(url, headers=api.user)
    assert (r.status_code, r.json()["error"]) == (403, "role_missing")
    r = await api.http.post(url, headers=api.admin)
    assert r.status_code == 202, r.text
    started = RunStarted.model_validate(r.json())
    assert started.status_url == f"/api/maintenance/runs/{started.run_id}"
    r = await api.http.post(url, headers=api.admin)
    assert (r.status_code, r.json()["error"]) == (409, "job_running")
    r = await api.http.get(started.status_url, headers=api.user)
    assert r.json()["status"] == "running" and r.json()["trigger"] == "manual"

    await api.maint.worker().run_until_idle()
    r = await api.http.get(started.status_url, headers=api.user)
    run = RunView.model_validate(r.json())
    assert (run.status, run.job, run.scheduled_for, run.result) == (
        "success",
        job.key,
        None,
        {"slept_s": 0},
    )
    assert run.duration_s is not None and run.finished_at is not None

    second = (await api.http.post(url, headers=api.admin)).json()["run_id"]
    await api.maint.worker().run_until_idle()
    r = await api.http.get(f"/api/maintenance/runs?job={job.key}", headers=api.user)
    assert [x["id"] for x in r.json()["runs"]] == [second, str(started.run_id)]  # newest first
    r = await api.http.get(f"/api/maintenance/runs?job={job.key}&limit=1", headers=api.user)
    assert [x["id"] for x in r.json()["runs"]] == [second]
    r = await api.http.get(f"/api/maintenance/jobs/{job.key}", headers=api.user)
    assert r.json()["last_run"]["id"] == second
    for bad in ("0", "501", "ten"):
        r = await api.http.get(f"/api/maintenance/runs?limit={bad}", headers=api.user)
        assert (r.status_code, r.json()["error"]) == (400, "bad_limit")
    for missing in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        r = await api.http.get(f"/api/maintenance/runs/{missing}", headers=api.user)
        assert (r.status_code, r.json()["error"]) == (404, "run_not_found")
    r = await api.http.post("/api/maintenance/jobs/nope/run", headers=api.admin)
    assert (r.status_code, r.json()["error"]) == (404, "job_not_found")


async def test_run_retention_now_runs_the_hidden_manual_job(api: Api):
    # The seeded job is shared: a run another test started and left to no worker
    # would make this one a 409.
    for left in await api.maint.store.runs(job="retention_cleanup_manual", limit=10):
        if left.status == "running":
            await api.maint.store.finish(left.id, "failed", message="left by an earlier test")
    r = await api.http.post("/api/maintenance/retention/run", headers=api.user)
    assert r.status_code == 403
    r = await api.http.post("/api/maintenance/retention/run", headers=api.admin)
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    await api.maint.worker().run_until_idle()
    run = (await api.http.get(f"/api/maintenance/runs/{run_id}", headers=api.user)).json()
    assert (run["job"], run["job_type"], run["status"]) == (
        "retention_cleanup_manual",
        "retention_cleanup",
        "success",
    )
    assert set(run["result"]["parts"]) >= {"message_events_retention", "stream_retention"}
