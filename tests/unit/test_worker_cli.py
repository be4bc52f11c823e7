"""``herald worker --tasks MODULE[:FUNCTION]`` and the worker commands' arguments."""

from __future__ import annotations

import pytest

from herald.cli import _parser
from herald.workers.commands import TasksOptionError, load_tasks
from herald.workers.kinds import default_registry


def test_tasks_option_adds_the_kinds_of_a_module():
    registry = default_registry()
    load_tasks(registry, ["tests.worker_kinds"])
    assert {"herald.noop", "test.gate", "test.flaky"} <= set(registry.kinds())


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("tests.no_such_module", "cannot import"),
        ("tests.worker_kinds:nothing", "has no function nothing"),
        ("workers.kinds:register_builtin", "registered twice"),  # herald.noop again
    ],
)
def test_tasks_option_errors_say_what_is_wrong(spec: str, problem: str):
    with pytest.raises(TasksOptionError, match=problem):
        load_tasks(default_registry(), [spec])


def test_worker_and_tasks_arguments():
    args = _parser().parse_args(["worker", "--queue", "a", "--queue", "b", "--concurrency", "8"])
    assert (args.queue, args.concurrency, args.tasks) == (["a", "b"], 8, [])
    args = _parser().parse_args(["tasks", "retry", "abc"])
    assert (args.task_id, args.queue) == ("abc", None)
    with pytest.raises(SystemExit):
        _parser().parse_args(["worker", "--concurrency", "0"])
