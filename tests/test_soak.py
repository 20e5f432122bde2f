"""The short version of `make soak` (tests/soak.py): the real gateway process under loopback load
with faults on the first provider and a healthy second one."""

from __future__ import annotations

from tests.soak import soak


async def test_a_short_soak_loses_nothing_and_fails_nothing_while_a_provider_is_healthy() -> None:
    result = await soak(callers=8, duration=2.0, warmup=1.0)
    print(result.report())
    assert not result.problems, result.problems
    assert result.calls > 50 and result.codes["OK"] == result.calls
    assert sum(result.faults.values()) > 0  # faults were injected...
    assert result.answered_by["bedrock"] > 0  # ...and the second provider answered for the first
