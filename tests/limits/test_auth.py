"""API keys and scopes: every RPC authenticated by the one interceptor, scopes naming the field."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway_server.auth import ANONYMOUS, Caller, KeyRing, Scope, expand_models
from gateway_server.settings import ConfigError, settings_from_mapping
from modelgateway.v1 import model_gateway_pb2 as pb
from tests.conftest import mock_config
from tests.helpers import ask, error_details

from .conftest import SECRETS, bearer, keyed_config, sha

SERVICE = pb.DESCRIPTOR.services_by_name["ModelGateway"]
ALIASES = {"claude-haiku": {"mock": "mock-haiku", "mock2": "mock2-haiku"}}


def two_mocks(**overrides: Any) -> dict[str, Any]:
    return {
        "providers": {"mock": {"type": "mock", "models": ["mock-1", "mock-haiku"]},
                      "mock2": {"type": "mock", "default_model": "mock2-1", "models": ["mock2-1", "mock2-haiku"]}},
        "model_aliases": ALIASES,
        "fallback": {"enabled": True, "fallback_order": ["mock", "mock2"]},
        **overrides,
    }


async def call(channel: grpc.aio.Channel, method: Any, request: Any, metadata: Any = ()) -> Any:
    """Call any method of the service generically; a stream is read to its end."""
    path = f"/{SERVICE.full_name}/{method.name}"
    output = pb.DESCRIPTOR.message_types_by_name[method.output_type.name]
    from google.protobuf import symbol_database

    out_cls = symbol_database.Default().GetSymbol(output.full_name)
    if method.server_streaming:
        rpc = channel.unary_stream(path, request_serializer=type(request).SerializeToString,
                                   response_deserializer=out_cls.FromString)
        return [item async for item in rpc(request, metadata=metadata, timeout=10)]
    rpc = channel.unary_unary(path, request_serializer=type(request).SerializeToString,
                              response_deserializer=out_cls.FromString)
    return await rpc(request, metadata=metadata, timeout=10)


def request_for(method: Any) -> Any:
    if method.input_type.name == "GenerateRequest":
        return ask()
    if method.input_type.name == "CountTokensRequest":
        return pb.CountTokensRequest(messages=ask().messages)
    from google.protobuf import symbol_database

    return symbol_database.Default().GetSymbol(method.input_type.full_name)()


async def test_every_rpc_needs_a_known_key_and_health_and_reflection_stay_open(gateway_factory) -> None:
    app = await gateway_factory(keyed_config([{"name": "alpha"}, {"name": "root", "admin": True}]))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        assert len(SERVICE.methods) >= 6
        for method in SERVICE.methods:
            for metadata in ((), (("authorization", "Bearer sk-unknown"),), (("authorization", "Basic x"),)):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(channel, method, request_for(method), metadata)
                details = error_details(caught.value)
                assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY"), \
                    method.name
                assert details.request_id and len(details.request_id) == 32  # generated: none was sent
            # The admin key may call everything.
            await call(channel, method, request_for(method), bearer("root"))
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == \
            health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = [a async for a in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)]
        assert SERVICE.full_name in {s.name for s in answers[0].list_services_response.service}


async def test_get_usage_needs_an_admin_key(gateway_factory, stub_for) -> None:
    app = await gateway_factory(keyed_config([{"name": "alpha"}, {"name": "root", "admin": True}]))
    stub = await stub_for(app)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUsage(pb.GetUsageRequest(), metadata=(*bearer("alpha"), ("x-request-id", "mine-1")), timeout=5)
    details = error_details(caught.value)
    assert (details.code, details.reason, details.request_id) == (
        grpc.StatusCode.PERMISSION_DENIED, "ADMIN_ONLY", "mine-1")
    usage = await stub.GetUsage(pb.GetUsageRequest(), metadata=bearer("root"), timeout=5)
    assert [k.name for k in usage.keys] == ["alpha", "root"]


async def test_gateway_api_keys_still_work_as_keys_without_limits(gateway_factory, stub_for) -> None:
    app = await gateway_factory(keyed_config([{"name": "root", "admin": True,
                                               "limits": {"requests_per_minute": 1}}], api_keys="old-one, old-two"))
    stub = await stub_for(app)
    for _ in range(3):
        ok = await stub.Generate(ask(), metadata=(("authorization", "Bearer old-two"),), timeout=5)
        assert ok.content == "100"
    await stub.Generate(ask(), metadata=bearer("root"), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(ask(), metadata=bearer("root"), timeout=5)
    assert error_details(caught.value).reason == "KEY_RATE_LIMITED"


async def test_a_provider_outside_the_scope_is_denied_naming_the_field(gateway_factory, stub_for) -> None:
    app = await gateway_factory(keyed_config([{"name": "alpha", "providers": ["mock2"]}], **two_mocks()))
    stub = await stub_for(app)
    for request in (ask(provider="mock"), ask()):  # named, and the default provider
        for rpc in (stub.Generate, stub.GenerateStream):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                result = rpc(request, metadata=bearer("alpha"), timeout=5)
                if rpc is stub.GenerateStream:
                    [e async for e in result]
                else:
                    await result
            details = error_details(caught.value)
            assert (details.code, details.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_IN_KEY_SCOPE")
            assert details.field_violations == ["provider"] and details.metadata["key"] == "alpha"
    ok = await stub.Generate(ask(provider="mock2"), metadata=bearer("alpha"), timeout=5)
    assert ok.provider == "mock2"


async def test_models_in_scope_count_aliases(gateway_factory, stub_for) -> None:
    app = await gateway_factory(keyed_config([{"name": "alpha", "models": ["claude-haiku"]},
                                              {"name": "beta", "models": ["mock-haiku"]}], **two_mocks()))
    stub = await stub_for(app)
    for key in ("alpha", "beta"):
        for model in ("claude-haiku", "mock-haiku", "mock2-haiku"):
            ok = await stub.Generate(ask(model=model), metadata=bearer(key), timeout=5)
            assert ok.model in ("mock-haiku", "mock2-haiku")
        for model in ("mock-1", ""):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Generate(ask(model=model), metadata=bearer(key), timeout=5)
            details = error_details(caught.value)
            assert (details.code, details.field_violations) == (grpc.StatusCode.PERMISSION_DENIED, ["model"])


async def test_fallback_skips_a_provider_outside_the_scope(gateway_factory, stub_for) -> None:
    config = keyed_config([{"name": "alpha", "providers": ["mock"]}], **two_mocks())
    config["providers"]["mock"]["fail_with"] = "unavailable"
    config["providers"]["mock"]["max_retries"] = 0
    app = await gateway_factory(config)
    stub = await stub_for(app)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(ask(), metadata=bearer("alpha"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # Without the scope the same call would have been answered by mock2.
    config["keys"][0].pop("providers")
    app2 = await gateway_factory(config)
    stub2 = await stub_for(app2)
    assert (await stub2.Generate(ask(), metadata=bearer("alpha"), timeout=5)).provider == "mock2"


def test_key_lookup_compares_digests() -> None:
    alpha, beta = Caller(name="alpha"), Caller(name="beta")
    ring = KeyRing([(bytes.fromhex(sha("s1")), alpha), (bytes.fromhex(sha("s2")), beta)])
    assert ring.lookup("s1") is alpha and ring.lookup("s2") is beta
    assert ring.lookup("s3") is None and ring.lookup("") is None
    assert not KeyRing([]).enabled and ring.enabled


def test_scope_rules() -> None:
    allowed = expand_models(["claude-haiku"], ALIASES)
    assert allowed == {"claude-haiku", "mock-haiku", "mock2-haiku"}
    assert expand_models(["mock2-haiku"], ALIASES) == allowed
    assert expand_models(["other"], ALIASES) == {"other"}
    scope = Scope("mock", {"mock": "mock-1", "mock2": "mock2-1"})
    caller = Caller(name="k", providers=frozenset({"mock2"}), models=allowed)
    assert scope.denial(ANONYMOUS, "mock", "anything") is None
    err = scope.denial(caller, "", "mock-haiku")
    assert err is not None and err.field == "provider" and "default provider 'mock'" in err.message
    err = scope.denial(caller, "mock2", "")
    assert err is not None and err.field == "model" and "default model 'mock2-1'" in err.message
    assert scope.denial(caller, "mock2", "claude-haiku") is None
    assert scope.skip(caller, "mock", "mock-haiku") == ("NOT_IN_KEY_SCOPE",
                                                        "provider 'mock' is not allowed for API key 'k'")
    assert scope.skip(caller, "mock2", "mock2-1") is not None
    assert scope.skip(caller, "mock2", "mock2-haiku") is None


def test_keys_config_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(keys: list[dict[str, Any]]) -> None:
        settings_from_mapping(mock_config(keys=keys), env_file=None)

    for keys, words in (
        ([{"name": "a"}], "keys.0: Value error, set sha256 or secret_env (a secret), or client_subject"),
        ([{"name": "a", "sha256": sha("x"), "secret_env": "X"}], "set one of sha256 and secret_env, not both"),
        ([{"name": "a", "sha256": "abc"}], "keys.0.sha256"),
        ([{"name": "a", "sha256": sha("x"), "secret": "x"}], "keys.0.secret: unknown key"),
        ([{"name": "a", "sha256": sha("x")}, {"name": "a", "sha256": sha("y")}], "keys[1].name: 'a' is given twice"),
        ([{"name": "a", "sha256": sha("x"), "providers": ["nope"]}], "keys[0].providers: 'nope'"),
        ([{"name": "a", "secret_env": "MG_TEST_UNSET_SECRET"}], "MG_TEST_UNSET_SECRET is not set"),
    ):
        with pytest.raises(ConfigError) as caught:
            load(keys)
        assert words.split("Value error, ")[-1] in str(caught.value), str(caught.value)
    monkeypatch.setenv("MG_TEST_SECRET", SECRETS["alpha"])
    settings = settings_from_mapping(mock_config(keys=[{"name": "a", "secret_env": "MG_TEST_SECRET"}]),
                                     env_file=None)
    assert KeyRing.from_settings(settings).lookup(SECRETS["alpha"]) is not None
    assert "sk-alpha" not in repr(settings)
