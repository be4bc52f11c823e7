"""Each package's ``__init__`` re-exports its public names, lazily: importing a
package costs nothing, and every exported name is the object its module defines."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGES = [
    "herald.journal",
    "herald.journal.messages",
    "herald.journal.tasks",
    "herald.journal.oauth",
    "herald.journal.runtime",
    "herald.journal.sources",
    "herald.streams",
    "herald.api",
    "herald.workers",
]


def _type_checking_imports(package: str) -> dict[str, str]:
    """name -> module, from the ``if TYPE_CHECKING:`` block type checkers read."""
    init = Path(importlib.import_module(package).__file__ or "")
    found: dict[str, str] = {}
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module
                found.update({alias.name: imp.module for alias in imp.names})
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_is_the_object_its_module_defines(package: str) -> None:
    pkg = importlib.import_module(package)
    homes = _type_checking_imports(package)
    assert sorted(pkg.__all__) == sorted(homes), "__all__ and the typed imports differ"
    assert len(set(pkg.__all__)) == len(pkg.__all__)
    for name in pkg.__all__:
        module = importlib.import_module(homes[name])
        assert getattr(pkg, name) is getattr(module, name), name
        assert name in getattr(module, "__all__", [name]), f"{name} is not public in {module}"
        assert name in dir(pkg)


@pytest.mark.parametrize("package", PACKAGES)
def test_an_unknown_name_is_an_attribute_error(package: str) -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(importlib.import_module(package), "no_such_name")  # noqa: B009


def test_importing_the_packages_imports_none_of_their_modules_or_dependencies() -> None:
    code = (
        "import sys, herald\n"
        "before = set(sys.modules)\n"
        f"for p in {PACKAGES!r}: __import__(p)\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    new = ast.literal_eval(done.stdout)
    # Only the packages themselves and standard modules (typing, importlib …).
    assert sorted(m for m in new if m.startswith("herald")) == sorted(PACKAGES)
    assert [m for m in new if m.split(".")[0] not in {"herald", *sys.stdlib_module_names}] == []
