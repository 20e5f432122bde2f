"""Build hook: generate the gRPC stubs from protos/ when building a wheel from a clean tree."""

import pathlib
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).parent


class BuildWithStubs(build_py):
    def run(self) -> None:
        stub = ROOT / "modelgateway" / "v1" / "model_gateway_pb2.py"
        if not stub.exists():
            protos = sorted(str(p) for p in (ROOT / "protos").rglob("*.proto"))
            subprocess.check_call(
                [sys.executable, "-m", "grpc_tools.protoc", "-Iprotos", "--python_out=.",
                 "--grpc_python_out=.", "--mypy_out=.", "--mypy_grpc_out=.", *protos],
                cwd=ROOT,
            )
            for init in ("modelgateway/__init__.py", "modelgateway/v1/__init__.py", "modelgateway/py.typed"):
                (ROOT / init).touch()
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
