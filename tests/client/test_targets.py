"""Gateway addresses: host:port, resolver URIs, and the seed's http:// URLs."""

from __future__ import annotations

import pytest

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
