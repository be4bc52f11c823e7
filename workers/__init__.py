"""The task runtime: the worker, what a task author writes against, the built-in kinds.

The names below are imported on first use, so importing the package (or one of its
modules) costs no more than that module."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herald.workers.kinds import default_registry, register_builtin
    from herald.workers.runtime import Worker
    from herald.workers.task import (
        DEFERRED,
        Deferred,
        TaskContext,
        TaskError,
        TaskFn,
        TaskRegistry,
        TaskSpec,
    )

__all__ = [
    "DEFERRED",
    "Deferred",
    "TaskContext",
    "TaskError",
    "TaskFn",
    "TaskRegistry",
    "TaskSpec",
    "Worker",
    "default_registry",
    "register_builtin",
]

# Where each name lives, imported on first use.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "kinds": ("default_registry", "register_builtin"),
    "runtime": ("Worker",),
    "task": (
        "DEFERRED",
        "Deferred",
        "TaskContext",
        "TaskError",
        "TaskFn",
        "TaskRegistry",
        "TaskSpec",
    ),
}
_HOMES = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
