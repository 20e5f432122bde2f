"""Gateway configuration: one YAML file (``--config`` / ``GATEWAY_CONFIG``) plus environment.

Precedence, highest first: command-line flags (``--port``), environment variables (``GATEWAY_*``),
a ``.env`` file in the working directory, the YAML file (read by pydantic-settings'
``YamlConfigSettingsSource``), the defaults below. Nested keys merge across sources
(``GATEWAY_FALLBACK__ENABLED=false`` changes that one key of the file's ``fallback`` section).
Secrets are ``SecretStr`` and never printed.

Provider credentials follow the same rule: ``GATEWAY_ANTHROPIC_API_KEY``, when set, is the key of
every ``anthropic`` provider and wins over a provider's ``api_key`` in the file (which is used
only when the variable is unset). A Bedrock provider's ``region`` in the file is a per-provider
routing choice, not a credential, and wins over ``GATEWAY_AWS_REGION``.

Every model forbids unknown keys, so a typo in the YAML stops start-up with the key's path named.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
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
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

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
    timeout: float = Field(25.0, gt=0, description="Seconds one call to this provider may take (README: the time law).")
    max_retries: int = Field(2, ge=0, le=10, description="Re-tries of this provider on fast transient failures.")
    # Streaming: the first content event must come within this (else fallback); the whole stream
    # must end within stream_timeout.
    first_token_timeout: float | None = Field(None, gt=0, description="Default: timeout.")
    stream_timeout: float = Field(600.0, gt=0)


class AnthropicProviderConfig(ProviderSettings):
    type: Literal["anthropic"]
    base_url: str | None = None
    api_key: SecretStr | None = None  # used when GATEWAY_ANTHROPIC_API_KEY is unset
    max_connections: int = Field(100, ge=1)
    # direct: one aiohttp session with the SDK's headers and errors; aiohttp, httpx: the SDK's own transports.
    http_transport: Literal["direct", "aiohttp", "httpx"] = "direct"


class BedrockProviderConfig(ProviderSettings):
    type: Literal["bedrock"]
    region: str | None = None  # else GATEWAY_AWS_REGION
    endpoint_url: str | None = None
    # Obsolete: Bedrock calls use no threads since aiobotocore; accepted (and ignored, with a warning)
    # so that old configs keep loading.
    executor_workers: int | None = Field(None, ge=1, le=256, description="Obsolete, ignored.")
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
    # The time law: while another provider is still in the chain, one attempt may take at most
    # (1 - reserve_ratio) of the time left before the caller's deadline, so the next keeps a share.
    reserve_ratio: float = Field(0.5, ge=0, lt=1, description="Share of the time left kept for the next provider.")
    # A concrete model id with no alias for the next provider: skip that provider (MODEL_UNAVAILABLE)
    # unless this allows answering with its default model instead.
    substitute_default_model: bool = False


class OutlierDetectionConfig(_Strict):
    """Envoy-style outlier ejection per provider (see outlier.py and README "Outlier ejection")."""

    enabled: bool = True
    # Envoy's names. "5xx" covers what counts against a provider: 5xx, 529, timeouts, connection failures.
    consecutive_5xx: int = Field(5, ge=1, description="Failures in a row that eject a provider.")
    failure_percentage_threshold: float = Field(50.0, gt=0, le=100, description="Failed % over `interval` that ejects.")
    failure_percentage_request_volume: int = Field(10, ge=1, description="Calls within `interval` before the % counts.")
    interval: float = Field(10.0, gt=0, description="Seconds of traffic the failure percentage looks at.")
    base_ejection_time: float = Field(30.0, gt=0, description="First ejection; x the number of ejections.")
    max_ejection_time: float = Field(300.0, gt=0, description="Longest ejection (and 429 cool-down).")

    @model_validator(mode="after")
    def _check_times(self) -> OutlierDetectionConfig:
        if self.max_ejection_time < self.base_ejection_time:
            raise ValueError("max_ejection_time must be at least base_ejection_time")
        return self


class RetryBudgetConfig(_Strict):
    """Envoy's retry budget, gateway-wide: re-tries in flight <= max(min, percent x active calls)."""

    budget_percent: float = Field(20.0, ge=0, le=100, description="Re-tries in flight per 100 active calls.")
    min_retry_concurrency: int = Field(3, ge=0, description="Re-tries always allowed in flight.")


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
    client_subject: str | None = Field(
        None, min_length=1,
        description="mTLS: the subject of a client certificate (RFC 2253, as the gateway logs it, e.g. "
                    "'CN=orchestrator-1,O=Example') that is this key when the call sends no bearer secret.")
    team: str = ""
    # Empty: every provider / model. Models may be aliases (an alias allows its ids and the reverse).
    providers: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    limits: LimitSettings | None = None
    budget: BudgetSettings = BudgetSettings()
    admin: bool = Field(False, description="May call the admin RPCs (GetUsage).")

    @model_validator(mode="after")
    def _one_secret(self) -> ApiKeyConfig:
        if self.sha256 is not None and self.secret_env is not None:
            raise ValueError("set one of sha256 and secret_env, not both")
        if self.sha256 is None and self.secret_env is None and self.client_subject is None:
            raise ValueError("set sha256 or secret_env (a secret), or client_subject (an mTLS certificate)")
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


class TlsConfig(_Strict):
    """Server TLS (``server.tls``): PEM files, re-read on SIGHUP. ``client_ca_file`` turns on mTLS."""

    cert_file: Path
    key_file: Path
    # PEM of the CA(s) that sign client certificates: with it, callers must present a certificate
    # signed by one of them (mTLS), and its subject names the caller (see gateway_server.tls).
    client_ca_file: Path | None = None

    @field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value


class ServerConfig(_Strict):
    grace_period: float = Field(10.0, ge=0, description="Seconds in-flight calls get on SIGTERM.")
    tls: TlsConfig | None = None
    # Load shedding: calls in flight per process beyond which new calls get RESOURCE_EXHAUSTED at once
    # (with a pushback of shed_retry_after); 0 turns it off. grpc.health.v1 and reflection are exempt.
    max_concurrent_calls: int = Field(1000, ge=0)
    shed_retry_after: float = Field(0.5, gt=0, description="Pushback sent with a shed call, seconds.")
    # Connection lifecycle: after max_connection_age the server sends GOAWAY so that clients reconnect
    # (and round-robin onto new replicas); calls in flight then get max_connection_age_grace to finish.
    max_connection_age: float = Field(300.0, gt=0, description="Seconds; GOAWAY after this (+/-10% jitter).")
    max_connection_age_grace: float = Field(600.0, ge=0, description="Seconds in-flight calls keep after GOAWAY.")
    # Server-side HTTP/2 pings on idle connections: keep idle load balancers from dropping them and
    # find dead peers. Clients may ping no more often than keepalive_min_client_interval.
    keepalive_time: float = Field(60.0, gt=0, description="Seconds between server pings.")
    keepalive_timeout: float = Field(20.0, gt=0, description="Seconds to wait for a ping's ack.")
    keepalive_min_client_interval: float = Field(10.0, ge=0, description="Shortest client ping interval allowed.")
    # --workers > 1: the supervisor gives up (stops all, exits 1) after more than this many worker
    # deaths within worker_restart_window seconds.
    worker_restart_limit: int = Field(5, ge=0)
    worker_restart_window: float = Field(60.0, gt=0)
    # --workers > 1: pin worker i (all its threads) to the i-th CPU this process may use (README
    # "Workers and load shedding"). For cores of one's own; off by default: on shared cores (or a
    # CPU quota smaller than the CPU set) a pinned worker may wait while another CPU idles.
    pin_workers: bool = False
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
    # Server processes on the one port (SO_REUSEPORT), under a supervisor when > 1; "auto": one per CPU.
    workers: int | Literal["auto"] = 1
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
    outlier_detection: OutlierDetectionConfig = OutlierDetectionConfig()
    retry_budget: RetryBudgetConfig = RetryBudgetConfig()
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

    @field_validator("workers", mode="before")
    @classmethod
    def _check_workers(cls, value: Any) -> Any:
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if isinstance(value, bool) or not text.isdigit() or not 1 <= int(text) <= 256:
            raise ValueError(f"must be 'auto' or a number of processes from 1 to 256, not {value!r}")
        return int(text)

    @property
    def worker_count(self) -> int:
        """Server processes to run: ``workers``, with "auto" the CPUs this process may use (see usable_cpus)."""
        if self.workers == "auto":
            return usable_cpus()
        return self.workers

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
            if key.client_subject is not None and (self.server.tls is None or self.server.tls.client_ca_file is None):
                raise ValueError(f"keys[{i}].client_subject: needs mTLS (server.tls.client_ca_file)")
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
        # Highest first: flags (init arguments), environment, .env, the YAML file; then the defaults.
        level = _FILE_LEVEL.get()
        if level is None:
            return init_settings, env_settings, dotenv_settings
        if isinstance(level, Path):
            file_settings: PydanticBaseSettingsSource = _YamlFile(settings_cls, yaml_file=level)
        else:
            file_settings = InitSettingsSource(settings_cls, init_kwargs=dict(level))
        return init_settings, env_settings, dotenv_settings, file_settings

    # ---- derived views (computed once at start-up, never per request) ----

    def anthropic_key(self, cfg: AnthropicProviderConfig) -> SecretStr | None:
        """The environment (``GATEWAY_ANTHROPIC_API_KEY``) wins over the provider's key in the file."""
        return self.anthropic_api_key or cfg.api_key

    def bedrock_region(self, cfg: BedrockProviderConfig) -> str | None:
        return cfg.region or self.aws_region


def cgroup_cpu_limit(cpu_max: str) -> int | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line ("200000 100000": 2; "150000 100000": 2;
    "max 100000": no limit, None)."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, -(-quota // period))


def usable_cpus() -> int:
    """The CPUs this process may run on (affinity), capped by its container's CPU limit (cgroup v2)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        limit = cgroup_cpu_limit(Path("/sys/fs/cgroup/cpu.max").read_text())
    except OSError:
        limit = None
    return max(1, min(count, limit) if limit is not None else count)


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
    """Read the YAML file (``path``, else ``$GATEWAY_CONFIG``, else config/gateway.yaml) and the environment;
    ``overrides`` are the command-line flags (they win over both).

    Raises ConfigError with one line naming the file and the field.
    """
    if path is None:
        path = os.environ.get("GATEWAY_CONFIG", DEFAULT_CONFIG_PATH)
    p = Path(path)
    if not p.is_file():  # the YAML source skips a missing file; a named config file must exist
        reason = "Is a directory" if p.is_dir() else "No such file or directory"
        raise ConfigError(f"cannot read config file {p}: {reason}")
    with _file_level(p):
        return _build(overrides, source=str(p), env_file=".env")


def settings_from_mapping(data: dict[str, Any], *, source: str = "config", env_file: str | None = ".env"
                          ) -> GatewaySettings:
    """Settings from ``data`` standing in for the YAML file (the environment still wins over it)."""
    with _file_level(data):
        return _build({}, source=source, env_file=env_file)


def _build(flags: dict[str, Any], *, source: str, env_file: str | None) -> GatewaySettings:
    try:
        return GatewaySettings(**flags, _env_file=env_file)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid config: {_format_error(exc)}") from None
    except SettingsError as exc:  # e.g. an environment variable that is not valid JSON for a nested key
        raise ConfigError(f"{source}: invalid environment: {exc}") from None


class _YamlFile(YamlConfigSettingsSource):
    """pydantic-settings' YAML source, with its failures as one-line ConfigErrors naming the file."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            data: Any = super()._read_file(file_path)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file_path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise ConfigError(f"{file_path}: malformed YAML{where}: {problem}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{file_path}: the top level must be a mapping of keys, not {type(data).__name__}")
        return data


# The file level of the settings being built: a YAML file's path, or a mapping standing in for one
# (settings_from_mapping). A context variable because pydantic-settings builds its sources in a
# classmethod with no per-call argument for them.
_FILE_LEVEL: ContextVar[Path | Mapping[str, Any] | None] = ContextVar("gateway_config_file", default=None)


@contextmanager
def _file_level(value: Path | Mapping[str, Any]) -> Iterator[None]:
    token = _FILE_LEVEL.set(value)
    try:
        yield
    finally:
        _FILE_LEVEL.reset(token)

