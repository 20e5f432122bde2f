"""The .pyi stubs from mypy-protobuf give Python callers real types.

Stubs are generated fresh from the contract into a temporary folder (as `make stubs` does), then
one mypy --strict run checks two callers against them: a correct one must pass, a wrong one must
fail with the errors a typed caller expects (wrong field type, wrong attribute type, unknown field).
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import CONTRACT, PROTOS, REPO, VENV_BIN, run

GOOD = """
import grpc

from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc


async def ask(channel: grpc.aio.Channel, prompt: str) -> str:
    stub = pb_grpc.ModelGatewayStub(channel)
    request = pb.GenerateRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content=prompt)], max_tokens=64, temperature=0.2
    )
    request.metadata["team"] = "search"
    response: pb.GenerateResponse = await stub.Generate(request, timeout=30)
    total: int = response.usage.total_tokens
    reason: pb.FinishReason.ValueType = response.finish_reason
    names = [a.provider for a in response.attempts if a.outcome == pb.ATTEMPT_OUTCOME_OK]
    return f"{response.content} {total} {pb.FinishReason.Name(reason)} {names}"


def texts(response: pb.GenerateResponse) -> list[str]:
    return [b.text.text for b in response.blocks if b.WhichOneof("block") == "text"]


def checked_at(health: pb.HealthResponse) -> list[float]:
    return [p.checked_at.ToDatetime().timestamp() for p in health.providers if p.HasField("checked_at")]
"""

BAD = """
from modelgateway.v1 import model_gateway_pb2 as pb

request = pb.GenerateRequest(max_tokens="many")
provider: int = request.provider
request.no_such_field = 1
"""

# mypy's view of the stubs' own imports: grpc ships no types (types-grpcio is not a dependency),
# and the generated .pyi are not ours to lint. The project's pyproject.toml wants the same.
MYPY_INI = """
[mypy]
strict = True
python_version = 3.11

[mypy-grpc.*]
ignore_missing_imports = True

[mypy-modelgateway.*]
ignore_errors = True
"""


@pytest.fixture(scope="module")
def stubs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stubs")
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if shutil.which("protoc-gen-mypy", path=env["PATH"]) is None:
        pytest.skip("protoc-gen-mypy not found: pip install mypy-protobuf (in the dev extras: make setup)")
    result = run(
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        CONTRACT,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, result.output
    for init in ("modelgateway/__init__.py", "modelgateway/v1/__init__.py", "modelgateway/py.typed"):
        (out / init).touch()
    return out


def test_python_generates_cleanly_with_typed_stubs(tmp_path: Path) -> None:
    """What `make stubs` runs: grpcio-tools' protoc with mypy-protobuf's plugins (.pyi beside .py)."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if shutil.which("protoc-gen-mypy", path=env["PATH"]) is None:
        pytest.skip("protoc-gen-mypy not found: pip install mypy-protobuf (in the dev extras: make setup)")
    result = run(
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"--python_out={tmp_path}",
        f"--grpc_python_out={tmp_path}",
        f"--mypy_out={tmp_path}",
        f"--mypy_grpc_out={tmp_path}",
        CONTRACT,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, result.output
    # mypy-protobuf reports each file it writes ("Writing mypy to ...", silenced by its `quiet`
    # option); anything else is a warning.
    said = [
        line
        for line in result.output.splitlines()
        if line.strip() and not line.startswith("Writing mypy to ")
    ]
    assert said == [], result.output
    v1 = tmp_path / "modelgateway" / "v1"
    for name in (
        "model_gateway_pb2.py",
        "model_gateway_pb2.pyi",
        "model_gateway_pb2_grpc.py",
        "model_gateway_pb2_grpc.pyi",
    ):
        assert (v1 / name).is_file(), name
    assert "class ModelGatewayStub" in (v1 / "model_gateway_pb2_grpc.pyi").read_text()
    assert "class GenerateRequest(" in (v1 / "model_gateway_pb2.pyi").read_text()


def test_typed_callers_pass_and_wrong_ones_fail_strict_mypy(stubs_dir: Path) -> None:
    """One mypy run over both callers: the correct one is clean, the wrong one fails as a typed caller
    expects (wrong field type, wrong attribute type, unknown field)."""
    pytest.importorskip("mypy", reason="mypy is not installed (dev extras: make setup)")
    (stubs_dir / "mypy.ini").write_text(MYPY_INI)
    (stubs_dir / "good_caller.py").write_text(textwrap.dedent(GOOD))
    (stubs_dir / "bad_caller.py").write_text(textwrap.dedent(BAD))
    result = run(
        sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir", ".mypy_cache",
        "--no-error-summary", "--show-error-codes", "good_caller.py", "bad_caller.py",
        cwd=stubs_dir, timeout=300,
    )
    output = result.output
    assert "good_caller.py" not in output, output
    assert result.returncode != 0, "mypy accepted wrong types: the stubs are not typed"
    assert "bad_caller.py:4:" in output and "[arg-type]" in output, output  # max_tokens="many"
    assert "bad_caller.py:5:" in output and "[assignment]" in output, output  # str into int
    assert "bad_caller.py:6:" in output and "[attr-defined]" in output, output  # unknown field
