"""The simulated accelerator's two ways of batching: as `@serve.batch` forms batches (what the
autoscaling simulator models), or merged as the model replicas batch (`merge_passes`)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from ray.serve import batching

from deployments.simulated.deployment import SimulatedAccelerator

# A pass takes 0.1 s; batches close 1 ms after their first request.
SETTINGS = {"max_batch_size": 4, "batch_wait_timeout_s": 0.001, "service_a_s": 0.1}


def passes(merge: bool) -> list[int]:
    """One request, then three arriving 10 ms apart while its pass runs: the sizes of the
    passes that answered them."""

    async def run() -> list[int]:
        replica = cast(Any, SimulatedAccelerator).func_or_class()
        replica.reconfigure({**SETTINGS, "merge_passes": merge})
        first = asyncio.create_task(replica.infer("first"))
        later = []
        for i in range(3):
            await asyncio.sleep(0.01)
            later.append(asyncio.create_task(replica.infer(f"later {i}")))
        answers = await asyncio.gather(first, *later)
        assert [answer["payload"] for answer in answers] == [
            "first",
            "later 0",
            "later 1",
            "later 2",
        ]
        sizes: list[int] = replica.batch_sizes()
        return sizes

    return asyncio.run(run())


@pytest.mark.parametrize(("merge", "sizes"), [(False, [1, 1, 1, 1]), (True, [1, 3])])
def test_batches_that_wait_behind_a_pass_merge_only_when_asked(
    merge: bool, sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outside a replica, Serve's batch queue only lacks the deployment config it warns from.
    monkeypatch.setattr(
        batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda _: None
    )
    assert passes(merge) == sizes
