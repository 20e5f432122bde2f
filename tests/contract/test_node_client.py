"""The Node.js example (examples/node/client.js) calls the gateway: the contract works from JavaScript.

The client loads protos/ at run time with @grpc/proto-loader and talks to an in-process gateway on
its mock provider. node runs through asyncio's subprocess API, so that the gateway, served by this
test's event loop, keeps answering meanwhile. Skipped, saying why, where node or the example's npm
packages are missing (`make node-deps` installs them).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .conftest import NODE_EXAMPLE, run, run_async

CLIENT = NODE_EXAMPLE / "client.js"
QUESTION = "What is 25 + 75?"


def says_100(content: str) -> bool:
    return re.search(r"\b100\b", content) is not None


async def client_json(node: str, *args: str) -> tuple[int, dict[str, Any], str]:
    result = await run_async(node, CLIENT, *args, "--json", cwd=NODE_EXAMPLE)
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"client.js printed no JSON: {exc}\n{result.output}") from exc
    return result.returncode, data, result.stderr


def test_client_loads_the_contract(node: str) -> None:
    """proto-loader reads protos/ (and the Timestamp import) and sees every RPC of the service."""
    script = (
        "const { loadContract } = require('./client.js');"
        "console.log(JSON.stringify(Object.keys(loadContract().ModelGateway.service)));"
    )
    result = run(node, "-e", script, cwd=NODE_EXAMPLE)
    assert result.returncode == 0, result.output
    methods = json.loads(result.stdout)
    assert {"Generate", "Health", "ListProviders", "GetStatus"} <= set(methods)


async def test_generate_answers_100(node: str, gateway_address: str) -> None:
    code, data, stderr = await client_json(node, gateway_address, QUESTION)
    assert code == 0, (data, stderr)
    generate = data["generate"]
    assert says_100(generate["content"]), generate
    assert generate["provider"] == "mock"
    assert generate["finishReason"].startswith("FINISH_REASON_")
    assert generate["attempts"] and generate["attempts"][-1]["outcome"] == "ATTEMPT_OUTCOME_OK"
    health = data["health"]
    assert health["status"] == "HEALTH_STATUS_HEALTHY", health
    assert [p["name"] for p in health["providers"]] == ["mock"]
    assert health["timestamp"].endswith("Z")  # Timestamp rendered as RFC 3339


async def test_plain_output_is_the_answer(node: str, gateway_address: str) -> None:
    result = await run_async(node, CLIENT, gateway_address, QUESTION, "--rpc", "generate", cwd=NODE_EXAMPLE)
    assert result.returncode == 0, result.output
    assert says_100(result.stdout.strip()), result.output


async def test_every_unary_rpc(node: str, gateway_address: str) -> None:
    code, data, stderr = await client_json(node, gateway_address, "--rpc", "health,providers,status")
    assert code == 0, (data, stderr)
    assert data["providers"]["defaultProvider"] == "mock"
    assert [p["name"] for p in data["providers"]["providers"]] == ["mock"]
    assert data["status"]["providers"] == ["mock"]
    assert data["status"]["status"] == "running"


async def test_error_details_reach_node(node: str, gateway_address: str) -> None:
    """An invalid request fails with INVALID_ARGUMENT and a google.rpc.ErrorInfo the client decodes."""
    code, data, _ = await client_json(
        node, gateway_address, QUESTION, "--rpc", "generate", "--max-tokens", "1000000000"
    )
    assert code == 1
    error = data["error"]
    assert error["rpc"] == "Generate"
    assert error["codeName"] == "INVALID_ARGUMENT", error
    assert error["errorInfo"]["domain"] == "modelgateway", error
    assert error["errorInfo"]["reason"], error
    assert [v["field"] for v in error["badRequest"]["fieldViolations"]] == ["max_tokens"], error


async def test_generate_stream(node: str, gateway_address: str) -> None:
    """GenerateStream from Node: start, text deltas that add up to the answer, end."""
    code, data, stderr = await client_json(node, gateway_address, QUESTION, "--rpc", "stream")
    assert code == 0, (data, stderr)
    stream = data["stream"]
    assert says_100(stream["content"]), stream
    assert stream["start"]["provider"] == "mock", stream
    assert stream["end"]["finishReason"].startswith("FINISH_REASON_"), stream
