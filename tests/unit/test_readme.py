"""The README documents every setting, and its set-up commands are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

from herald.journal.runtime.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_in_the_configuration_table():
    readme = (ROOT / "README.md").read_text()
    missing = [
        ENV_PREFIX + name.upper()
        for name in Settings.model_fields
        if f"| `{ENV_PREFIX}{name.upper()}` |" not in readme
    ]
    assert missing == []


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = ".venv/bin/python -m pytest -q"
    assert f"The test command it runs is `{command}`" in readme
    assert command in (ROOT / ".ci" / "run").read_text()
