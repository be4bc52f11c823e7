"""Progress throttling: one event per percent, at most 10 a second, 100 % always."""

from __future__ import annotations

import pytest

from herald.workers._progress import ProgressThrottle


def _sent(calls: list[tuple[int, int, float]]) -> list[tuple[int, int]]:
    throttle = ProgressThrottle()
    return [(c, t) for c, t, now in calls if throttle.allow(c, t, now)]


@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        # Same percent twice: the second is dropped even much later.
        ([(1, 100, 0.0), (1, 100, 5.0)], [(1, 100)]),
        # Sub-percent steps of a large total: one event per whole percent.
        ([(i, 1000, i * 1.0) for i in range(25)], [(0, 1000), (10, 1000), (20, 1000)]),
        # A new percent within 100 ms of the last event is dropped ...
        ([(1, 100, 0.0), (2, 100, 0.05), (3, 100, 0.1)], [(1, 100), (3, 100)]),
        # ... but 100 % always goes through, once.
        ([(1, 100, 0.0), (100, 100, 0.01), (100, 100, 0.5)], [(1, 100), (100, 100)]),
        # Going backwards is not news; a changed total starts a new series.
        ([(50, 100, 0.0), (40, 100, 1.0), (1, 10, 2.0)], [(50, 100), (1, 10)]),
        # No usable total: only changes of `current`, rate-limited.
        (
            [(1, 0, 0.0), (1, 0, 1.0), (2, 0, 1.0), (3, 0, 1.05), (4, 0, 1.2)],
            [(1, 0), (2, 0), (4, 0)],
        ),
        # Past the total counts as 100 %.
        ([(120, 100, 0.0)], [(120, 100)]),
    ],
)
def test_throttle(calls, expected):
    assert _sent(calls) == expected


def test_a_fast_loop_sends_at_most_ten_a_second_and_the_end():
    throttle = ProgressThrottle()
    # 10,000 steps over 2 simulated seconds.
    sent = [i for i in range(10001) if throttle.allow(i, 10000, i * 0.0002)]
    assert sent[-1] == 10000
    assert len(sent) <= 2 * 10 + 2
