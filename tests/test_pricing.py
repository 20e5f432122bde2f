"""Cost from a known price table: the pure function, the shipped table, the API's cost_usd, named callers."""

from __future__ import annotations

import grpc
import pytest

from gateway_server.auth import KeyRing
from gateway_server.pricing import ModelPrice, PriceTable, TokenUsage, cost_usd
from gateway_server.settings import ConfigError, load_settings, settings_from_mapping
from modelgateway.v1 import model_gateway_pb2 as pb
from tests.conftest import mock_config
from tests.helpers import ask

TABLE = {"m": ModelPrice(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)}


def test_cost_of_each_token_kind() -> None:
    assert cost_usd("m", TokenUsage(1_000_000, 0), TABLE) == (pytest.approx(3.0), True)
    assert cost_usd("m", TokenUsage(0, 1_000_000), TABLE) == (pytest.approx(15.0), True)
    usage = TokenUsage(input_tokens=1200, output_tokens=350, cache_read_tokens=10_000, cache_write_tokens=2000)
    expected = (1200 * 3.0 + 350 * 15.0 + 10_000 * 0.3 + 2000 * 3.75) / 1e6
    assert cost_usd("m", usage, TABLE) == (pytest.approx(expected), True)
    assert PriceTable(TABLE).cost_usd("m", usage) == cost_usd("m", usage, TABLE)


def test_unpriced_model_costs_zero() -> None:
    assert cost_usd("not-in-the-table", TokenUsage(10, 10), TABLE) == (0.0, False)
    assert cost_usd("", TokenUsage(10, 10), TABLE) == (0.0, False)


def test_shipped_table_prices_every_default_model() -> None:
    settings = load_settings("config/gateway.yaml")
    for name, provider in settings.providers.items():
        if provider.type == "mock":
            continue
        for model in {provider.default_model, *provider.models}:
            assert model in settings.pricing, f"{name}: {model} has no price"
    sonnet = settings.pricing["claude-sonnet-5-5"]
    assert (sonnet.input, sonnet.output) == (3.0, 15.0)


def test_bad_price_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"pricing\.m\.output"):
        settings_from_mapping(mock_config(pricing={"m": {"input": 1, "output": -1}}), env_file=None)
    with pytest.raises(ConfigError, match=r"pricing\.m\.cache_reads: unknown key"):
        settings_from_mapping(mock_config(pricing={"m": {"input": 1, "output": 1, "cache_reads": 1}}), env_file=None)
    with pytest.raises(ConfigError, match=r"named_api_keys"):
        settings_from_mapping(mock_config(named_api_keys={"bad name!": "k"}), env_file=None)


async def test_generate_and_stream_carry_the_cost(gateway_factory, stub_for) -> None:
    app = await gateway_factory(mock_config(pricing={"mock-1": {"input": 2.0, "output": 10.0}}))
    stub = await stub_for(app)
    response = await stub.Generate(ask(), timeout=10)
    u = response.usage
    assert u.cost_usd == pytest.approx((u.input_tokens * 2.0 + u.output_tokens * 10.0) / 1e6) and u.cost_usd > 0
    events = [e async for e in stub.GenerateStream(ask(), timeout=10)]
    end = events[-1].end.usage
    assert end.cost_usd == pytest.approx((end.input_tokens * 2.0 + end.output_tokens * 10.0) / 1e6)


async def test_named_keys_authorize_and_others_do_not(gateway_factory, stub_for) -> None:
    app = await gateway_factory(mock_config(api_keys="plain-key-0123456789",
                                            named_api_keys={"team-c": "named-key-0123456789"}))
    stub = await stub_for(app)
    for key in ("plain-key-0123456789", "named-key-0123456789"):
        response = await stub.Generate(ask(), metadata=(("authorization", f"Bearer {key}"),), timeout=10)
        assert response.content == "100"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Generate(ask(), metadata=(("authorization", "Bearer team-c"),), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Keys are checked by the auth interceptor (gateway_server/auth.py): who each one is.
    keys = KeyRing.from_settings(app.settings)
    assert getattr(keys.lookup("named-key-0123456789"), "name", None) == "team-c"
    assert getattr(keys.lookup("plain-key-0123456789"), "name", None) == "anonymous"
    assert pb.Usage(cost_usd=0.5).cost_usd == 0.5


def test_named_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_NAMED_API_KEYS", '{"team-d": "env-key-0123456789"}')
    settings = settings_from_mapping(mock_config(), env_file=None)
    assert settings.named_api_keys["team-d"].get_secret_value() == "env-key-0123456789"
    assert "env-key" not in repr(settings)
