"""The gateway as a TLS and mTLS server, with a CA the tests make (tests/tls_ca.py): plaintext and
unknown client certificates refused, the client certificate's subject as the caller's identity,
gatewayctl with --ca/--cert/--key/--server-name, and certificate files re-read on SIGHUP while a call
is in flight."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from gateway_server.app import GatewayApp
from gateway_server.cli import main as gateway_main
from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc
from orchestrator_client import GatewayClient, GatewayClientError, GatewayUnavailableError

from .conftest import GatewayFactory, mock_config
from .helpers import ask, gateway_process
from .tls_ca import CertAuthority


@dataclass
class Pki:
    dir: Path
    ca: CertAuthority
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_ca: CertAuthority
    client_ca_file: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate from a CA the gateway does not trust
    rogue_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, client_ca, rogue_ca = CertAuthority("server CA"), CertAuthority("client CA"), CertAuthority("rogue CA")
    server_cert, server_key = ca.issue("gateway.test", server=True).write(d, "server")
    client_cert, client_key = client_ca.issue("orchestrator-1", server=False).write(d, "client")
    rogue_cert, rogue_key = rogue_ca.issue("orchestrator-1", server=False).write(d, "rogue")
    return Pki(d, ca, ca.write(d, "ca"), server_cert, server_key, client_ca, client_ca.write(d, "client-ca"),
               client_cert, client_key, rogue_cert, rogue_key)


def tls_config(pki: Pki, *, mutual: bool) -> dict[str, Any]:
    tls: dict[str, Any] = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    if mutual:
        tls["client_ca_file"] = str(pki.client_ca_file)
    return mock_config(server={"tls": tls})


def client(port: int, pki: Pki, *, cert: bool = True, rogue: bool = False, **kwargs: Any) -> GatewayClient:
    cert_file, key_file = (pki.rogue_cert, pki.rogue_key) if rogue else (pki.client_cert, pki.client_key)
    return GatewayClient(f"grpcs://localhost:{port}", root_certificates=pki.ca_file.read_bytes(),
                         client_certificate=cert_file.read_bytes() if cert else None,
                         client_key=key_file.read_bytes() if cert else None, max_retries=1, **kwargs)


@pytest.fixture
async def tls_app(gateway_factory: GatewayFactory, pki: Pki) -> GatewayApp:
    return await gateway_factory(tls_config(pki, mutual=False))


@pytest.fixture
async def mtls_app(gateway_factory: GatewayFactory, pki: Pki) -> GatewayApp:
    return await gateway_factory(tls_config(pki, mutual=True))


async def _plaintext_status(port: int) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            await pb_grpc.ModelGatewayStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK


async def test_tls_gateway_answers_a_client_that_trusts_its_ca(tls_app: GatewayApp, pki: Pki) -> None:
    async with client(tls_app.port, pki, cert=False) as c:
        assert (await c.generate("What is 25 + 75?", timeout=10)).content == "100"
    assert tls_app.tls is not None and not tls_app.tls.mutual


async def test_plaintext_is_refused_on_a_tls_port(tls_app: GatewayApp, mtls_app: GatewayApp) -> None:
    assert await _plaintext_status(tls_app.port) == grpc.StatusCode.UNAVAILABLE
    assert await _plaintext_status(mtls_app.port) == grpc.StatusCode.UNAVAILABLE


async def test_mtls_names_the_caller_by_its_certificate(
    mtls_app: GatewayApp, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway_server.requests")
    async with client(mtls_app.port, pki) as c:
        assert (await c.generate("What is 25 + 75?", timeout=10)).content == "100"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Generated response")]
    assert len(lines) == 1
    assert 'identity="CN=orchestrator-1,O=Model Gateway tests"' in lines[0], lines[0]


@pytest.mark.parametrize("case", ["no client certificate", "certificate from an untrusted CA"])
async def test_mtls_refuses_a_caller_without_a_trusted_certificate(mtls_app: GatewayApp, pki: Pki, case: str) -> None:
    c = client(mtls_app.port, pki, cert=case != "no client certificate", rogue=True)
    try:
        with pytest.raises(GatewayUnavailableError):
            await c.status(timeout=5)
    finally:
        await c.close()
    # The same gateway still serves a trusted caller.
    async with client(mtls_app.port, pki) as good:
        assert (await good.status(timeout=10)).status == "running"


async def test_gatewayctl_with_ca_cert_key_and_server_name(mtls_app: GatewayApp, pki: Pki) -> None:
    base = [sys.executable, "-m", "orchestrator_client", "--target", f"127.0.0.1:{mtls_app.port}",
            "--ca", str(pki.ca_file), "--server-name", "gateway.test", "--max-retries", "1", "--timeout", "10"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}

    async def run(*extra: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(*base, *extra, "status", stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env=env, cwd=pki.dir)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await run("--cert", str(pki.client_cert), "--key", str(pki.client_key))
    assert code == 0, err
    assert out.startswith("Model Gateway ") and ": running" in out
    code, out, err = await run()  # no client certificate: the handshake fails
    assert code == 5 and "UNAVAILABLE" in err, err


def test_a_certificate_and_key_that_do_not_match_exit_2(pki: Pki, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    other = pki.ca.issue("other", server=True)
    other_key = tmp_path / "other.key"
    other_key.write_bytes(other.key_pem)
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({**mock_config(), "server": {
        "tls": {"cert_file": str(pki.server_cert), "key_file": str(other_key)}}}))
    assert gateway_main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "server.tls" in err[0] and "not a usable certificate and key" in err[0], err
    config.write_text(yaml.safe_dump({**mock_config(), "server": {
        "tls": {"cert_file": str(tmp_path / "missing.pem"), "key_file": str(other_key)}}}))
    assert gateway_main(["--config", str(config)]) == 2
    assert "server.tls.cert_file: no such file" in capsys.readouterr().err


@pytest.fixture
def reload_files(pki: Pki, tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    cert.write_bytes(pki.server_cert.read_bytes())
    key.write_bytes(pki.server_key.read_bytes())
    return cert, key


async def test_sighup_rereads_the_certificate_without_dropping_calls(
    pki: Pki, tmp_path: Path, reload_files: tuple[Path, Path]
) -> None:
    cert, key = reload_files
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(mock_config(
        providers={"mock": {"type": "mock", "stream_chunk_delay_ms": 300}},
        server={"tls": {"cert_file": str(cert), "key_file": str(key), "client_ca_file": str(pki.client_ca_file)}})))
    new_ca = CertAuthority("rotated server CA")
    rotated = new_ca.issue("gateway.test", server=True)
    async with gateway_process(config) as gw:
        old_client = client(gw.port, pki, timeout=30)
        try:
            assert (await old_client.status(timeout=10)).status == "running"
            assert old_client.channel is not None
            # A stream in flight across the reload: its start event is in before the SIGHUP.
            stream = pb_grpc.ModelGatewayStub(old_client.channel).GenerateStream(
                ask("Tell me about gateways"), timeout=30)
            assert (await stream.read()).WhichOneof("event") == "start"
            rotated.write(tmp_path, "live")  # overwrites live.pem and live.key
            gw.proc.send_signal(signal.SIGHUP)
            await gw.read_until(r"TLS certificate files re-read")
            # A new connection gets the new certificate: trusted with the new CA only.
            async with GatewayClient(f"grpcs://localhost:{gw.port}", root_certificates=new_ca.cert_pem,
                                     client_certificate=pki.client_cert.read_bytes(),
                                     client_key=pki.client_key.read_bytes(), max_retries=1) as fresh:
                assert (await fresh.status(timeout=10)).status == "running"
            stale = client(gw.port, pki)
            try:
                with pytest.raises(GatewayUnavailableError):
                    await stale.status(timeout=5)  # the old CA no longer verifies the server
            finally:
                await stale.close()
            # The stream in flight during the reload ran to its end, and the old connection still works.
            events = []
            while (event := await stream.read()) is not grpc.aio.EOF:
                events.append(event)
            assert "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta") == \
                "Mock response to: Tell me about gateways"
            assert events[-1].WhichOneof("event") == "end"
            assert (await old_client.status(timeout=10)).status == "running"
        finally:
            await old_client.close()
        assert gw.proc.returncode is None  # SIGHUP did not end the process


async def test_sighup_with_unusable_files_keeps_the_old_certificate(
    pki: Pki, tmp_path: Path, reload_files: tuple[Path, Path]
) -> None:
    cert, key = reload_files
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(mock_config(server={"tls": {"cert_file": str(cert), "key_file": str(key)}})))
    async with gateway_process(config) as gw:
        key.write_bytes(pki.ca.issue("mismatch", server=True).key_pem)  # no longer matches live.pem
        gw.proc.send_signal(signal.SIGHUP)
        await gw.read_until(r"TLS reload failed, keeping the current certificate")
        async with client(gw.port, pki, cert=False) as c:
            assert (await c.status(timeout=10)).status == "running"


async def test_sighup_without_tls_is_harmless(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(mock_config()))
    async with gateway_process(config) as gw:
        gw.proc.send_signal(signal.SIGHUP)
        await gw.read_until(r"SIGHUP: no TLS configured")
        async with GatewayClient(f"127.0.0.1:{gw.port}", max_retries=1) as c:
            assert (await c.status(timeout=10)).status == "running"


async def test_client_settings_carry_the_client_certificate(mtls_app: GatewayApp, pki: Pki) -> None:
    from orchestrator_client import GatewayReasoner
    from orchestrator_client.settings import load_gateway_settings

    settings = load_gateway_settings({
        "url": f"127.0.0.1:{mtls_app.port}", "tls": True, "root_certificates": str(pki.ca_file),
        "tls_server_name": "gateway.test", "client_certificate": str(pki.client_cert),
        "client_key": str(pki.client_key), "max_retries": 1,
    })
    async with GatewayReasoner(settings) as reasoner:
        assert await reasoner.reason("What is 25 + 75?") == "100"
    with pytest.raises(ValueError, match="client_certificate and client_key go together"):
        GatewayClient("grpcs://localhost:1", client_certificate=pki.client_cert.read_bytes())


SUBJECT = "CN=orchestrator-1,O=Model Gateway tests"


async def test_a_client_certificate_is_an_api_key(gateway_factory: GatewayFactory, pki: Pki,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """keys[].client_subject: a call with no bearer secret is the key its verified certificate names
    (scope and admin rules included); another trusted certificate is no key; a secret still works."""
    token = "mgk_tls-secret-0123456789"
    config = tls_config(pki, mutual=True)
    config["keys"] = [
        {"name": "orchestrator", "client_subject": SUBJECT, "models": ["mock-1"]},
        {"name": "ops", "sha256": hashlib.sha256(token.encode()).hexdigest(), "admin": True},
    ]
    app = await gateway_factory(config)
    caplog.set_level(logging.INFO, logger="gateway_server.requests")
    async with client(app.port, pki) as c:
        assert (await c.generate("What is 25 + 75?", timeout=10)).content == "100"
        with pytest.raises(GatewayClientError) as denied:  # the key's scope applies
            await c.generate("What is 25 + 75?", model="claude-haiku", timeout=10)
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(GatewayClientError) as admin:  # not an admin key
            await c.usage(timeout=10)
        assert admin.value.code == grpc.StatusCode.PERMISSION_DENIED
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Generated response")]
    assert len(lines) == 1 and " caller=orchestrator" in lines[0], lines
    stranger_cert, stranger_key = pki.client_ca.issue("stranger", server=False).write(pki.dir, "stranger")
    stranger = GatewayClient(f"grpcs://localhost:{app.port}", root_certificates=pki.ca_file.read_bytes(),
                             client_certificate=stranger_cert.read_bytes(), client_key=stranger_key.read_bytes(),
                             max_retries=1)
    async with stranger:
        with pytest.raises(GatewayClientError) as unknown:
            await stranger.status(timeout=10)
        assert unknown.value.code == grpc.StatusCode.UNAUTHENTICATED
    async with client(app.port, pki, api_key=token) as ops:  # a bearer secret is looked up as before
        assert (await ops.status(timeout=10)).status == "running"


def test_a_client_subject_needs_mtls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({**mock_config(), "keys": [{"name": "orchestrator", "client_subject": SUBJECT}]}))
    assert gateway_main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keys[0].client_subject: needs mTLS" in err[0], err
