"""The scale-from-zero hold without Ray: wait for "a replica took it", withdraw and answer 503 past the timeout."""

from __future__ import annotations

import asyncio
import json

import pytest

from corral.serving import (
    ColdStartTimeoutError,
    HoldPolicy,
    ServingError,
    default_hold_seconds,
    error_response,
    estimate_cold_start_seconds,
    hold,
)


def test_a_request_taken_in_time_passes_through() -> None:
    cancelled: list[bool] = []

    async def main() -> str:
        taken: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.05, taken.set_result, "replica-1")
        return await hold(taken, HoldPolicy(30, 15), cancel=lambda: cancelled.append(True), what="tiny")

    assert asyncio.run(main()) == "replica-1"
    assert cancelled == []


def test_past_the_timeout_the_request_is_withdrawn_and_gets_503_with_retry_after() -> None:
    cancelled: list[bool] = []

    async def main() -> None:
        never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        await hold(never, HoldPolicy(0.05, 17), cancel=lambda: cancelled.append(True), what="tiny")

    with pytest.raises(ColdStartTimeoutError) as info:
        asyncio.run(main())
    assert cancelled == [True]
    exc = info.value
    assert exc.status == 503 and exc.retry_after == 17 and "tiny" in exc.message
    response = error_response(exc)
    assert response.status_code == 503 and response.headers["retry-after"] == "17"
    body = json.loads(bytes(response.body))
    assert body["error"]["code"] == "cold_start_timeout" and body["error"]["type"] == "server_error"


def test_other_errors_keep_their_status_and_carry_no_retry_after() -> None:
    response = error_response(ServingError("boom"))
    assert response.status_code == 500 and "retry-after" not in response.headers


def test_policy_refuses_a_zero_timeout() -> None:
    with pytest.raises(ValueError, match="timeout_seconds=0"):
        HoldPolicy(0, 5)


def test_estimates_grow_with_the_model_and_the_hold_is_bounded() -> None:
    small, big = estimate_cold_start_seconds(0, "transformers"), estimate_cold_start_seconds(10**10, "transformers")
    assert 0 < small < big
    assert estimate_cold_start_seconds(0, "vllm") > small
    assert default_hold_seconds(small) == max(60, 3 * small)
    assert default_hold_seconds(10**6) == 1800
