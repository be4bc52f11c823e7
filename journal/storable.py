"""What PostgreSQL can store: a JSON value is refused at the door if it cannot be.

PostgreSQL's ``text`` cannot hold U+0000 and ``jsonb`` refuses the ``\\u0000``
escape, so one such string in a payload would fail the whole batch it is written
in.  Lone surrogates cannot reach here (the JSON parser refuses them), so NUL is
the one character to look for, in keys as well as values.
"""

from __future__ import annotations

from typing import Any

__all__ = ["unstorable"]


def unstorable(value: Any, path: str = "") -> str | None:
    """The path of the first string (key or value) PostgreSQL cannot store, else None.

    The path reads like ``payload.items[2]`` (``(body)`` for the value itself)."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return where or "(body)"
        elif isinstance(item, dict):
            for key, child in item.items():
                at = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and "\x00" in key:
                    return at.replace("\x00", "\\u0000")
                stack.append((child, at))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
    return None
