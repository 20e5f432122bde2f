"""Gateway addresses: host:port, resolver URIs, and the seed's http:// URLs."""

from __future__ import annotations

import pytest

from orchestrator_client import GatewayClient, GatewaySettings, cli
from orchestrator_client.targets import normalize_target


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("localhost:50051", ("localhost:50051", None)),
        ("  10.0.0.5:50051 ", ("10.0.0.5:50051", None)),
        ("dns:///gateway.internal:50051", ("dns:///gateway.internal:50051", None)),
        ("ipv4:127.0.0.1:1,127.0.0.1:2", ("ipv4:127.0.0.1:1,127.0.0.1:2", None)),
        ("unix:/tmp/gw.sock", ("unix:/tmp/gw.sock", None)),
        ("http://localhost:8000", ("localhost:8000", False)),
        ("http://localhost:8000/", ("localhost:8000", False)),
        ("http://gateway", ("gateway:80", False)),
        ("https://gateway.example.com", ("gateway.example.com:443", True)),
        ("https://gateway.example.com:8443", ("gateway.example.com:8443", True)),
        ("grpc://gw:50051", ("gw:50051", False)),
        ("grpcs://gw", ("gw:443", True)),
        ("http://[::1]:50051", ("[::1]:50051", False)),
    ],
)
def test_targets(url: str, expected: tuple[str, bool | None]) -> None:
    assert normalize_target(url) == expected


@pytest.mark.parametrize("url", ["", "   ", "ftp://host:21", "http://host:1/v1/generate", "http://:80",
                                 "http://host:99999"])
def test_invalid_targets(url: str) -> None:
    with pytest.raises(ValueError):
        normalize_target(url)


@pytest.mark.parametrize(
    ("url", "plaintext", "tls"),
    [
        ("gateway", "gateway:50051", "gateway:443"),
        (" gateway.internal ", "gateway.internal:50051", "gateway.internal:443"),
        ("10.0.0.5", "10.0.0.5:50051", "10.0.0.5:443"),
        ("[::1]", "[::1]:50051", "[::1]:443"),
        ("::1", "[::1]:50051", "[::1]:443"),
        ("dns:///gateway", "dns:///gateway:50051", "dns:///gateway:443"),
        ("dns://8.8.8.8/gateway", "dns://8.8.8.8/gateway:50051", "dns://8.8.8.8/gateway:443"),
        ("dns:gateway", "dns:gateway:50051", "dns:gateway:443"),
        # a port given is kept
        ("gateway:8080", "gateway:8080", "gateway:8080"),
        ("[::1]:8080", "[::1]:8080", "[::1]:8080"),
        ("dns:///gateway:8080", "dns:///gateway:8080", "dns:///gateway:8080"),
    ],
)
def test_a_target_without_a_port_gets_50051_or_443_with_tls(url: str, plaintext: str, tls: str) -> None:
    """gRPC itself would dial 443 even for plaintext: the gateway's port is 50051."""
    assert normalize_target(url) == (plaintext, None)
    assert normalize_target(url, False) == (plaintext, None)
    assert normalize_target(url, True) == (tls, None)


def test_a_scheme_without_a_port_keeps_its_own_default() -> None:
    assert normalize_target("grpc://gateway") == ("gateway:50051", False)
    assert normalize_target("grpcs://gateway") == ("gateway:443", True)
    assert normalize_target("https://gateway", tls=False) == ("gateway:443", True)


async def test_the_client_settings_and_gatewayctl_default_port() -> None:
    assert GatewayClient("gateway").target == "gateway:50051"
    assert GatewayClient("gateway", tls=True).target == "gateway:443"
    assert GatewayClient("grpcs://gateway").target == "gateway:443"
    assert GatewaySettings(url="gateway").target == "gateway:50051"
    assert GatewaySettings(url="gateway", tls=True).target == "gateway:443"
    assert GatewayClient.from_settings(GatewaySettings(url="gateway")).target == "gateway:50051"
    assert GatewayClient.from_settings(GatewaySettings(), target="gateway").target == "gateway:50051"
    assert GatewayClient.from_settings(GatewaySettings(tls=True), target="gateway").target == "gateway:443"
    # gatewayctl --target gateway [--tls]
    parser = cli.build_parser()
    assert cli._make_client(parser.parse_args(["--target", "gateway", "status"])).target == "gateway:50051"
    client = cli._make_client(parser.parse_args(["--target", "gateway", "--tls", "status"]))
    assert (client.target, client.tls) == ("gateway:443", True)
