"""The limiter's pure parts: estimates, periods, token-bucket arithmetic, the memory backend against
the Redis script (same rules, same answers), and what happens when the backend fails."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from datetime import UTC, datetime

import grpc
import pytest

from gateway_server.auth import Caller, KeyRing, Scope
from gateway_server.errors import GatewayError
from gateway_server.limits import Limiter, MemoryBackend, RedisBackend, estimate_input_tokens
from gateway_server.limits.backends import (
    KEY_GROUP,
    PROVIDER_GROUP,
    Add,
    BackendError,
    Check,
    Give,
    Release,
    SettleOp,
    Verdict,
    refill,
)
from gateway_server.limits.limiter import periods
from gateway_server.providers import ChatMessage, ProviderRequest
from gateway_server.providers.base import ImagePart, TextPart
from gateway_server.settings import LimitSettings, settings_from_mapping
from tests.conftest import mock_config

from .conftest import FakeClock, RedisServer


def request(text: str = "What is 25 + 75?", max_tokens: int = 100, **kw: object) -> ProviderRequest:
    return ProviderRequest(messages=(ChatMessage("user", text),), system="", max_tokens=max_tokens,
                           temperature=None, top_p=None, stop_sequences=(), **kw)  # type: ignore[arg-type]


def test_the_input_estimate_is_high() -> None:
    assert estimate_input_tokens(request("What is 25 + 75?")) == 6 + 4  # 16 characters / 3, + a message
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert estimate_input_tokens(request(text)) >= len(text.split()) * 1.3  # more than words * 1.3
    with_image = ProviderRequest(messages=(ChatMessage("user", "", (TextPart("see"), ImagePart("image/png", b"x"))),),
                                 system="sys", max_tokens=1, temperature=None, top_p=None, stop_sequences=())
    assert estimate_input_tokens(with_image) == 2 + 4 + 1600


def test_periods() -> None:
    p = periods(datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC).timestamp())
    assert (p.minute, p.day, p.month) == ("2026-12-31T23:59", "2026-12-31", "2026-12")
    assert p.day_end == p.month_end == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    p = periods(datetime(2026, 2, 1, 0, 0, 0, tzinfo=UTC).timestamp())
    assert (p.day, p.month, p.month_end) == ("2026-02-01", "2026-02", datetime(2026, 3, 1, tzinfo=UTC).timestamp())


def test_refill() -> None:
    assert refill(0, 100, 60, 100) == 0
    assert refill(0, 100, 60, 110) == 10  # 60 per minute: one a second
    assert refill(-30, 100, 60, 110) == -20  # a debt is paid back first
    assert refill(50, 100, 60, 200) == 60  # never above the capacity
    assert refill(10, 100, 60, 90) == 10  # a clock behind the stamp refills nothing


def test_memory_backend_takes_all_of_a_group_or_nothing() -> None:
    b = MemoryBackend()
    checks = [Check("tb", KEY_GROUP, "k:rpm", 2, 1), Check("tb", KEY_GROUP, "k:tpm", 100, 60),
              Check("tb", PROVIDER_GROUP, "p:tpm", 50, 60)]
    first = b.admit_now(checks, 0.0, "c1")
    assert [v.ok for v in first] == [True, True, False]  # the provider cannot take 60 of 50
    assert first[2] == Verdict(False, 50, 12.0)  # (60 - 50) tokens at 50/60 per second
    second = b.admit_now(checks, 0.0, "c2")
    # The key's tokens are short now (40 < 60): nothing is taken, not even the request.
    assert [v.ok for v in second] == [True, False, False] and second[1].wait == pytest.approx(20 / (100 / 60))
    assert b.admit_now([Check("tb", KEY_GROUP, "k:rpm", 2, 1)], 0.0, "c3")[0] == Verdict(True, 0, 0)


def test_memory_backend_settles_debts_and_slots() -> None:
    b = MemoryBackend()
    assert b.admit_now([Check("tb", KEY_GROUP, "k:tpm", 100, 100), Check("cc", KEY_GROUP, "k:cc", 1, 900)],
                       0.0, "c1")[1].ok
    assert not b.admit_now([Check("cc", KEY_GROUP, "k:cc", 1, 900)], 0.0, "c2")[0].ok
    # The call used 130 of 100 reserved: 30 of debt.
    assert b.settle_now([Give("k:tpm", 100, -30), Release("k:cc", "c1"),
                         Add("u", (("in", 10), ("usd", 0.5)), 60)], 0.0) == [-30, 0, 0]
    assert b.admit_now([Check("cc", KEY_GROUP, "k:cc", 1, 900)], 0.0, "c2")[0].ok
    verdict = b.admit_now([Check("tb", KEY_GROUP, "k:tpm", 100, 10)], 0.0, "c3")[0]
    assert not verdict.ok and verdict.wait == pytest.approx(40 / (100 / 60))
    assert b.admit_now([Check("bg", KEY_GROUP, "u", 0.5, 7)], 0.0, "c4")[0] == Verdict(False, 0, 7)
    assert b.admit_now([Check("bg", KEY_GROUP, "u", 0.5, 7)], 61.0, "c4")[0].ok  # the hash expired
    # A slot's lease runs out by itself.
    assert not b.admit_now([Check("cc", KEY_GROUP, "k:cc", 1, 1900)], 899.0, "c5")[0].ok
    assert b.admit_now([Check("cc", KEY_GROUP, "k:cc", 1, 1900)], 900.5, "c5")[0].ok


async def test_the_redis_script_and_the_memory_backend_agree(redis_server: RedisServer) -> None:
    """The same random admissions and settlements on both backends give the same verdicts. (Redis
    applies a call's settlement with the next admission: the memory backend is given it then too.)"""
    rng = random.Random(7)
    memory = MemoryBackend()
    redis = RedisBackend(redis_server.url, timeout=2.0)
    prefix = f"{{parity{rng.randrange(10**9)}}}"
    keys = {"tb": [f"{prefix}:k:tpm", f"{prefix}:p:tpm"], "cc": [f"{prefix}:k:cc"], "bg": [f"{prefix}:u:d"]}
    now = 1_800_000_000.0
    ops: list[SettleOp] = []
    try:
        for step in range(300):
            now += rng.choice([0, 0, 0.5, 3, 20])
            checks = [Check("tb", KEY_GROUP, keys["tb"][0], 120, rng.choice([1, 10, 60, 120])),
                      Check("tb", PROVIDER_GROUP, keys["tb"][1], 90, rng.choice([5, 40, 90])),
                      Check("cc", KEY_GROUP, keys["cc"][0], 3, now + rng.choice([1, 30])),
                      Check("bg", KEY_GROUP, keys["bg"][0], 5.0, 100.0),
                      Check("ct", KEY_GROUP, keys["bg"][0], 3600)]
            checks = [c for c in checks if rng.random() < 0.8] or checks[:1]
            call_id = f"c{step}"
            memory.settle_now(ops, now)
            expected = memory.admit_now(checks, now, call_id)
            got = await redis.admit(checks, now, call_id)
            assert _rounded(got) == _rounded(expected), (step, checks)
            ops = []
            if rng.random() < 0.7:
                ops.append(Give(keys["tb"][0], 120, rng.choice([-20, 0, 15, 60])))
            if rng.random() < 0.5:
                ops.append(Release(keys["cc"][0], f"c{rng.randrange(step + 1)}"))
            if rng.random() < 0.5:
                ops.append(Add(keys["bg"][0], (("usd", rng.choice([0.1, 0.7])), ("in", 3)), 3600))
            await redis.settle(ops, now)  # travels with the next admission
        memory.settle_now(ops, now)
        await redis.flush(now)
        snap_m = await memory.read([(keys["tb"][0], 120)], keys["cc"], keys["bg"], now)
        snap_r = await redis.read([(keys["tb"][0], 120)], keys["cc"], keys["bg"], now)
        assert snap_m.levels == pytest.approx(snap_r.levels) and snap_m.in_flight == snap_r.in_flight
        assert snap_m.usage[0] == pytest.approx(snap_r.usage[0])
    finally:
        await redis.close()


def _rounded(verdicts: Sequence[Verdict]) -> list[tuple[bool, float, float]]:
    return [(v.ok, round(v.remaining, 6), round(v.wait, 6)) for v in verdicts]


class Unreachable(MemoryBackend):
    """A backend that fails while ``down`` (unit tests of the limiter's failure handling)."""

    name = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.calls = 0

    async def admit(self, checks: Sequence[Check], now: float, call_id: str) -> list[Verdict]:
        self.calls += 1
        if self.down:
            raise BackendError("connection refused")
        return await super().admit(checks, now, call_id)


@pytest.mark.parametrize("on_failure", ["fail_open", "fail_closed"])
async def test_backend_failures(on_failure: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_from_mapping(mock_config(rate_limit={"on_failure": on_failure,
                                                             "redis": {"retry_interval": 3600}}), env_file=None)
    backend = Unreachable()
    limiter = Limiter(settings, backend, KeyRing(()), Scope("mock", {"mock": "mock-1"}), clock=FakeClock(0))
    caller = Caller(name="k", limits=LimitSettings(requests_per_minute=1))
    caplog.set_level(logging.WARNING, logger="gateway_server.limits")
    for _ in range(3):
        quota = limiter.call(caller)
        if on_failure == "fail_open":
            await quota.admit(request(), "", "")  # admitted, without limits
        else:
            with pytest.raises(GatewayError) as caught:
                await quota.admit(request(), "", "")
            assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAVAILABLE,
                                                                "RATE_LIMITER_UNAVAILABLE")
            assert caught.value.retry_after is not None
    # Tried once, then not again until retry_interval passed: no call waits on a dead backend.
    assert backend.calls == 1 and limiter.backend_errors == 1 and not limiter.available
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    backend.down = False
    limiter._retry_at = 0  # the retry interval is over
    await limiter.call(caller).admit(request(), "", "")
    assert limiter.available and "answers again" in caplog.records[-1].getMessage()
    with pytest.raises(GatewayError) as caught:  # limits apply again
        await limiter.call(caller).admit(request(), "", "")
    assert caught.value.reason == "KEY_RATE_LIMITED"
