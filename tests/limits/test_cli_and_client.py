"""gatewayctl keys new / hash / usage, and the client's refusal to send a key over plaintext."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import sys

import grpc
import pytest

from orchestrator_client import GatewayClient, cli
from orchestrator_client.targets import check_key_transport, is_loopback
from tests.helpers import ask

from .conftest import SECRETS, FakeClock, bearer, keyed_config


async def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli.main, list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_keys_new_and_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = await run("--json", "keys", "new", "--name", "search")
    doc = json.loads(out)
    assert code == 0 and doc["name"] == "search" and doc["secret"].startswith("mgk_") and len(doc["secret"]) > 40
    assert doc["sha256"] == hashlib.sha256(doc["secret"].encode()).hexdigest()
    code, out, _ = await run("keys", "new", "--name", "search")
    assert code == 0 and "- name: search" in out and "sha256: \"" in out
    code, out, _ = await run("keys", "hash", "sk-alpha-secret")
    assert (code, out) == (0, hashlib.sha256(b"sk-alpha-secret").hexdigest() + "\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("sk-alpha-secret\n"))
    code, out, _ = await run("keys", "hash")
    assert (code, out) == (0, hashlib.sha256(b"sk-alpha-secret").hexdigest() + "\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    code, _, err = await run("keys", "hash")
    assert code == 2 and "empty" in err


async def test_usage_table(gateway_factory, stub_for) -> None:
    app = await gateway_factory(keyed_config(
        [{"name": "alpha", "team": "search", "limits": {"requests_per_minute": 10, "tokens_per_minute": 1000},
          "budget": {"daily_usd": 5}}, {"name": "root", "admin": True}],
        pricing={"mock-1": {"input": 1000, "output": 2000}}))
    app.limiter.clock = FakeClock(1_800_000_000)
    stub = await stub_for(app)
    for _ in range(3):
        await stub.Generate(ask(max_tokens=50), metadata=bearer("alpha"), timeout=10)
    target = f"127.0.0.1:{app.port}"
    code, out, err = await run("--target", target, "--api-key", SECRETS["root"], "usage")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["KEY", "TEAM", "REQ/MIN", "TOK/MIN", "REQ/DAY", "TOK/DAY", "USD/DAY", "USD/MONTH",
                                "IN-FLIGHT", "REMAINING/LIMIT"]
    alpha = lines[1].split()
    # 3 calls of 5 input + 1 output tokens: 18 tokens, 15 * $0.001 + 3 * $0.002 = $0.021.
    assert alpha[:9] == ["alpha", "search", "3", "18", "3", "18", "$0.0210", "$0.0210", "0"]
    assert "rpm 7/10" in lines[1] and "tpm 982/1000" in lines[1] and "daily $4.9790/$5.0000" in lines[1]
    assert lines[2].split()[:3] == ["root", "-", "0"] and lines[-1].startswith("backend: memory")
    code, out, _ = await run("--target", target, "--api-key", SECRETS["root"], "--json", "usage", "alpha")
    doc = json.loads(out)
    assert code == 0 and [k["name"] for k in doc["keys"]] == ["alpha"] and doc["keys"][0]["day"]["requests"] == 3
    code, _, err = await run("--target", target, "--api-key", SECRETS["alpha"], "usage")
    assert code == 6 and "PERMISSION_DENIED" in err
    code, _, err = await run("--target", target, "--api-key", SECRETS["root"], "usage", "nobody")
    assert code == 4 and "no API key is named 'nobody'" in err


def test_loopback_targets() -> None:
    for target in ("localhost:50051", "127.0.0.1:1", "[::1]:5", "dns:///localhost:50051", "unix:/tmp/gw.sock",
                   "ipv4:127.0.0.1:1,127.0.0.2:2", "api.localhost:1"):
        assert is_loopback(target), target
        check_key_transport(target, tls=False)
    for target in ("gw.internal:50051", "10.0.0.5:50051", "dns:///gw.internal:50051", "ipv4:127.0.0.1:1,10.0.0.1:2",
                   "xds:///gw"):
        assert not is_loopback(target), target
        check_key_transport(target, tls=True)
        with pytest.raises(ValueError, match="refusing to send the API key in plaintext"):
            check_key_transport(target, tls=False)


async def test_the_client_refuses_a_key_over_plaintext_to_another_host() -> None:
    with pytest.raises(ValueError, match=r"plaintext to gw\.internal:50051"):
        GatewayClient("gw.internal:50051", api_key="sk-1")
    with pytest.raises(ValueError, match="plaintext"):
        GatewayClient("https://gw.internal", api_key="sk-1", tls=False)
    GatewayClient("gw.internal:50051")  # no key: nothing to protect
    GatewayClient("https://gw.internal", api_key="sk-1")
    GatewayClient("localhost:50051", api_key="sk-1")
    code, _, err = await run("--target", "gw.internal:50051", "--api-key", "sk-1", "status")
    assert code == 2 and "refusing to send the API key in plaintext" in err


async def test_the_client_authenticates_to_a_keyed_gateway(gateway_factory) -> None:
    app = await gateway_factory(keyed_config([{"name": "alpha"}]))
    async with GatewayClient(f"127.0.0.1:{app.port}", api_key=SECRETS["alpha"], max_retries=1) as client:
        assert (await client.generate("What is 25 + 75?")).content == "100"
    async with GatewayClient(f"127.0.0.1:{app.port}", api_key="sk-wrong", max_retries=1) as client:
        with pytest.raises(Exception) as caught:
            await client.generate("What is 25 + 75?")
        assert getattr(caught.value, "code", None) == grpc.StatusCode.UNAUTHENTICATED
