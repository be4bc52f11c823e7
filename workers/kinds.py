"""Every task kind this deployment runs.

Each kind module exposes ``register(registry: TaskRegistry) -> None``; add the
module to ``KIND_MODULES`` below.  ``herald worker --tasks module[:function]`` adds
more kinds at start (tests, plug-ins) without touching this file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from herald.workers import attachments, ingest, oauth
from herald.workers.maintenance import task as maintenance_task
from herald.workers.task import TaskContext, TaskRegistry

__all__ = ["KIND_MODULES", "default_registry", "register_builtin"]


async def noop(ctx: TaskContext) -> dict[str, Any]:
    """``herald.noop``: does nothing, completes at once (smoke tests, benchmarks)."""
    return {}


def register_builtin(registry: TaskRegistry) -> None:
    registry.task("herald.noop")(noop)


# The register functions of the kind modules, in registration order.
KIND_MODULES: list[Callable[[TaskRegistry], None]] = [
    register_builtin,
    oauth.register,
    ingest.register,
    attachments.register,
    maintenance_task.register,
]


def default_registry() -> TaskRegistry:
    registry = TaskRegistry()
    for register in KIND_MODULES:
        register(registry)
    return registry
