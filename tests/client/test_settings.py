"""Configuration: the seed-shaped YAML, environment overrides, one clear error per invalid value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator_client import ConfigError, GatewayClient, GatewaySettings, load_config
from orchestrator_client.settings import load_gateway_settings

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "orchestrator.gateway.yaml"

SEED_YAML = """\
orchestrator:
  name: "main-orchestrator"
  reasoning_mode: "hybrid"

  # Use Model Gateway
  ai_provider: "gateway"

  # Gateway Configuration
  gateway:
    url: "http://localhost:8000"
    provider: "anthropic"  # or "bedrock", or null for gateway default
    model: null  # or specific model ID
    api_key: null  # if gateway requires authentication

    # Retry Configuration (optional)
    max_retries: 3  # Maximum retry attempts (default: 3)
    timeout: 60  # Request timeout in seconds (default: 60)
    retry_delay: 1.0  # Base delay between retries in seconds (default: 1.0)

  max_parallel_agents: 3
  default_timeout: 30

# ... rest of config ...
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orchestrator.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_repository_config_loads_with_the_seed_defaults() -> None:
    config = load_config(REPO_CONFIG)
    gw = config.gateway
    assert config.name == "main-orchestrator" and config.ai_provider == "gateway"
    assert (gw.url, gw.target, gw.use_tls) == ("localhost:50051", "localhost:50051", False)
    assert (gw.max_retries, gw.timeout, gw.retry_delay) == (3, 60.0, 1.0)
    assert gw.provider is None and gw.model is None and gw.api_key is None


def test_the_seeds_own_yaml_loads_and_its_http_url_is_accepted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SEED_YAML))
    assert config.gateway.target == "localhost:8000" and not config.gateway.use_tls
    assert config.gateway.provider == "anthropic"
    assert config.max_parallel_agents == 3 and config.default_timeout == 30
    assert config.reasoning_mode == "hybrid"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_GATEWAY_URL", "https://gateway.example.com")
    monkeypatch.setenv("ORCHESTRATOR_GATEWAY_MAX_RETRIES", "5")
    monkeypatch.setenv("ORCHESTRATOR_GATEWAY_API_KEY", "sk-env")
    monkeypatch.setenv("ORCHESTRATOR_GATEWAY_RETRYABLE_CODES", "unavailable, internal")
    monkeypatch.setenv("ORCHESTRATOR_GATEWAY_PROVIDER", "")  # empty: ignored
    gw = load_config(write(tmp_path, SEED_YAML)).gateway
    assert gw.target == "gateway.example.com:443" and gw.use_tls
    assert gw.max_retries == 5 and gw.timeout == 60.0
    assert gw.api_key_value() == "sk-env" and "sk-env" not in repr(gw)
    assert gw.retryable_codes == ("INTERNAL", "UNAVAILABLE")
    assert gw.provider == "anthropic"


def test_precedence_is_arguments_then_environment_then_file_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_GATEWAY_TIMEOUT", "30")
    monkeypatch.setenv("ORCHESTRATOR_GATEWAY_RETRY_DELAY", "0.25")
    gw = load_config(write(tmp_path, SEED_YAML.replace("max_retries: 3", "max_retries: 7"))).gateway
    assert gw.timeout == 30.0  # the environment beats the file's 60
    assert gw.max_retries == 7  # the file beats the default (3)
    assert gw.jitter == 0.0  # the default
    # arguments given in code beat the environment; a mapping stands in for the file below it
    assert GatewaySettings(timeout=5).timeout == 5.0
    assert load_gateway_settings({"timeout": 9, "max_retries": 2}).timeout == 30.0
    assert load_gateway_settings({"timeout": 9, "max_retries": 2}).max_retries == 2


def test_config_path_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, SEED_YAML.replace("main-orchestrator", "from-env"))
    monkeypatch.setenv("ORCHESTRATOR_CONFIG", str(path))
    assert load_config().name == "from-env"


def test_no_file_means_defaults_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCHESTRATOR_GATEWAY_TIMEOUT", "12.5")
    config = load_config()
    assert config.source is None and config.gateway.timeout == 12.5
    assert config.gateway.target == "localhost:50051"


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("max_retries: many", "orchestrator.gateway.max_retries"),
        ("max_retries: 0", "orchestrator.gateway.max_retries"),
        ("timeout: -1", "orchestrator.gateway.timeout"),
        ("retry_delay: soon", "orchestrator.gateway.retry_delay"),
        ("jitter: 3", "orchestrator.gateway.jitter"),
        ("url: 'ftp://gw:21'", "orchestrator.gateway.url"),
        ("retryable_codes: [UNAVAILBLE]", "orchestrator.gateway.retryable_codes"),
        ("max_retry: 3", "orchestrator.gateway.max_retry"),
        ("load_balancing: random", "orchestrator.gateway.load_balancing"),
    ],
)
def test_an_invalid_value_gets_one_clear_error_naming_it(tmp_path: Path, line: str, named: str) -> None:
    document = yaml.safe_load(SEED_YAML)
    document["orchestrator"]["gateway"].update(yaml.safe_load(line))
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, yaml.safe_dump(document)))
    message = str(caught.value)
    assert named in message
    assert str(tmp_path) in message
    assert message.count("orchestrator.gateway.") == 1


def test_an_invalid_environment_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_GATEWAY_TIMEOUT", "forever")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, SEED_YAML))
    message = str(caught.value)
    assert "orchestrator.gateway.timeout" in message and "$ORCHESTRATOR_GATEWAY_TIMEOUT='forever'" in message


def test_an_invalid_orchestrator_value_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"orchestrator\.max_parallel_agents"):
        load_config(write(tmp_path, SEED_YAML.replace("max_parallel_agents: 3", "max_parallel_agents: lots")))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("orchestrator: [1, 2]", "must be a mapping"),
        ("orchestrator:\n  gateway: 5\n", "orchestrator.gateway' must be a mapping"),
        ("- a\n- b\n", "expected a mapping"),
        ("orchestrator: {gateway: {url: [}\n", "invalid YAML"),
    ],
)
def test_a_malformed_file_is_reported(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_a_missing_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    monkeypatch.setenv("ORCHESTRATOR_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match="ORCHESTRATOR_CONFIG"):
        load_config()


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).gateway == GatewaySettings()


def test_client_from_settings(tmp_path: Path) -> None:
    settings = load_gateway_settings({"url": "grpcs://gw.internal", "api_key": "k", "max_retries": 4,
                                      "timeout": 9, "retry_delay": 0.5, "attempt_timeout": 2,
                                      "provider": "bedrock", "model": "sonnet"})
    client = GatewayClient.from_settings(settings)
    assert (client.target, client.tls) == ("gw.internal:443", True)
    assert (client.max_retries, client.timeout, client.retry_delay, client.attempt_timeout) == (4, 9, 0.5, 2)
    assert (client.provider, client.model) == ("bedrock", "sonnet")
    assert client._static_metadata == (("authorization", "Bearer k"),)
    overridden = GatewayClient.from_settings(settings, target="localhost:1", tls=False, max_retries=1)
    assert (overridden.target, overridden.tls, overridden.max_retries) == ("localhost:1", False, 1)
