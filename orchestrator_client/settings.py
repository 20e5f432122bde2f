"""The orchestrator's gateway configuration: ``config/orchestrator.gateway.yaml`` plus environment.

The file has the seed guide's shape::

    orchestrator:
      name: "main-orchestrator"
      reasoning_mode: "hybrid"
      ai_provider: "gateway"
      gateway:
        url: "localhost:50051"   # or dns:///gateway:50051, or http(s)://host:port (seed compat);
                                 # no port: 50051, or 443 with TLS (https://, grpcs://, tls: true)
        provider: null           # null: the gateway's default provider
        model: null              # null: the provider's default model
        api_key: null            # sent as "authorization: Bearer <key>"
        max_retries: 3           # total attempts
        timeout: 60              # budget of one call in seconds, retries and waits included
        retry_delay: 1.0         # base wait; the wait before retry n is retry_delay × 2^(n-1)
      max_parallel_agents: 3
      default_timeout: 30

Every ``gateway`` key can be overridden by an environment variable named
``ORCHESTRATOR_GATEWAY_<KEY>`` (upper case): ``ORCHESTRATOR_GATEWAY_URL``,
``ORCHESTRATOR_GATEWAY_PROVIDER``, ``ORCHESTRATOR_GATEWAY_MODEL``, ``ORCHESTRATOR_GATEWAY_API_KEY``,
``ORCHESTRATOR_GATEWAY_MAX_RETRIES``, ``ORCHESTRATOR_GATEWAY_TIMEOUT``,
``ORCHESTRATOR_GATEWAY_RETRY_DELAY``, ``ORCHESTRATOR_GATEWAY_ATTEMPT_TIMEOUT``,
``ORCHESTRATOR_GATEWAY_JITTER``, ``ORCHESTRATOR_GATEWAY_TLS``,
``ORCHESTRATOR_GATEWAY_ROOT_CERTIFICATES``, ``ORCHESTRATOR_GATEWAY_TLS_SERVER_NAME``,
``ORCHESTRATOR_GATEWAY_CLIENT_CERTIFICATE``, ``ORCHESTRATOR_GATEWAY_CLIENT_KEY`` (mTLS),
``ORCHESTRATOR_GATEWAY_RETRYABLE_CODES``, ``ORCHESTRATOR_GATEWAY_NON_RETRYABLE_CODES`` (a JSON list
or comma-separated names), ``ORCHESTRATOR_GATEWAY_KEEPALIVE_TIME``,
``ORCHESTRATOR_GATEWAY_KEEPALIVE_TIMEOUT``, ``ORCHESTRATOR_GATEWAY_LOAD_BALANCING``.
Precedence, highest first: arguments given in code (``GatewaySettings(url=...)``), the
environment, the file (read by pydantic-settings' ``YamlConfigSettingsSource``), the defaults.
Empty variables are ignored.
``ORCHESTRATOR_CONFIG`` names the file when no path is given (else
``config/orchestrator.gateway.yaml`` when it exists, else defaults and environment only).

An invalid value raises one :class:`~orchestrator_client.errors.ConfigError` whose message names
the key (``orchestrator.gateway.max_retries``) and, when it came from there, the variable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from orchestrator_client.errors import ConfigError
from orchestrator_client.retry_policy import parse_codes
from orchestrator_client.targets import DEFAULT_TARGET, normalize_target

__all__ = [
    "CONFIG_PATH_ENV",
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "GatewayClientSettings",
    "GatewaySettings",
    "OrchestratorConfig",
    "load_config",
    "load_gateway_settings",
]

ENV_PREFIX = "ORCHESTRATOR_GATEWAY_"
CONFIG_PATH_ENV = "ORCHESTRATOR_CONFIG"
DEFAULT_CONFIG_PATH = Path("config/orchestrator.gateway.yaml")


class GatewayClientSettings(BaseSettings):
    """The ``orchestrator.gateway`` section (see the module docstring for the variables): the client's
    settings (``GatewaySettings`` is the same class under its earlier name)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
    )

    url: str = DEFAULT_TARGET
    provider: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    max_retries: int = Field(default=3, ge=1, le=100, description="total attempts per call")
    timeout: float = Field(default=60.0, gt=0, description="budget of one call in seconds")
    retry_delay: float = Field(default=1.0, ge=0, description="base wait between attempts")
    attempt_timeout: float | None = Field(default=None, gt=0, description="cap of one attempt")
    jitter: float = Field(default=0.0, ge=0, le=1, description="random ± fraction of each wait")
    tls: bool | None = Field(default=None, description="None: TLS for https:// and grpcs:// urls")
    root_certificates: Path | None = Field(default=None, description="PEM file of trusted CAs")
    tls_server_name: str | None = None
    client_certificate: Path | None = Field(default=None, description="PEM client certificate chain (mTLS)")
    client_key: Path | None = Field(default=None, description="PEM private key of client_certificate")
    retryable_codes: tuple[str, ...] | None = None
    non_retryable_codes: tuple[str, ...] | None = None
    keepalive_time: float = Field(default=60.0, gt=0)
    keepalive_timeout: float = Field(default=20.0, gt=0)
    load_balancing: str = Field(default="round_robin", pattern=r"^(round_robin|pick_first)$")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first: arguments, environment, the file (or a mapping standing in for it).
        level = _FILE_LEVEL.get()
        if level is None:
            return init_settings, env_settings
        file_settings: PydanticBaseSettingsSource
        if level.path is not None:
            yaml_file = _OrchestratorFile(settings_cls, yaml_file=level.path)
            level.orchestrator = yaml_file.orchestrator
            file_settings = yaml_file
        else:
            file_settings = InitSettingsSource(settings_cls, init_kwargs=dict(level.values))
        return init_settings, env_settings, file_settings

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        normalize_target(value)
        return value.strip()

    @field_validator("provider", "model", "tls_server_name")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip().lower() in ("null", "none"):
            return None
        return value.strip()

    @field_validator("retryable_codes", "non_retryable_codes", mode="before")
    @classmethod
    def _check_codes(cls, value: Any) -> tuple[str, ...] | None:
        if value is None:
            return None
        if isinstance(value, str):
            items = [part for part in value.replace(";", ",").split(",") if part.strip()]
        elif isinstance(value, list | tuple | set | frozenset):
            items = [str(v) for v in value]
        else:
            raise ValueError("expected a list of gRPC status code names")
        return tuple(sorted(code.name for code in parse_codes(items)))

    @property
    def target(self) -> str:
        """The gRPC channel target derived from ``url`` (a missing port: 50051, or 443 with TLS)."""
        return normalize_target(self.url, self.tls)[0]

    @property
    def use_tls(self) -> bool:
        """Whether ``url`` is reached over TLS: ``tls`` when set, else the url's scheme."""
        if self.tls is not None:
            return self.tls
        return bool(normalize_target(self.url)[1])

    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key is not None else None


GatewaySettings = GatewayClientSettings  # the earlier name, kept for compatibility


class OrchestratorConfig(BaseModel):
    """The ``orchestrator`` section; keys other than ``gateway`` are kept as they are."""

    model_config = ConfigDict(extra="allow")

    name: str = "main-orchestrator"
    reasoning_mode: str = "hybrid"
    ai_provider: str = "gateway"
    max_parallel_agents: int = Field(default=3, ge=1)
    default_timeout: float = Field(default=30.0, gt=0)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    source: Path | None = None


def _describe(errors: list[Any], prefix: str, env: Mapping[str, str], from_env: bool) -> str:
    lines = []
    for error in errors:
        loc = ".".join(str(part) for part in error.get("loc", ()))
        key = f"{prefix}.{loc}" if loc else prefix
        where = ""
        if from_env and loc:
            var = ENV_PREFIX + str(error["loc"][0]).upper()
            if env.get(var):
                where = f" (from ${var}={env[var]!r})"
        value = error.get("input")
        shown = "" if where or isinstance(value, dict) else f" = {value!r}"
        if "key" in loc or "secret" in loc:
            shown, where = "", where.split("=")[0] + ")" if where else ""
        message = str(error.get("msg", "invalid value"))
        if error.get("type") == "extra_forbidden" and prefix == "orchestrator.gateway":
            message = f"unknown key (known keys: {', '.join(GatewaySettings.model_fields)})"
        lines.append(f"{key}{shown}{where}: {message}")
    return "; ".join(lines)


def load_gateway_settings(values: Mapping[str, Any] | None = None, *, source: str = "") -> GatewaySettings:
    """``GatewaySettings`` from a mapping (standing in for the file's section) overridden by the environment."""
    with _file_level(_FileLevel(values=dict(values or {}))):
        return _build(source)


def _build(source: str) -> GatewaySettings:
    where = f" in {source}" if source else ""
    try:
        return GatewaySettings()
    except ValidationError as exc:
        detail = _describe(exc.errors(), "orchestrator.gateway", os.environ, from_env=True)
        raise ConfigError(f"invalid configuration{where}: {detail}") from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration{where}: {exc}") from None


@dataclass
class _FileLevel:
    """The file level of the settings being built: the YAML file (``path``) or a mapping standing in
    for its gateway section (``values``); ``orchestrator`` receives the file's other orchestrator keys."""

    path: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)
    orchestrator: dict[str, Any] = field(default_factory=dict)


# A context variable because pydantic-settings builds its sources in a classmethod with no per-call
# argument for them.
_FILE_LEVEL: ContextVar[_FileLevel | None] = ContextVar("orchestrator_config_file", default=None)


@contextmanager
def _file_level(level: _FileLevel) -> Iterator[_FileLevel]:
    token = _FILE_LEVEL.set(level)
    try:
        yield level
    finally:
        _FILE_LEVEL.reset(token)


class _OrchestratorFile(YamlConfigSettingsSource):
    """pydantic-settings' YAML source for the ``orchestrator.gateway`` section of the file (a file
    with a top-level ``gateway`` key and no ``orchestrator`` is accepted too); the section's other
    keys are kept in :attr:`orchestrator`. Its failures are one-line ConfigErrors naming the file."""

    def __init__(self, settings_cls: type[BaseSettings], yaml_file: Path) -> None:
        self.orchestrator: dict[str, Any] = {}
        super().__init__(settings_cls, yaml_file=yaml_file)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            raw: Any = super()._read_file(file_path)
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {file_path}: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid YAML in {file_path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{file_path}: expected a mapping with an 'orchestrator' key")
        section = raw.get("orchestrator", raw if "gateway" in raw else {})
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ConfigError(f"{file_path}: 'orchestrator' must be a mapping")
        gateway = section.get("gateway") or {}
        if not isinstance(gateway, dict):
            raise ConfigError(f"{file_path}: 'orchestrator.gateway' must be a mapping")
        self.orchestrator = {k: v for k, v in section.items() if k != "gateway"}
        return gateway


def _resolve_path(path: str | os.PathLike[str] | None) -> Path | None:
    if path is not None:
        resolved = Path(path)
        if not resolved.is_file():
            raise ConfigError(f"configuration file not found: {resolved}")
        return resolved
    from_env = os.environ.get(CONFIG_PATH_ENV)
    if from_env:
        resolved = Path(from_env)
        if not resolved.is_file():
            raise ConfigError(f"configuration file not found: {resolved} (from ${CONFIG_PATH_ENV})")
        return resolved
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def load_config(path: str | os.PathLike[str] | None = None) -> OrchestratorConfig:
    """The orchestrator configuration from the YAML file (see the module docstring) and environment.

    Raises ConfigError for a missing or unreadable file, invalid YAML, a wrong shape, or an
    invalid value (the message names the key).
    """
    resolved = _resolve_path(path)
    source = str(resolved) if resolved is not None else ""
    if resolved is None:
        gateway, rest = _build(source), {}
    else:
        with _file_level(_FileLevel(path=resolved)) as level:
            gateway = _build(source)
        rest = level.orchestrator
    try:
        return OrchestratorConfig(**rest, gateway=gateway, source=resolved)
    except ValidationError as exc:
        detail = _describe(exc.errors(), "orchestrator", os.environ, from_env=False)
        where = f" in {source}" if source else ""
        raise ConfigError(f"invalid configuration{where}: {detail}") from None
