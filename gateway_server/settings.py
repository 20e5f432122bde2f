"""Gateway configuration: one YAML file (``--config`` / ``GATEWAY_CONFIG``) plus environment.

Precedence, highest first: environment variables (``GATEWAY_*``), a ``.env`` file in the working
directory, the YAML file, the defaults below. Secrets are ``SecretStr`` and never printed.

Every model forbids unknown keys, so a typo in the YAML stops start-up with the key's path named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from gateway_server.pricing import ModelPrice

DEFAULT_CONFIG_PATH = "config/gateway.yaml"


class ConfigError(Exception):
    """An invalid configuration: the message is one line naming the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderSettings(_Strict):
    """What every provider type has."""

    enabled: bool = True
    # The seed's Bedrock entry spells it `model_id`; both are accepted.
    default_model: str = Field(validation_alias=AliasChoices("default_model", "model_id"), min_length=1)
    models: list[str] = Field(default_factory=list)
    timeout: float = Field(60.0, gt=0, description="Seconds one call to this provider may take.")
    max_retries: int = Field(2, ge=0, le=10, description="Re-tries of this provider on fast transient failures.")
    # Streaming: the first content event must come within this (else fallback); the whole stream
    # must end within stream_timeout.
    first_token_timeout: float | None = Field(None, gt=0, description="Default: timeout.")
    stream_timeout: float = Field(600.0, gt=0)


class AnthropicProviderConfig(ProviderSettings):
    type: Literal["anthropic"]
    base_url: str | None = None
    api_key: SecretStr | None = None  # prefer GATEWAY_ANTHROPIC_API_KEY
    max_connections: int = Field(100, ge=1)
    http_transport: Literal["aiohttp", "httpx"] = "aiohttp"


class BedrockProviderConfig(ProviderSettings):
    type: Literal["bedrock"]
    region: str | None = None  # else GATEWAY_AWS_REGION
    endpoint_url: str | None = None
    executor_workers: int = Field(16, ge=1, le=256, description="Threads for the blocking boto3 calls.")
    connect_timeout: float = Field(5.0, gt=0)


class MockProviderConfig(ProviderSettings):
    type: Literal["mock"]
    default_model: str = Field("mock-1", validation_alias=AliasChoices("default_model", "model_id"), min_length=1)
    latency_ms: float = Field(0.0, ge=0)
    # Failure injection: the first `fail_times` calls fail with `fail_with` (-1: every call).
    fail_with: (
        Literal["unavailable", "overloaded", "rate_limited", "timeout", "auth", "invalid_request", "malformed"]
        | None
    ) = None
    fail_times: int = Field(-1, ge=-1)
    retry_after: float | None = Field(None, ge=0)
    # Streaming: delay between chunks (one word each); a failure after this many chunks.
    stream_chunk_delay_ms: float = Field(0.0, ge=0)
    fail_after_chunks: int | None = Field(None, ge=0)


ProviderConfig = Annotated[
    AnthropicProviderConfig | BedrockProviderConfig | MockProviderConfig, Field(discriminator="type")
]


class FallbackConfig(_Strict):
    enabled: bool = True
    fallback_order: list[str] = Field(default_factory=list)
    max_fallback_attempts: int = Field(2, ge=1, description="Providers tried in all, the first one included.")
    retry_original: bool = False
    # A request a provider rejects for its content is not sent elsewhere unless this is set.
    on_invalid_request: bool = False


class LimitSettings(_Strict):
    """Limits of one API key or one provider account; unset: no limit of that kind."""

    requests_per_minute: int | None = Field(None, ge=1)
    # Input + output tokens.
    tokens_per_minute: int | None = Field(None, ge=1)
    max_concurrent: int | None = Field(None, ge=1, description="Calls in flight at once.")


class BudgetSettings(_Strict):
    """Spend of one API key in USD, per UTC day and per UTC calendar month; unset: no budget."""

    daily_usd: float | None = Field(None, gt=0)
    monthly_usd: float | None = Field(None, gt=0)


class ApiKeyConfig(_Strict):
    """One caller's API key (see README "Keys, limits and budgets"). The secret itself is never in the
    config: either its SHA-256 (``gatewayctl keys hash``) or the name of an environment variable
    holding it."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 of the secret, hex.")
    secret_env: str | None = Field(None, min_length=1, description="An environment variable holding the secret.")
    team: str = ""
    # Empty: every provider / model. Models may be aliases (an alias allows its ids and the reverse).
    providers: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    limits: LimitSettings | None = None
    budget: BudgetSettings = BudgetSettings()
    admin: bool = Field(False, description="May call the admin RPCs (GetUsage).")

    @model_validator(mode="after")
    def _one_secret(self) -> ApiKeyConfig:
        if (self.sha256 is None) == (self.secret_env is None):
            raise ValueError("set exactly one of sha256 and secret_env")
        return self


class RedisLimiterConfig(_Strict):
    url: str = "redis://127.0.0.1:6379/0"
    timeout_ms: float = Field(50.0, gt=0, description="Per Redis command; connect included.")
    # All the limiter's keys share one hash tag, "{<key_prefix>}", so one script decides atomically.
    key_prefix: str = Field("mg", min_length=1, pattern=r"^[^{}\s]+$")
    # After a failure, calls skip Redis (applying on_failure) for this long before it is tried again.
    retry_interval: float = Field(1.0, ge=0)
    # A Redis Cluster (url: any node): every limiter key is in the slot of the one hash tag.
    cluster: bool = False


class RateLimitConfig(_Strict):
    """Where limits, concurrency and budgets are counted, and the defaults (README "Keys, limits and
    budgets"). Each key's own ``limits`` always apply; ``enabled`` applies ``requests_per_minute`` and
    ``tokens_per_minute`` to every caller without limits of its own."""

    enabled: bool = False
    requests_per_minute: int = Field(60, ge=1)
    tokens_per_minute: int = Field(100_000, ge=1)
    backend: Literal["memory", "redis"] = "memory"
    redis: RedisLimiterConfig = RedisLimiterConfig()
    # Redis unreachable: admit calls without limits (fail_open) or refuse them UNAVAILABLE (fail_closed).
    on_failure: Literal["fail_open", "fail_closed"] = "fail_open"
    # A provider account's own limits: the gateway skips (falls back from) a provider at its limit.
    providers: dict[str, LimitSettings] = Field(default_factory=dict)
    # Lease of a concurrency slot: a replica that dies mid-call frees its slots after this long.
    concurrency_lease: float = Field(900.0, gt=0)


class HealthCheckConfig(_Strict):
    enabled: bool = True
    interval: float = Field(30.0, gt=0, description="Seconds between background probes.")
    timeout: float = Field(5.0, gt=0)


class ServerConfig(_Strict):
    grace_period: float = Field(10.0, ge=0, description="Seconds in-flight calls get on SIGTERM.")
    max_request_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    deadline_margin_ms: float = Field(20.0, ge=0, description="Kept back from the caller's deadline.")
    min_attempt_ms: float = Field(50.0, ge=0, description="No attempt starts with less time than this left.")
    default_retry_after: float = Field(1.0, gt=0, description="Pushback sent with RESOURCE_EXHAUSTED.")
    retry_backoff: float = Field(0.1, ge=0, description="First same-provider retry wait; doubles each time.")
    retry_backoff_max: float = Field(2.0, ge=0, description="Longest same-provider wait, retry-after included.")


class LimitsConfig(_Strict):
    max_output_tokens: int = Field(128_000, ge=1)
    default_max_tokens: int = Field(4096, ge=1)


class ObservabilityConfig(_Strict):
    """Traces and logs (README "Observability"); metrics are GATEWAY_METRICS_PORT."""

    # Record prompt and completion text in trace spans (gen_ai.input.messages / gen_ai.output.messages).
    # Off: spans carry token counts, models and outcomes, never content.
    trace_content: bool = False


_CALLER_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_file=".env", extra="forbid", frozen=True, env_nested_delimiter="__"
    )

    config: str | None = None  # the YAML file's path (GATEWAY_CONFIG), read by load_settings
    host: str = "0.0.0.0"
    port: int = Field(50051, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    anthropic_api_key: SecretStr | None = None
    aws_region: str | None = None
    # Callers must send "authorization: Bearer <one of these>" when any is set (GATEWAY_API_KEYS,
    # comma-separated). grpc.health.v1 and reflection stay open.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Named API keys with scopes, limits and budgets (README "Keys, limits and budgets").
    keys: list[ApiKeyConfig] = Field(default_factory=list)
    # Named keys (GATEWAY_NAMED_API_KEYS='{"team-a": "key"}'): accepted like api_keys, and the name is
    # the caller label of metrics and logs (an unnamed key, or none: "anonymous").
    named_api_keys: dict[Annotated[str, Field(pattern=_CALLER_NAME)], SecretStr] = Field(default_factory=dict)
    # Prometheus /metrics on its own port (never the gRPC port); 0 disables. Host: metrics_host, else host.
    metrics_port: int = Field(9464, ge=0, le=65535)
    metrics_host: str | None = None

    default_provider: str = "anthropic"
    # When no real provider has credentials, answer from the mock provider (development).
    mock_when_unconfigured: bool = False
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    # One logical name -> each provider's model id, e.g. {"sonnet": {"anthropic": "...", "bedrock": "..."}}.
    model_aliases: dict[str, dict[str, str]] = Field(default_factory=dict)
    fallback: FallbackConfig = FallbackConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    health_check: HealthCheckConfig = HealthCheckConfig()
    server: ServerConfig = ServerConfig()
    limits: LimitsConfig = LimitsConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    # Model id -> list prices (USD per million tokens); a model missing here costs 0 ("priced: false").
    pricing: dict[str, ModelPrice] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _upper_log_level(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("log_level"), str):
            data = {**data, "log_level": data["log_level"].upper()}
        return data

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @model_validator(mode="after")
    def _check_references(self) -> GatewaySettings:
        if not self.providers:
            raise ValueError("providers: at least one provider must be configured")
        names = ", ".join(self.providers)
        if self.default_provider not in self.providers:
            raise ValueError(f"default_provider: '{self.default_provider}' is not a configured provider ({names})")
        for name in self.fallback.fallback_order:
            if name not in self.providers:
                raise ValueError(f"fallback.fallback_order: '{name}' is not a configured provider ({names})")
        for alias, mapping in self.model_aliases.items():
            for name in mapping:
                if name not in self.providers:
                    raise ValueError(f"model_aliases.{alias}: '{name}' is not a configured provider ({names})")
        seen: set[str] = set()
        for i, key in enumerate(self.keys):
            if key.name in seen or key.name in self.named_api_keys:
                raise ValueError(f"keys[{i}].name: '{key.name}' is given twice")
            seen.add(key.name)
            for name in key.providers:
                if name not in self.providers:
                    raise ValueError(f"keys[{i}].providers: '{name}' is not a configured provider ({names})")
            if key.secret_env is not None and not os.environ.get(key.secret_env):
                raise ValueError(f"keys[{i}].secret_env: the environment variable {key.secret_env} is not set")
        for name in self.rate_limit.providers:
            if name not in self.providers:
                raise ValueError(f"rate_limit.providers: '{name}' is not a configured provider ({names})")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML document arrives as init kwargs; the environment overrides it.
        return env_settings, dotenv_settings, init_settings

    # ---- derived views (computed once at start-up, never per request) ----

    def anthropic_key(self, cfg: AnthropicProviderConfig) -> SecretStr | None:
        return cfg.api_key or self.anthropic_api_key

    def bedrock_region(self, cfg: BedrockProviderConfig) -> str | None:
        return cfg.region or self.aws_region


_PROVIDER_TAGS = {"anthropic", "bedrock", "mock"}


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    parts = [str(p) for p in first["loc"]]
    if len(parts) > 2 and parts[0] == "providers" and parts[2] in _PROVIDER_TAGS:
        del parts[2]  # the discriminated union's tag, not a key the user wrote
    loc = ".".join(parts)
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{loc}: {msg}" if loc else msg


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> GatewaySettings:
    """Read the YAML file (``path``, else ``$GATEWAY_CONFIG``, else config/gateway.yaml) and the environment.

    Raises ConfigError with one line naming the file and the field.
    """
    if path is None:
        path = os.environ.get("GATEWAY_CONFIG", DEFAULT_CONFIG_PATH)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{p}: malformed YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys, not {type(data).__name__}")
    return settings_from_mapping({**data, **overrides}, source=str(p))


def settings_from_mapping(data: dict[str, Any], *, source: str = "config", env_file: str | None = ".env"
                          ) -> GatewaySettings:
    try:
        return GatewaySettings(**data, _env_file=env_file)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid config: {_format_error(exc)}") from None
    except SettingsError as exc:  # e.g. an environment variable that is not valid JSON for a nested key
        raise ConfigError(f"{source}: invalid environment: {exc}") from None
