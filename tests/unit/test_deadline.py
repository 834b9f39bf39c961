import asyncio

import pytest

from serve_app.deadline import timeout_from_header, within
from serve_app.errors import DeadlineExceeded, InvalidRequest


def test_header_shortens_and_is_capped() -> None:
    assert timeout_from_header(None, 60, 600) == 60
    assert timeout_from_header("2.5", 60, 600) == 2.5
    assert timeout_from_header("9999", 60, 600) == 600


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf", ""])
def test_bad_header_is_a_400(value: str) -> None:
    with pytest.raises(InvalidRequest):
        timeout_from_header(value, 60, 600)


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
            await within(0.05, slow())
        assert caught.value.status_code == 504
        assert cancelled.is_set()

    asyncio.run(scenario())


def test_a_timely_call_returns_its_value() -> None:
    async def quick() -> str:
        return "ok"

    assert asyncio.run(within(1.0, quick())) == "ok"
