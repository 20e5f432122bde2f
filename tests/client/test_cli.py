"""gatewayctl: readable and JSON output, exit status by error class, in-process and as a process."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path

import grpc
import pytest

from orchestrator_client import cli

from .fault_server import FaultServer, FaultServicer

C = grpc.StatusCode


async def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    """main(argv) in a worker thread (it runs its own event loop) while this loop serves the fault server."""
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(cli.main, list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_generate_prints_the_answer(fault: FaultServicer, fault_server: FaultServer) -> None:
    code, out, err = await run("--target", fault_server.address, "generate", "What is 25 + 75?")
    assert code == 0
    assert out == "100\n"
    assert "provider=fault" in err and "attempts=1" in err and "finish=end_turn" in err
    assert fault.calls[0].request.messages[0].content == "What is 25 + 75?"


async def test_generate_json_and_options(fault: FaultServicer, fault_server: FaultServer) -> None:
    code, out, _ = await run(
        "generate", "What is 25 + 75?", "--target", fault_server.address, "--json", "--system", "terse",
        "--provider", "mock", "--model", "mock-1", "--max-tokens", "16", "--temperature", "0",
        "--metadata", "agent=planner", "--metadata", "run=7", "--request-id", "req-42",
    )
    assert code == 0
    data = json.loads(out)
    assert data["content"] == "100" and data["provider"] == "mock" and data["model"] == "mock-1"
    assert data["request_id"] == "req-42" and data["attempts"] == 1 and data["retries"] == 0
    assert data["usage"] == {"input_tokens": 7, "output_tokens": 1, "total_tokens": 8,
                             "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0,
                             "cost_usd": 0.0}
    request = fault.calls[0].request
    assert (request.system, request.max_tokens, request.temperature) == ("terse", 16, 0.0)
    assert dict(request.metadata) == {"agent": "planner", "run": "7"}
    assert fault.calls[0].metadata["x-request-id"] == "req-42"


async def test_health_providers_status(fault_server: FaultServer) -> None:
    code, out, _ = await run("--target", fault_server.address, "health")
    assert code == 0 and out.startswith("Gateway: degraded")
    assert "mock" in out and "unconfigured" in out and "no credentials" in out

    code, out, _ = await run("--target", fault_server.address, "--json", "health")
    assert code == 0 and json.loads(out)["status"] == "degraded" and json.loads(out)["healthy"] is True

    code, out, _ = await run("--target", fault_server.address, "providers")
    assert code == 0 and "Default provider: mock" in out
    assert "mock -> bedrock" in out and "mock-1, mock-2" in out

    code, out, _ = await run("--target", fault_server.address, "providers", "--json")
    assert code == 0 and [p["name"] for p in json.loads(out)["providers"]] == ["mock", "bedrock"]

    code, out, _ = await run("--target", fault_server.address, "status")
    assert code == 0 and out.startswith("Model Gateway 0.1.0-fault: running")

    code, out, _ = await run("--json", "--target", fault_server.address, "status")
    assert code == 0 and json.loads(out)["default_provider"] == "mock"


@pytest.mark.parametrize(
    ("status", "exit_code"),
    [
        (C.INVALID_ARGUMENT, 3), (C.OUT_OF_RANGE, 3),
        (C.NOT_FOUND, 4), (C.UNIMPLEMENTED, 4),
        (C.UNAVAILABLE, 5), (C.DEADLINE_EXCEEDED, 5), (C.RESOURCE_EXHAUSTED, 5), (C.ABORTED, 5),
        (C.UNAUTHENTICATED, 6), (C.PERMISSION_DENIED, 6), (C.FAILED_PRECONDITION, 6),
        (C.INTERNAL, 7), (C.UNKNOWN, 7), (C.DATA_LOSS, 7),
    ],
    ids=lambda v: v.name if isinstance(v, grpc.StatusCode) else str(v),
)
async def test_exit_status_by_error_class(
    status: grpc.StatusCode, exit_code: int, fault: FaultServicer, fault_server: FaultServer
) -> None:
    fault.fail(1, status, message="nope", reason="SOME_REASON")
    code, out, err = await run("--target", fault_server.address, "--max-retries", "1", "-q",
                               "generate", "What is 25 + 75?")
    assert code == exit_code == cli.exit_code_for(status)
    assert out == ""
    assert f"{status.name}: nope [SOME_REASON]" in err


async def test_a_message_over_the_size_limit_exits_3_not_5(fault: FaultServicer, fault_server: FaultServer) -> None:
    """RESOURCE_EXHAUSTED without rate-limit details is gRPC's size limit: an invalid request, not retried."""
    fault.fail(3, C.RESOURCE_EXHAUSTED, message="Received message larger than max (5242880 vs. 4194304)")
    code, out, err = await run("--target", fault_server.address, "--retry-delay", "0.01", "generate", "x")
    assert code == 3 and out == "" and fault.count == 1
    assert "gatewayctl: error: RESOURCE_EXHAUSTED: Received message larger than max" in err
    assert "Retrying" not in err
    code, out, _ = await run("--target", fault_server.address, "--json", "generate", "x")
    assert code == 3 and fault.count == 2
    error = json.loads(out)["error"]
    assert error["error"] == "MessageTooLargeError" and error["code"] == "RESOURCE_EXHAUSTED"
    assert not error["retryable"] and error["attempts"] == 1


async def test_json_errors_for_scripts(fault: FaultServicer, fault_server: FaultServer) -> None:
    fault.fail(1, C.NOT_FOUND, message="no such provider", reason="UNKNOWN_PROVIDER",
               metadata={"provider": "nope"})
    code, out, _ = await run("--target", fault_server.address, "--json", "generate", "x", "-p", "nope")
    assert code == 4
    error = json.loads(out)["error"]
    assert error["code"] == "NOT_FOUND" and error["reason"] == "UNKNOWN_PROVIDER"
    assert error["metadata"] == {"provider": "nope"} and error["attempts"] == 1 and not error["retryable"]


async def test_gateway_down_retries_and_exits_5(refused_address: str) -> None:
    code, out, err = await run("--target", refused_address, "--retry-delay", "0.01", "status")
    assert code == 5 and out == ""
    assert "WARNING Gateway connection error (attempt 1/3): UNAVAILABLE" in err
    assert "INFO Retrying in 0.01s..." in err
    assert "ERROR Gateway request failed after 3 attempts" in err
    assert "gatewayctl: error: UNAVAILABLE" in err


async def test_unhealthy_gateway_exits_8(fault: FaultServicer, fault_server: FaultServer) -> None:
    from modelgateway.v1 import model_gateway_pb2 as pb

    fault.health_status = pb.HEALTH_STATUS_UNHEALTHY
    code, out, _ = await run("--target", fault_server.address, "health")
    assert code == 8 and out.startswith("Gateway: unhealthy")


async def test_target_and_key_from_the_config(
    fault: FaultServicer, fault_server: FaultServer, tmp_path: Path
) -> None:
    path = tmp_path / "orch.yaml"
    path.write_text(f"orchestrator:\n  gateway:\n    url: http://{fault_server.address}\n    api_key: sk-1\n")
    code, out, _ = await run("--config", str(path), "status")
    assert code == 0 and "running" in out
    assert fault.calls[0].metadata["authorization"] == "Bearer sk-1"
    code, _, _ = await run("--config", str(path), "--api-key", "sk-2", "status")
    assert code == 0 and fault.calls[1].metadata["authorization"] == "Bearer sk-2"


async def test_prompt_from_stdin(fault: FaultServicer, fault_server: FaultServer,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is 25 + 75?\n"))
    code, out, _ = await run("--target", fault_server.address, "generate", "-")
    assert code == 0 and out == "100\n"
    assert fault.calls[0].request.messages[0].content == "What is 25 + 75?\n"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["generate"],
        ["status", "--max-retries", "many"],
        ["generate", "x", "--metadata", "novalue"],
    ],
)
async def test_usage_errors_exit_2(argv: list[str]) -> None:
    code, out, err = await run(*argv)
    assert code == 2 and out == ""
    assert "usage: gatewayctl" in err or "error" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--target", "ftp://x:1", "status"],
        ["--target", "localhost:1", "--timeout", "-1", "status"],
        ["--target", "localhost:1", "--max-retries", "0", "status"],
        ["--config", "/nonexistent/orchestrator.yaml", "status"],
    ],
)
async def test_configuration_errors_exit_2(argv: list[str]) -> None:
    code, out, err = await run(*argv)
    assert code == 2 and out == ""
    assert "configuration error" in err


async def test_config_error_in_json_mode() -> None:
    code, out, _ = await run("--json", "--config", "/nonexistent.yaml", "status")
    assert code == 2 and "not found" in json.loads(out)["error"]["message"]


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "generate" in text and "health" in text and "providers" in text and "status" in text
    assert "exit status:" in text and "5    unavailable" in text
    assert cli.main(["generate", "--help"]) == 0
    assert "--temperature" in capsys.readouterr().out


@pytest.mark.parametrize("argv, says", [
    ([], "usage per API key"), (["generate"], "Generate a completion"), (["count"], "input tokens"),
    (["health"], "Health of the gateway"), (["providers"], "The configured providers"),
    (["status"], "the worker that answered"), (["usage"], "needs an admin key"), (["keys"], "Make an API key"),
    (["keys", "new"], "a new random secret"), (["keys", "hash"], "SHA-256 of a secret"),
])
def test_every_command_help_says_what_it_does(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*argv, "--help"]) == 0
    assert says in capsys.readouterr().out.split("options:")[0]


# ---------------------------------------------------------------------- as a real process


async def spawn(*argv: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_gatewayctl_console_script(fault_server: FaultServer) -> None:
    script = Path(sys.executable).with_name("gatewayctl")
    assert script.exists(), "install the project (make setup) to get the gatewayctl console script"
    code, out, err = await spawn(
        str(script), "--target", fault_server.address, "generate", "What is 25 + 75?"
    )
    assert (code, out) == (0, "100\n"), err


async def test_python_dash_m(fault_server: FaultServer, refused_address: str) -> None:
    code, out, err = await spawn(
        sys.executable, "-m", "orchestrator_client", "--target", fault_server.address, "--json", "status"
    )
    assert code == 0, err
    assert json.loads(out)["status"] == "running"
    code, out, err = await spawn(sys.executable, "-m", "orchestrator_client", "--target", refused_address,
                                 "--max-retries", "1", "health")
    assert code == 5 and "UNAVAILABLE" in err


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err


@pytest.mark.parametrize(
    "argv",
    # One handler (main()'s BrokenPipeError) behind each kind of writer: a JSON document, plain text,
    # text written piece by piece, JSON lines.
    [
        ["providers", "--json"],
        ["generate", "What is 25 + 75?"],
        ["generate", "--stream", "What is 25 + 75?"],
        ["--json", "generate", "--stream", "What is 25 + 75?"],
    ],
    ids=" ".join,
)
async def test_stdout_closed_before_the_output_exits_quietly(argv: list[str], fault_server: FaultServer) -> None:
    """``gatewayctl providers --json | head -1`` with the reader gone before gatewayctl writes a byte:
    no BrokenPipeError traceback, exit status 141 (128 + SIGPIPE) as for any writer into a closed pipe."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    try:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("gatewayctl")), "--target", fault_server.address, *argv,
            stdout=write_end, stderr=asyncio.subprocess.PIPE, env=env,
        )
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    _no_traceback(err.decode())
    assert process.returncode == cli.EXIT_BROKEN_PIPE == 141


async def test_piped_into_a_reader_that_stops_after_one_line(fault: FaultServicer, fault_server: FaultServer) -> None:
    """``gatewayctl generate --stream ... | head -1`` with an answer far larger than the pipe's buffer
    (written piece by piece, so the writes after the reader has gone fail)."""
    from .fault_server import Reply

    fault.then(Reply("line\n " * 30_000))
    read_end, write_end = os.pipe()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    try:
        reader = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; print(sys.stdin.readline(), end='')",
            stdin=read_end, stdout=asyncio.subprocess.PIPE,
        )
        writer = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("gatewayctl")), "--target", fault_server.address,
            "generate", "--stream", "x", stdout=write_end, stderr=asyncio.subprocess.PIPE, env=env,
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    first, _ = await asyncio.wait_for(reader.communicate(), 60)
    _, err = await asyncio.wait_for(writer.communicate(), 60)
    assert first.decode() == "line\n"
    _no_traceback(err.decode())
    assert writer.returncode == 141


# ---------------------------------------------------------------------- generate --stream


class _FlushCounter(io.StringIO):
    """stdout that records what had been written at each flush."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[str] = []

    def flush(self) -> None:
        self.flushed.append(self.getvalue())
        super().flush()


async def test_generate_stream_prints_deltas_as_they_arrive(
    fault: FaultServicer, fault_server: FaultServer
) -> None:
    from .fault_server import Reply

    fault.then(Reply("one two three"))
    out, err = _FlushCounter(), io.StringIO()
    code = await asyncio.to_thread(cli.main, ["--target", fault_server.address, "generate", "--stream", "count",
                                              "--request-id", "req-s"], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert out.getvalue() == "one two three\n"
    flushed = out.flushed  # flushed after each delta
    assert flushed.index("one") < flushed.index("one two") < flushed.index("one two three")
    summary = err.getvalue()
    assert summary.startswith("-- provider=fault model=fault-model-1 finish=end_turn tokens=7+3")
    assert "first_token=0.2ms" in summary and "attempts=1 request_id=req-s" in summary
    assert fault.calls_to("GenerateStream")[0].request.messages[0].content == "count"


async def test_generate_stream_json_lines(fault: FaultServicer, fault_server: FaultServer) -> None:
    code, out, err = await run("--target", fault_server.address, "--json", "generate", "--stream", "x")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["type"] for line in lines] == ["start", "text", "end"]
    assert lines[0]["provider"] == "fault" and lines[1] == {"type": "text", "index": 0, "text": "100"}
    assert lines[2]["finish_reason"] == "end_turn" and lines[2]["client_attempts"] == 1
    assert lines[2]["attempts"][0]["provider"] == "fault" and err == ""


async def test_generate_stream_retries_before_the_first_event(
    fault: FaultServicer, fault_server: FaultServer
) -> None:
    fault.fail(1, C.UNAVAILABLE)
    code, out, err = await run("--target", fault_server.address, "--retry-delay", "0.01", "generate", "--stream",
                               "x")
    assert code == 0 and out == "100\n"
    assert "WARNING Gateway connection error (attempt 1/3): UNAVAILABLE" in err and "attempts=2" in err


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
async def test_generate_stream_interrupted_exits_5(
    as_json: bool, fault: FaultServicer, fault_server: FaultServer
) -> None:
    from .fault_server import Interrupt

    fault.then(Interrupt(after=2))
    code, out, err = await run("--target", fault_server.address, *(["--json"] if as_json else []),
                               "generate", "--stream", "x")
    assert code == 5 and fault.count == 1
    if as_json:
        lines = [json.loads(line) for line in out.splitlines()]
        assert [line.get("type") for line in lines[:-1]] == ["start", "text", "text"]
        assert lines[-1]["error"]["reason"] == "STREAM_INTERRUPTED" and lines[-1]["error"]["attempts"] == 1
    else:
        assert out == "one two\n"  # the partial text, its line closed
        assert "gatewayctl: error: UNAVAILABLE" in err and "STREAM_INTERRUPTED" in err


async def test_generate_stream_refused_exits_3(fault: FaultServicer, fault_server: FaultServer) -> None:
    fault.fail(1, C.INVALID_ARGUMENT, message="bad", reason="INVALID_ARGUMENT")
    code, out, err = await run("--target", fault_server.address, "generate", "--stream", "x")
    assert code == 3 and out == "" and "INVALID_ARGUMENT: bad" in err
