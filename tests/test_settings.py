"""Configuration: the shipped YAML, environment overrides, and one clear line + exit 2 for bad configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway_server.cli import main
from gateway_server.settings import (
    AnthropicProviderConfig,
    BedrockProviderConfig,
    ConfigError,
    GatewaySettings,
    load_settings,
    settings_from_mapping,
)

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_config_loads() -> None:
    s = load_settings(ROOT / "config" / "gateway.yaml")
    assert s.default_provider == "anthropic"
    assert s.port == 50051
    assert list(s.providers) == ["anthropic", "bedrock", "mock"]
    bedrock = s.providers["bedrock"]
    assert isinstance(bedrock, BedrockProviderConfig)
    assert bedrock.default_model == "global.anthropic.claude-sonnet-5-5"  # the seed's `model_id` spelling
    assert s.fallback.fallback_order == ["anthropic", "bedrock"]
    assert s.fallback.max_fallback_attempts == 2
    assert s.rate_limit.requests_per_minute == 60


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "6000")
    monkeypatch.setenv("GATEWAY_HOST", "127.0.0.1")
    monkeypatch.setenv("GATEWAY_LOG_LEVEL", "debug")
    monkeypatch.setenv("GATEWAY_ANTHROPIC_API_KEY", "sk-ant-from-env")
    monkeypatch.setenv("GATEWAY_AWS_REGION", "eu-central-1")
    monkeypatch.setenv("GATEWAY_FALLBACK__ENABLED", "false")
    s = load_settings(ROOT / "config" / "gateway.yaml")
    assert (s.port, s.host, s.log_level) == (6000, "127.0.0.1", "DEBUG")
    assert s.fallback.enabled is False
    anthropic = s.providers["anthropic"]
    assert isinstance(anthropic, AnthropicProviderConfig)
    key = s.anthropic_key(anthropic)
    assert key is not None and key.get_secret_value() == "sk-ant-from-env"
    assert "sk-ant-from-env" not in repr(s) and "sk-ant-from-env" not in str(s.model_dump())
    bedrock = s.providers["bedrock"]
    assert isinstance(bedrock, BedrockProviderConfig)
    assert s.bedrock_region(bedrock) == "us-east-1"  # the file's own region wins for that provider
    assert s.bedrock_region(bedrock.model_copy(update={"region": None})) == "eu-central-1"


def test_config_path_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("default_provider: m\nproviders:\n  m:\n    type: mock\n")
    monkeypatch.setenv("GATEWAY_CONFIG", str(path))
    assert list(load_settings().providers) == ["m"]


BAD_CONFIGS = [
    ("providers:\n  a:\n    type: openai\n", "providers.a"),
    ("default_provider: a\nproviders:\n  a:\n    type: mock\nfallback:\n  fallback_order: [a, b]\n",
     "fallback.fallback_order: 'b' is not a configured provider"),
    ("default_provider: a\nproviders:\n  a:\n    type: mock\n    timeout: -5\n", "providers.a.timeout"),
    ("default_provider: a\nproviders:\n  a:\n    type: mock\n  b: [unclosed\n", "malformed YAML at line 6, column 1"),
    ("default_provider: x\nproviders:\n  a:\n    type: mock\n", "default_provider: 'x' is not a configured"),
    ("default_provider: a\nproviders:\n  a:\n    type: mock\n    timeoutt: 3\n", "providers.a.timeoutt: unknown key"),
    ("default_provider: a\nproviders:\n  a:\n    type: mock\nport: lots\n", "port"),
    ("- just\n- a list\n", "top level must be a mapping"),
    ("default_provider: a\nproviders:\n  a:\n    type: anthropic\n", "providers.a.default_model: Field required"),
]


@pytest.mark.parametrize(("yaml_text", "expected"), BAD_CONFIGS)
def test_bad_config_is_one_clear_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  yaml_text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=r"."):
        load_settings(path)
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert expected in err
    assert "Traceback" not in err


def test_bad_config_from_the_command_line_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("default_provider: a\nproviders:\n  a:\n    type: mock\n    timeout: -1\n")
    proc = subprocess.run([sys.executable, "-m", "gateway_server", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"model-gateway: {path}: invalid config: providers.a.timeout: Input should be greater than 0"]
    assert proc.stdout == ""


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_rate_limit_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"rate_limit\.requests_per_minute"):
        settings_from_mapping({"default_provider": "a", "providers": {"a": {"type": "mock"}},
                               "rate_limit": {"requests_per_minute": 0}}, env_file=None)


def test_precedence_is_flag_then_environment_then_file_then_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    path = tmp_path / "g.yaml"
    path.write_text("default_provider: m\nport: 7001\nhost: 10.0.0.1\nlog_level: warning\n"
                    "fallback:\n  retry_original: true\n  max_fallback_attempts: 3\nproviders:\n  m:\n    type: mock\n")
    monkeypatch.setenv("GATEWAY_PORT", "7002")
    monkeypatch.setenv("GATEWAY_HOST", "10.0.0.2")
    monkeypatch.setenv("GATEWAY_FALLBACK__MAX_FALLBACK_ATTEMPTS", "4")
    s = load_settings(path, port=7003)
    assert s.port == 7003  # the flag beats the environment and the file
    assert s.host == "10.0.0.2"  # the environment beats the file
    assert s.log_level == "WARNING"  # the file beats the default
    assert s.log_format == "text"  # the default
    # nested keys merge: the environment changes one key of the file's section, the rest stays
    assert (s.fallback.max_fallback_attempts, s.fallback.retry_original) == (4, True)
    assert main(["--config", str(path), "--port", "7004", "--check-config"]) == 0


@pytest.mark.parametrize("in_env", [True, False], ids=["env-set", "env-unset"])
def test_the_anthropic_key_from_the_environment_wins_over_the_files(
    in_env: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "g.yaml"
    path.write_text("default_provider: a\nproviders:\n  a:\n    type: anthropic\n    default_model: m\n"
                    "    api_key: sk-ant-from-file\n")
    if in_env:
        monkeypatch.setenv("GATEWAY_ANTHROPIC_API_KEY", "sk-ant-from-env")
    else:
        monkeypatch.delenv("GATEWAY_ANTHROPIC_API_KEY", raising=False)
    s = load_settings(path)
    anthropic = s.providers["a"]
    assert isinstance(anthropic, AnthropicProviderConfig)
    key = s.anthropic_key(anthropic)
    assert key is not None
    assert key.get_secret_value() == ("sk-ant-from-env" if in_env else "sk-ant-from-file")


def test_a_mapping_stands_in_for_the_file_below_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "7010")
    s = settings_from_mapping({"default_provider": "a", "port": 7011, "providers": {"a": {"type": "mock"}}},
                              env_file=None)
    assert s.port == 7010


def test_settings_built_in_code_read_the_environment_but_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_HOST", "10.0.0.9")
    monkeypatch.setenv("GATEWAY_PORT", "7020")
    s = GatewaySettings(default_provider="m", providers={"m": {"type": "mock"}}, port=7021, _env_file=None)
    assert (s.host, s.port) == ("10.0.0.9", 7021)  # arguments beat the environment, which beats defaults


def test_a_config_path_that_is_a_directory_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*: Is a directory"):
        load_settings(tmp_path)
