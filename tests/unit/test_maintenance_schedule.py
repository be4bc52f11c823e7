"""Schedules, the scheduler's planning and retention cutoffs: pure, no services.

DST: a job at 02:30 Europe/Berlin runs once on the spring-forward day (at 03:00,
the first minute after the jump) and once on the fall-back day (the first 02:30),
whether the scheduler passes every minute, every 10 minutes or at odd moments —
time is frozen at each pass and handed to ``plan``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from herald.journal.maintenance import Cutoff, NaiveDatetime, Schedule
from herald.journal.maintenance.schedule import InvalidSchedule, InvalidTimezone
from herald.workers.maintenance.scheduler import ON_TIME_S, plan

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def simulate(schedule: Schedule, start: datetime, end: datetime, step: timedelta) -> list:
    """Passes from ``start`` to ``end`` every ``step`` (time frozen at each), as the
    scheduler runs them: each pass plans from the newest claimed tick."""
    reference, claimed, now = start, [], start
    while now <= end:
        for decision in plan(schedule, reference, now, catchup_s=3600):
            claimed.append(decision)
            reference = max(reference, decision.tick)
        now += step
    return claimed


# Passes every minute, every ~10 minutes, and hourly (each tick then runs as a
# catch-up, more than a minute late).
STEPS = [60, 599, 3599]


@pytest.mark.parametrize("step_s", STEPS)
def test_spring_forward_day_runs_the_skipped_0230_once_at_0300(step_s: int):
    schedule = Schedule("30 2 * * *", "Europe/Berlin")
    start, end = at("2026-03-28T23:00:00+01:00"), at("2026-03-30T03:00:00+02:00")
    decisions = simulate(schedule, start, end, timedelta(seconds=step_s))
    assert all(d.skip is None for d in decisions)
    assert [d.tick.astimezone(BERLIN).isoformat() for d in decisions] == [
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist that night
        "2026-03-30T02:30:00+02:00",
    ]


@pytest.mark.parametrize("step_s", STEPS)
def test_fall_back_day_runs_the_repeated_0230_once(step_s: int):
    schedule = Schedule("30 2 * * *", "Europe/Berlin")
    start, end = at("2026-10-24T23:00:00+02:00"), at("2026-10-26T03:00:00+01:00")
    decisions = simulate(schedule, start, end, timedelta(seconds=step_s))
    assert [d.tick.astimezone(BERLIN).isoformat() for d in decisions] == [
        "2026-10-25T02:30:00+02:00",  # the first 02:30 (summer time); not again at +01:00
        "2026-10-26T02:30:00+01:00",
    ]


def test_a_pass_inside_the_repeated_hour_does_not_run_the_tick_again():
    schedule = Schedule("30 2 * * *", "Europe/Berlin")
    first = at("2026-10-25T02:30:00+02:00")
    # 02:45 winter time, i.e. after the summer 02:30 already ran and the clock went back.
    now = at("2026-10-25T02:45:00+01:00")
    assert plan(schedule, first, now, catchup_s=3600) == []
    assert list(schedule.ticks(first, now)) == []


def test_a_fixed_seconds_field_keeps_the_dst_rules():
    schedule = Schedule("15 30 2 * * *", "Europe/Berlin")
    ticks = list(schedule.ticks(at("2026-03-28T12:00:00+01:00"), at("2026-03-29T12:00:00+02:00")))
    assert [t.astimezone(BERLIN).isoformat() for t in ticks] == ["2026-03-29T03:00:15+02:00"]


def test_a_seconds_field_ticks_every_second():
    schedule = Schedule("* * * * * *")
    start = at("2026-05-01T00:00:00.500+00:00")
    ticks = list(schedule.ticks(start, start + timedelta(seconds=5)))
    assert [t.second for t in ticks] == [1, 2, 3, 4, 5]
    assert schedule.next_after(start) == at("2026-05-01T00:00:01+00:00")


@pytest.mark.parametrize(
    ("cron", "reason"),
    [
        ("61 * * * *", "Bad minute"),
        ("* 24 * * *", "Bad hour"),
        ("0 0 30 2 *", "Bad day-of-month"),
        ("* * * * * * *", "expected 5 fields"),
        ("nightly", "expected 5 fields"),
    ],
)
def test_a_bad_cron_expression_names_the_parsers_reason(cron: str, reason: str):
    with pytest.raises(InvalidSchedule, match=reason):
        Schedule(cron)


def test_an_unknown_time_zone_is_refused():
    with pytest.raises(InvalidTimezone, match="Mars/Olympus"):
        Schedule("0 3 * * *", "Mars/Olympus")
    with pytest.raises(InvalidTimezone):
        Schedule("0 3 * * *", "../etc/passwd")


def test_plan_runs_each_on_time_tick_even_when_the_scheduler_is_late():
    schedule = Schedule("* * * * * *")
    reference = at("2026-05-01T00:00:00+00:00")
    decisions = plan(schedule, reference, reference + timedelta(seconds=3.2), catchup_s=3600)
    assert [(d.tick.second, d.skip) for d in decisions] == [(1, None), (2, None), (3, None)]


def test_a_missed_tick_within_the_catch_up_window_runs_once():
    schedule = Schedule("0 3 * * *")
    reference = at("2026-05-01T03:00:00+00:00")  # the last recorded tick
    now = at("2026-05-02T03:40:00+00:00")  # everything was down at 03:00
    (decision,) = plan(schedule, reference, now, catchup_s=3600)
    assert decision.tick == at("2026-05-02T03:00:00+00:00")
    assert decision.skip is None and decision.note is not None and "catch-up" in decision.note


def test_a_missed_tick_older_than_the_catch_up_window_is_recorded_skipped():
    schedule = Schedule("0 3 * * *")
    reference = at("2026-05-01T03:00:00+00:00")
    now = at("2026-05-04T05:00:00+00:00")  # three ticks missed, the newest 2 h ago
    (decision,) = plan(schedule, reference, now, catchup_s=3600)
    assert decision.tick == at("2026-05-04T03:00:00+00:00")  # only the newest is recorded
    assert decision.skip is not None and "catch-up window" in decision.skip
    assert decision.result == {
        "missed_from": "2026-05-02T03:00:00.000Z",
        "missed_until": "2026-05-04T03:00:00.000Z",
    }


def test_many_missed_ticks_collapse_into_one_catch_up_run():
    schedule = Schedule("*/5 * * * *")
    reference = at("2026-05-01T00:00:00+00:00")
    now = at("2026-05-01T00:32:00+00:00")  # six ticks missed; the newest (00:30) is 2 min old
    (decision,) = plan(schedule, reference, now, catchup_s=3600)
    assert decision.tick == at("2026-05-01T00:30:00+00:00") and decision.skip is None


def test_a_missed_tick_followed_by_an_on_time_one_is_skipped_for_it():
    schedule = Schedule("* * * * * *")
    reference = at("2026-05-01T00:00:00+00:00")
    now = reference + timedelta(seconds=ON_TIME_S + 2.5)
    decisions = plan(schedule, reference, now, catchup_s=3600)
    missed, *on_time = decisions
    assert missed.skip is not None and "a newer tick runs" in missed.skip
    assert [d.skip for d in on_time] == [None] * len(on_time)
    assert len(on_time) == int(ON_TIME_S)


def test_nothing_is_due_before_the_first_tick():
    schedule = Schedule("0 3 * * *")
    assert (
        plan(schedule, at("2026-05-01T03:00:00+00:00"), at("2026-05-02T02:59:59+00:00"), 3600) == []
    )


def test_naive_datetimes_are_refused_everywhere():
    naive = datetime(2026, 5, 1, 3, 0)  # noqa: DTZ001 - the point of the test
    aware = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
    with pytest.raises(NaiveDatetime, match="naive"):
        Cutoff(naive)
    with pytest.raises(NaiveDatetime):
        Cutoff.older_than(60, naive)
    with pytest.raises(NaiveDatetime):
        Cutoff(aware).expired(naive)
    with pytest.raises(NaiveDatetime):
        plan(Schedule("0 3 * * *"), naive, aware, 3600)
    with pytest.raises(NaiveDatetime):
        list(Schedule("0 3 * * *").ticks(aware, naive))


def test_a_cutoff_is_an_instant_whatever_zone_it_was_given_in():
    berlin = datetime(2026, 7, 1, 5, 0, tzinfo=BERLIN)  # 03:00 UTC
    cutoff = Cutoff(berlin)
    assert cutoff.at == datetime(2026, 7, 1, 3, 0, tzinfo=UTC)
    assert cutoff.expired(datetime(2026, 7, 1, 2, 59, tzinfo=UTC))
    assert not cutoff.expired(datetime(2026, 7, 1, 5, 1, tzinfo=BERLIN))  # 03:01 UTC
    assert cutoff.min_stream_id == f"{int(cutoff.at.timestamp() * 1000)}-0"
    assert Cutoff.older_than(3600, berlin).at == datetime(2026, 7, 1, 2, 0, tzinfo=UTC)
