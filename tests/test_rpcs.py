"""Every RPC of ModelGateway on the mock provider, plus grpc.health.v1 and reflection."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from modelgateway.v1 import model_gateway_pb2 as pb
from tests.conftest import mock_config
from tests.helpers import ask, error_details


async def test_generate_answers_arithmetic_on_the_mock(gateway_factory, stub_for) -> None:
    stub = await stub_for(await gateway_factory(mock_config()))
    response = await stub.Generate(ask("What is 25 + 75?"), timeout=5)
    assert response.content == "100"
    assert response.provider == "mock"
    assert response.model == "mock-1"
    assert response.finish_reason == pb.FINISH_REASON_END_TURN
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens > 0
    assert len(response.request_id) == 32
    assert [(a.provider, a.outcome) for a in response.attempts] == [("mock", pb.ATTEMPT_OUTCOME_OK)]
    assert response.latency_ms > 0


async def test_generate_echoes_the_callers_request_id(gateway_factory, stub_for) -> None:
    stub = await stub_for(await gateway_factory(mock_config()))
    response = await stub.Generate(ask(), metadata=(("x-request-id", "req-123"),), timeout=5)
    assert response.request_id == "req-123"


async def test_generate_quotes_other_prompts_and_honours_max_tokens(gateway_factory, stub_for) -> None:
    stub = await stub_for(await gateway_factory(mock_config()))
    response = await stub.Generate(ask("tell me a story about dragons"), timeout=5)
    assert response.content == "Mock response to: tell me a story about dragons"
    cut = await stub.Generate(ask("tell me a story about dragons", max_tokens=2), timeout=5)
    assert cut.content == "Mock response"
    assert cut.finish_reason == pb.FINISH_REASON_MAX_TOKENS


async def test_health_lists_every_provider_with_its_state(gateway_factory, stub_for) -> None:
    app = await gateway_factory(mock_config(
        providers={"mock": {"type": "mock"}, "off": {"type": "mock", "enabled": False},
                   "claude": {"type": "anthropic", "default_model": "claude-x"},
                   "aws": {"type": "bedrock", "region": "eu-west-1", "model_id": "anthropic.claude"}},
        health_check={"interval": 3600}))
    stub = await stub_for(app)
    await app.health.probe_all()
    health = await stub.Health(pb.HealthRequest(), timeout=5)
    by_name = {p.name: p for p in health.providers}
    assert by_name["mock"].status == pb.PROVIDER_STATUS_HEALTHY
    assert by_name["off"].status == pb.PROVIDER_STATUS_DISABLED
    assert by_name["claude"].status == pb.PROVIDER_STATUS_UNCONFIGURED
    assert by_name["claude"].default_model == "claude-x"
    assert by_name["aws"].status == pb.PROVIDER_STATUS_UNCONFIGURED
    assert by_name["aws"].region == "eu-west-1"
    assert by_name["aws"].default_model == "anthropic.claude"
    assert health.status == pb.HEALTH_STATUS_HEALTHY
    assert health.timestamp.seconds > 0 and by_name["mock"].checked_at.seconds > 0


async def test_list_providers_and_status(gateway_factory, stub_for) -> None:
    app = await gateway_factory(mock_config(
        providers={"mock": {"type": "mock", "models": ["mock-1", "mock-2"]},
                   "backup": {"type": "mock", "default_model": "mock-b"}},
        fallback={"enabled": True, "fallback_order": ["mock", "backup"]}))
    stub = await stub_for(app)
    listed = await stub.ListProviders(pb.ListProvidersRequest(), timeout=5)
    assert [(p.name, p.type, p.default_model) for p in listed.providers] == [
        ("mock", "mock", "mock-1"), ("backup", "mock", "mock-b")]
    assert list(listed.providers[0].models) == ["mock-1", "mock-2"]
    assert listed.default_provider == "mock"
    assert list(listed.fallback_order) == ["mock", "backup"]
    status = await stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    assert status.service == "Model Gateway"
    assert status.status == "running"
    assert status.version
    assert list(status.providers) == ["mock", "backup"]


async def test_standard_health_service_and_reflection(gateway_factory) -> None:
    app = await gateway_factory(mock_config())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        check = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        named = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="modelgateway.v1.ModelGateway"), timeout=5)
        assert named.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        services = [s.name async for r in stream for s in r.list_services_response.service]
        assert "modelgateway.v1.ModelGateway" in services
        assert "grpc.health.v1.Health" in services


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [pb.Message(content="hi")]}, "messages[0].role"),
        ({"messages": [pb.Message(role=pb.ROLE_USER, content="  ")]}, "messages[0].content"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 10_000_000}, "max_tokens"),
        ({"temperature": 1.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 2.0}, "top_p"),
        ({"stop_sequences": [""]}, "stop_sequences[0]"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(gateway_factory, stub_for, request_kwargs,
                                                              field) -> None:
    app = await gateway_factory(mock_config())
    stub = await stub_for(app)
    request = ask()
    if "messages" in request_kwargs:
        del request.messages[:]
        request.messages.extend(request_kwargs.pop("messages"))
    for key, value in request_kwargs.items():
        if key == "stop_sequences":
            request.stop_sequences.extend(value)
        else:
            setattr(request, key, value)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(request, timeout=5)
    details = error_details(info.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.message.startswith(f"{field}:")
    assert details.reason == "INVALID_FIELD"
    assert details.domain == "modelgateway"
    assert details.metadata["field"] == field
    assert details.field_violations == [field]
    assert details.request_id
    assert app.providers["mock"].calls == 0  # nothing reached a provider


async def test_unknown_provider_and_model_are_not_found(gateway_factory, stub_for) -> None:
    app = await gateway_factory(mock_config(providers={"mock": {"type": "mock", "models": ["mock-1"]}}))
    stub = await stub_for(app)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(provider="openai"), timeout=5)
    details = error_details(info.value)
    assert (details.code, details.reason, details.metadata["field"]) == (
        grpc.StatusCode.NOT_FOUND, "UNKNOWN_PROVIDER", "provider")
    assert "openai" in details.message
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(model="gpt-9"), timeout=5)
    details = error_details(info.value)
    assert (details.code, details.reason, details.metadata["field"]) == (
        grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL", "model")
    assert app.providers["mock"].calls == 0


async def test_oversize_request_is_invalid_argument(gateway_factory, stub_for) -> None:
    app = await gateway_factory(mock_config(server={"max_request_bytes": 4096}))
    stub = await stub_for(app)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask("x" * 6000), timeout=5)
    details = error_details(info.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.metadata["field"] == "request"
    # Far past the limit the transport itself refuses the message.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask("x" * 20000), timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert app.providers["mock"].calls == 0


async def test_mock_failure_injection_maps_to_codes(gateway_factory, stub_for) -> None:
    app = await gateway_factory(mock_config(
        providers={"mock": {"type": "mock", "fail_with": "rate_limited", "max_retries": 0}}))
    stub = await stub_for(app)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(), timeout=5)
    details = error_details(info.value)
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.reason == "PROVIDER_RATE_LIMITED"
    assert details.metadata["provider"] == "mock"
    assert details.retry_delay_ms == 1000 and details.pushback_ms == "1000"  # the configured default


async def test_api_keys_when_configured(gateway_factory, stub_for) -> None:
    app = await gateway_factory(mock_config(api_keys="key-one, key-two"))
    stub = await stub_for(app)
    for rpc, request in ((stub.Generate, ask()), (stub.GetStatus, pb.GetStatusRequest()),
                         (stub.ListProviders, pb.ListProvidersRequest()), (stub.Health, pb.HealthRequest())):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await rpc(request, timeout=5)
        details = error_details(info.value)
        assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await rpc(request, metadata=(("authorization", "Bearer key-three"),), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await anext(aiter(stub.GenerateStream(ask(), timeout=5)))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert app.providers["mock"].calls == 0
    ok = await stub.Generate(ask(), metadata=(("authorization", "Bearer key-two"),), timeout=5)
    assert ok.content == "100"
    status = await stub.GetStatus(pb.GetStatusRequest(), metadata=(("authorization", "bearer key-one"),), timeout=5)
    assert status.status == "running"
    # The standard health check stays open for probes.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        check = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_provider_raising_something_unexpected_is_its_failure_not_ours(
        gateway_factory, stub_for, caplog: pytest.LogCaptureFixture) -> None:
    app = await gateway_factory(mock_config(providers={"mock": {"type": "mock"}, "backup": {"type": "mock"}},
                                            fallback={"enabled": True, "fallback_order": ["mock", "backup"]}))
    stub = await stub_for(app)

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    app.providers["mock"].generate = broken  # type: ignore[method-assign]
    response = await stub.Generate(ask(), timeout=5)
    assert response.provider == "backup"
    assert (response.attempts[0].reason, response.attempts[0].message) == (
        "PROVIDER_ERROR", "unexpected provider failure (RuntimeError)")
    assert "secret internals" in caplog.text  # the operator sees it in the log, the caller does not


async def test_a_gateway_bug_is_internal_with_the_request_id_and_no_traceback(
        gateway_factory, stub_for, caplog: pytest.LogCaptureFixture) -> None:
    app = await gateway_factory(mock_config())
    stub = await stub_for(app)

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    assert app.router is not None
    app.router.generate = broken  # type: ignore[method-assign]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(ask(), metadata=(("x-request-id", "bug-1"),), timeout=5)
    details = error_details(info.value)
    assert details.code == grpc.StatusCode.INTERNAL
    assert details.message == "internal gateway error (request_id bug-1)"
    assert "secret internals" not in str(info.value) and "Traceback" not in str(info.value)
    assert "secret internals" in caplog.text
