import gc
from collections.abc import Iterator

import pytest

from serve_app.ingress import GC_GEN0_THRESHOLD, collect_cycles_less_often


@pytest.fixture
def restored_thresholds() -> Iterator[tuple[int, int, int]]:
    thresholds = gc.get_threshold()
    yield thresholds
    gc.set_threshold(*thresholds)


def test_the_ingress_collects_its_youngest_generation_less_often(
    restored_thresholds: tuple[int, int, int],
) -> None:
    collect_cycles_less_often()
    youngest, *older = gc.get_threshold()
    assert youngest == GC_GEN0_THRESHOLD > restored_thresholds[0]
    assert tuple(older) == restored_thresholds[1:]
