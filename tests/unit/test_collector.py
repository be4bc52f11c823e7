"""The server's garbage-collector policy (``journal.runtime.collector``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from herald.journal.runtime.collector import tune_collector
from herald.journal.runtime.settings import Settings


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_full_collections_are_spaced_and_start_up_objects_frozen(restored: None) -> None:
    young, middle, _ = gc.get_threshold()
    kept = [object() for _ in range(10)], {"a": [1]}  # containers alive at start-up
    tune_collector(500)
    assert gc.get_threshold() == (young, middle, 500)
    assert gc.get_freeze_count() > 0
    # Frozen: no collection walks it any more (get_objects lists generations 0-2).
    assert not any(o is kept for o in gc.get_objects())


def test_the_setting_defaults_to_far_fewer_full_collections_than_python() -> None:
    assert Settings(redis_url="redis://127.0.0.1:6379/0").gc_full_every == 1000
    with pytest.raises(ValueError):
        Settings(redis_url="redis://127.0.0.1:6379/0", gc_full_every=0)
