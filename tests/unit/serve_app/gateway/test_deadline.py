import asyncio

import pytest

from serve_app.errors import DeadlineExceeded, InvalidRequest, RequestTimeout
from serve_app.gateway.deadline import Deadline, timeout_from_header


def test_header_can_only_shorten_the_deadline() -> None:
    assert timeout_from_header(None, 60) == 60
    assert timeout_from_header("2.5", 60) == 2.5
    assert timeout_from_header("9999", 60) == 60


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf", ""])
def test_bad_header_is_a_400(value: str) -> None:
    with pytest.raises(InvalidRequest):
        timeout_from_header(value, 60)


def test_a_late_call_is_cancelled_and_reported_as_504() -> None:
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    async def scenario() -> None:
        with pytest.raises(DeadlineExceeded) as caught:
            await Deadline.starting_now(0.05).run(slow())
        assert caught.value.status_code == 504
        assert cancelled.is_set()

    asyncio.run(scenario())


def test_a_timely_call_returns_its_value() -> None:
    async def quick() -> str:
        return "ok"

    assert asyncio.run(Deadline.starting_now(1.0).run(quick())) == "ok"


def test_the_deadline_counts_from_its_start_not_from_each_call() -> None:
    async def scenario() -> None:
        deadline = Deadline.starting_now(0.3)
        await deadline.run(asyncio.sleep(0.2))
        # 0.1 s are left, not another 0.3 s.
        with pytest.raises(DeadlineExceeded):
            await deadline.run(asyncio.sleep(0.2))
        assert deadline.remaining_s() < 0

    asyncio.run(scenario())


def test_a_body_still_arriving_at_the_deadline_is_a_408_that_closes_the_connection() -> None:
    async def scenario() -> None:
        with pytest.raises(RequestTimeout) as caught:
            await Deadline.starting_now(0.05).read_body(asyncio.sleep(5))
        assert caught.value.status_code == 408
        assert caught.value.code == "request_timeout"
        assert caught.value.headers["Connection"] == "close"

    asyncio.run(scenario())
