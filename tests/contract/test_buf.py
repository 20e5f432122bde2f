"""buf lint (STANDARD) and buf breaking against the baseline kept in the repo.

The breaking-change tests work on a copy of protos/ in a temporary folder: the copy is changed the
way a careless edit would change the contract, and buf (and scripts/lint.sh, which `make lint` runs)
must then fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from .conftest import BASELINE, CONTRACT, PROTOS, REPO, Run, run

CONTRACT_REL = CONTRACT.relative_to(PROTOS)


def copy_workspace(dest: Path) -> Path:
    """buf.yaml + protos/ (+ the lint scripts) in dest; returns the copied contract file."""
    shutil.copy2(REPO / "buf.yaml", dest / "buf.yaml")
    shutil.copytree(PROTOS, dest / "protos")
    (dest / "scripts").mkdir()
    for script in ("lint.sh", "node_deps.sh"):
        shutil.copy2(REPO / "scripts" / script, dest / "scripts" / script)
    return dest / "protos" / CONTRACT_REL


def edit(proto: Path, pattern: str, replacement: str) -> None:
    """Replaces exactly one match of pattern, so that a test never silently checks nothing."""
    text = proto.read_text()
    new, count = re.subn(pattern, replacement, text)
    assert count == 1, f"expected one {pattern!r} in {proto.name}: update this test with the contract"
    proto.write_text(new)


def breaking(buf: str, workspace: Path) -> Run:
    return run(buf, "breaking", "--against", BASELINE, cwd=workspace)


def test_lint_is_clean(buf: str) -> None:
    result = run(buf, "lint", cwd=REPO)
    assert result.returncode == 0, result.output


def test_contract_is_compatible_with_baseline(buf: str) -> None:
    result = run(buf, "breaking", "--against", BASELINE, cwd=REPO)
    assert result.returncode == 0, result.output


def test_baseline_is_an_image_of_the_contract() -> None:
    image = json.loads(BASELINE.read_text())
    files = {f["name"]: f for f in image["file"]}
    contract = files[str(CONTRACT_REL)]
    assert contract["package"] == "modelgateway.v1"
    assert [s["name"] for s in contract["service"]] == ["ModelGateway"]
    # No source info: comment edits never change the baseline.
    assert "sourceCodeInfo" not in contract


def test_untouched_copy_passes(buf: str, tmp_path: Path) -> None:
    copy_workspace(tmp_path)
    result = breaking(buf, tmp_path)
    assert result.returncode == 0, result.output


def test_renumbered_field_fails(buf: str, tmp_path: Path) -> None:
    proto = copy_workspace(tmp_path)
    edit(proto, r"int32 max_tokens = 5;", "int32 max_tokens = 15;")
    result = breaking(buf, tmp_path)
    assert result.returncode != 0, "buf breaking accepted a renumbered field"
    assert "max_tokens" in result.output
    assert '"5"' in result.output  # the wire number that went away


def test_retyped_field_fails(buf: str, tmp_path: Path) -> None:
    proto = copy_workspace(tmp_path)
    edit(proto, r"int32 max_tokens = 5;", "int64 max_tokens = 5;")
    result = breaking(buf, tmp_path)
    assert result.returncode != 0, "buf breaking accepted a retyped field"
    assert "changed type" in result.output and "max_tokens" in result.output


def test_renamed_enum_value_fails(buf: str, tmp_path: Path) -> None:
    proto = copy_workspace(tmp_path)
    edit(proto, r"ROLE_ASSISTANT = 2;", "ROLE_MODEL = 2;")
    result = breaking(buf, tmp_path)
    assert result.returncode != 0, (
        "buf breaking accepted a renamed enum value (breaks JSON and generated code)"
    )


def test_removed_rpc_fails(buf: str, tmp_path: Path) -> None:
    proto = copy_workspace(tmp_path)
    edit(proto, r"\n  rpc GetStatus\(GetStatusRequest\) returns \(GetStatusResponse\);", "")
    result = breaking(buf, tmp_path)
    assert result.returncode != 0, "buf breaking accepted a removed RPC"
    assert "GetStatus" in result.output


def test_changed_language_option_fails(buf: str, tmp_path: Path) -> None:
    """A per-language option is part of the contract: changing it breaks that language's callers."""
    proto = copy_workspace(tmp_path)
    edit(
        proto, r'option java_package = "dev.modelgateway.v1";', 'option java_package = "dev.modelgateway.v2";'
    )
    result = breaking(buf, tmp_path)
    assert result.returncode != 0, "buf breaking accepted a changed java_package"
    assert "java_package" in result.output, result.output


def test_additions_pass(buf: str, tmp_path: Path) -> None:
    """New fields, messages, enum values and RPCs are compatible (AIP-180)."""
    proto = copy_workspace(tmp_path)
    edit(
        proto,
        r"map<string, string> metadata = 9;\n",
        "map<string, string> metadata = 9;\n  // A new field.\n  string test_addition = 99;\n",
    )
    edit(proto, r"ROLE_ASSISTANT = 2;\n", "ROLE_ASSISTANT = 2;\n  ROLE_TEST_ADDITION = 99;\n")
    edit(
        proto,
        r"rpc GetStatus\(GetStatusRequest\) returns \(GetStatusResponse\);",
        "rpc GetStatus(GetStatusRequest) returns (GetStatusResponse);\n"
        "  rpc TestAddition(TestAdditionRequest) returns (TestAdditionResponse);",
    )
    proto.write_text(
        proto.read_text() + "\nmessage TestAdditionRequest {}\n\nmessage TestAdditionResponse {}\n"
    )
    result = breaking(buf, tmp_path)
    assert result.returncode == 0, result.output


def _lint_script(buf: str, workspace: Path) -> Run:
    env = {**os.environ, "BUF": buf}
    return run("bash", workspace / "scripts" / "lint.sh", "buf", cwd=workspace, env=env)


def test_lint_script_fails_on_renumbered_field(buf: str, tmp_path: Path) -> None:
    """What `make lint` runs (scripts/lint.sh) fails, naming buf and the field, when a field is renumbered."""
    proto = copy_workspace(tmp_path)
    edit(proto, r"int32 max_tokens = 5;", "int32 max_tokens = 15;")
    result = _lint_script(buf, tmp_path)
    assert result.returncode != 0, result.output
    assert "lint: FAILED: buf" in result.output
    assert 'with name "max_tokens" on message "GenerateRequest"' in result.output, result.output
    assert "existing clients would break" in result.output


def test_lint_script_updates_the_baseline(buf: str, tmp_path: Path) -> None:
    """--update-baseline records a deliberate change; afterwards breaking passes against it."""
    proto = copy_workspace(tmp_path)
    edit(proto, r"int32 max_tokens = 5;", "int32 max_tokens = 15;")
    env = {**os.environ, "BUF": buf}
    updated = run("bash", tmp_path / "scripts" / "lint.sh", "--update-baseline", cwd=tmp_path, env=env)
    assert updated.returncode == 0, updated.output
    copied_baseline = tmp_path / BASELINE.relative_to(REPO)
    assert copied_baseline.read_text() != BASELINE.read_text()
    after = run(buf, "breaking", "--against", copied_baseline, cwd=tmp_path)
    assert after.returncode == 0, after.output
    assert "does not record" not in _lint_script(buf, tmp_path).output


def test_lint_script_wants_additions_recorded(buf: str, tmp_path: Path) -> None:
    """The baseline is the contract's lockfile: a compatible addition passes buf breaking, but lint
    asks for it to be recorded, so that later edits of the new field are checked too."""
    proto = copy_workspace(tmp_path)
    edit(
        proto,
        r"map<string, string> metadata = 9;\n",
        "map<string, string> metadata = 9;\n  string test_addition = 99;\n",
    )
    result = _lint_script(buf, tmp_path)
    assert result.returncode != 0
    assert "does not record yet" in result.output and "--update-baseline" in result.output, result.output
    env = {**os.environ, "BUF": buf}
    assert (
        run("bash", tmp_path / "scripts" / "lint.sh", "--update-baseline", cwd=tmp_path, env=env).returncode
        == 0
    )
    assert "does not record" not in _lint_script(buf, tmp_path).output


def test_baseline_records_the_current_contract(buf: str, tmp_path: Path) -> None:
    """Recording the contract as it is rewrites the committed baseline byte for byte."""
    copy_workspace(tmp_path)
    env = {**os.environ, "BUF": buf}
    updated = run("bash", tmp_path / "scripts" / "lint.sh", "--update-baseline", cwd=tmp_path, env=env)
    assert updated.returncode == 0, updated.output
    if (tmp_path / BASELINE.relative_to(REPO)).read_text() != BASELINE.read_text():
        pytest.fail(
            f"{BASELINE.relative_to(REPO)} does not record the current contract: run "
            "scripts/lint.sh --update-baseline and commit the baseline with the .proto change"
        )
