"""Our contract gate: buf lint (STANDARD) and buf breaking against the baseline kept in the repo, as
scripts/lint.sh (`make lint`) runs them on our proto.

These tests prove the gate, not buf's rule catalogue (buf's own tests cover which edits break): our
contract passes lint and matches its baseline; a breaking edit of a copy of our proto fails
`scripts/lint.sh`; a compatible addition must be recorded in the baseline; and the baseline history
rule (a breaking edit committed with a refreshed baseline still fails, unless ALLOW_BREAKING_CHANGE=1;
a clone without history says so).
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


def test_lint_script_wants_additions_recorded(buf: str, tmp_path: Path) -> None:
    """The baseline is the contract's lockfile: a compatible addition passes buf breaking, but lint
    asks for it to be recorded, so that later edits of the new field are checked too."""
    proto = copy_workspace(tmp_path)
    edit(
        proto,
        r"map<string, string> metadata = 9;\n(?=  // Tools the model may call)",
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


# The baseline's own history. Refreshing the baseline in the same commit as a breaking .proto edit
# satisfies the check against the current baseline; scripts/lint.sh therefore also checks the baseline
# against every earlier committed version of it (issue 5: a renumbered or retyped field fails the build).

_GIT_IDENTITY = ("-c", "user.name=Lint Test", "-c", "user.email=lint@example.invalid", "-c", "commit.gpgsign=false")


def _clean_env(**extra: str) -> dict[str, str]:
    """os.environ without GIT_* (a hook's GIT_DIR would point git at another repository)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.pop("ALLOW_BREAKING_CHANGE", None)
    env.update(extra)
    return env


def _git(workspace: Path, *args: str) -> Run:
    result = run("git", *_GIT_IDENTITY, *args, cwd=workspace, env=_clean_env())
    assert result.returncode == 0, f"git {' '.join(args)}: {result.output}"
    return result


def _commit_all(workspace: Path, message: str) -> None:
    _git(workspace, "add", "-A")  # a throwaway repository in tmp_path, never the project's
    _git(workspace, "commit", "-q", "-m", message)


def _update_baseline(buf: str, workspace: Path) -> None:
    result = run(
        "bash", workspace / "scripts" / "lint.sh", "--update-baseline", cwd=workspace, env=_clean_env(BUF=buf)
    )
    assert result.returncode == 0, result.output


def _lint_buf(buf: str, workspace: Path, **extra: str) -> Run:
    return run("bash", workspace / "scripts" / "lint.sh", "buf", cwd=workspace, env=_clean_env(BUF=buf, **extra))


@pytest.fixture(scope="module")
def git_template(buf: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository holding a copy of the contract, its baseline, buf.yaml and the lint scripts,
    with one commit, that lint passes (built once; each test works on a copy)."""
    if shutil.which("git") is None:
        pytest.skip("git not found on PATH: the baseline history check reads the baseline's git history")
    workspace = tmp_path_factory.mktemp("template") / "repo"
    workspace.mkdir()
    copy_workspace(workspace)
    _git(workspace, "init", "-q")
    _commit_all(workspace, "contract")
    first = _lint_buf(buf, workspace)
    assert first.returncode == 0, first.output
    assert "compatible with the 0 earlier committed version(s)" in first.output, first.output
    return workspace


@pytest.fixture
def git_workspace(git_template: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A fresh copy of the template repository; returns (workspace, contract file)."""
    workspace = tmp_path / "repo"
    shutil.copytree(git_template, workspace, symlinks=True)
    return workspace, workspace / "protos" / CONTRACT_REL


def test_a_breaking_edit_with_a_refreshed_baseline_fails_unless_allowed(
    buf: str, git_workspace: tuple[Path, Path]
) -> None:
    """A breaking edit with a refreshed baseline fails, before and after the commit, naming the field
    and the rule; ALLOW_BREAKING_CHANGE=1 (and only "1") lets the deliberate break pass, loudly."""
    workspace, proto = git_workspace
    edit(proto, r"int32 max_tokens = 5;", "int32 max_tokens = 15;")
    _update_baseline(buf, workspace)
    # Before the commit: the working-tree baseline is checked against the committed ones.
    uncommitted = _lint_buf(buf, workspace)
    assert uncommitted.returncode != 0, uncommitted.output
    assert 'with name "max_tokens" on message "GenerateRequest"' in uncommitted.output, uncommitted.output

    _commit_all(workspace, "renumber max_tokens, baseline refreshed")
    result = _lint_buf(buf, workspace)
    assert result.returncode != 0, f"lint accepted a renumbered field with a refreshed baseline:\n{result.output}"
    assert "lint: FAILED: buf" in result.output
    # The current baseline records the edit, so only the history check can catch it.
    assert "does not record" not in result.output
    assert "baseline history: breaking changes against the baseline of" in result.output, result.output
    assert 'with name "max_tokens" on message "GenerateRequest"' in result.output, result.output
    assert "[FIELD_NO_DELETE]" in result.output, result.output
    assert "ALLOW_BREAKING_CHANGE=1" in result.output  # the way out is named
    assert "WARNING" not in result.output

    allowed = _lint_buf(buf, workspace, ALLOW_BREAKING_CHANGE="1")
    assert allowed.returncode == 0, allowed.output
    assert "lint: OK: buf" in allowed.output
    assert "WARNING: ALLOW_BREAKING_CHANGE=1: accepting BREAKING CHANGES" in allowed.output, allowed.output
    assert 'with name "max_tokens" on message "GenerateRequest"' in allowed.output, allowed.output
    # Only "1" opts in; and the earlier version stays in the history, so the next run needs it again.
    refused = _lint_buf(buf, workspace, ALLOW_BREAKING_CHANGE="yes")
    assert refused.returncode != 0, refused.output
    assert "WARNING" not in refused.output


def test_lint_script_accepts_added_field_with_refreshed_baseline(
    buf: str, git_workspace: tuple[Path, Path]
) -> None:
    """Additions are compatible: a new field with its baseline refresh, committed, passes."""
    workspace, proto = git_workspace
    edit(
        proto,
        r"map<string, string> metadata = 9;\n(?=  // Tools the model may call)",
        "map<string, string> metadata = 9;\n  // A new field.\n  string test_addition = 99;\n",
    )
    _update_baseline(buf, workspace)
    _commit_all(workspace, "add GenerateRequest.test_addition")
    result = _lint_buf(buf, workspace)
    assert result.returncode == 0, result.output
    assert "compatible with the 1 earlier committed version(s)" in result.output, result.output
    assert "WARNING" not in result.output


def test_lint_script_without_history_checks_the_current_baseline_only(
    buf: str, git_workspace: tuple[Path, Path], tmp_path: Path
) -> None:
    """A shallow clone (or a copy outside git) lacks the earlier baselines: lint says so and falls back."""
    workspace, proto = git_workspace
    edit(proto, r"int32 max_tokens = 5;", "int32 max_tokens = 15;")
    _update_baseline(buf, workspace)
    _commit_all(workspace, "renumber max_tokens")
    shallow = tmp_path / "shallow"
    cloned = run(
        "git", "clone", "-q", "--depth", "1", workspace.as_uri(), shallow, cwd=tmp_path, env=_clean_env()
    )
    assert cloned.returncode == 0, cloned.output
    result = _lint_buf(buf, shallow)
    assert result.returncode == 0, result.output
    assert "baseline history: shallow clone" in result.output, result.output
    assert "checking against the current baseline only" in result.output

    plain = tmp_path / "plain"
    plain.mkdir()
    copy_workspace(plain)
    result = _lint_buf(buf, plain)
    assert result.returncode == 0, result.output
    # (Were tmp_path inside some git work tree, the copy would be untracked there: no versions either.)
    assert (
        "baseline history: not a git repository" in result.output
        or "has no committed versions yet" in result.output
    ), result.output
