"""Configuration: environment variables with the ``EMAILER_`` prefix and an optional ``.env``.

Every default is the embedded one (in-memory bus, SQLite and folders under
``./var``, the .eml file provider), so ``emailer run`` needs no configuration.
A bad value stops start-up with a message naming the variable.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from emailer.domain import RetryPolicy
from emailer.signing import MIN_KEY_CHARS

PREFIX = "EMAILER_"


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    var_dir: Path = Field(Path("var"), description="where the embedded defaults keep their files")
    bus_url: str = Field("memory://", description="memory:// (embedded) or amqp://user:pass@host:5672/vhost")
    database_url: str = Field("", description="default: SQLite file under var_dir")
    internal_key: SecretStr | None = Field(
        None,
        description="key(s) signing the commands Emailer sends itself, comma-separated (the first signs); "
        "required with RabbitMQ, the same on every worker, gateway and ingress",
    )
    input_queue: str = "emailer"
    events_exchange: str = "emailer.events"
    error_queue: str = "error"
    prefetch: int = Field(50, ge=1, le=10000)
    batch_size: int = Field(50, ge=1, le=10000, description="messages handled in one transaction")
    dispatch_concurrency: int = Field(8, ge=1, le=256, description="provider calls in flight per worker")

    blob_store: Literal["local", "s3"] = "local"
    blob_dir: Path | None = None

    provider: Literal["file", "sendgrid"] = "file"
    mail_dir: Path | None = Field(None, description="where the file provider writes .eml files")
    sendgrid_api_key: SecretStr | None = None
    sendgrid_base_url: str = "https://api.sendgrid.com"
    sendgrid_timeout: float = Field(30.0, gt=0)

    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8025, ge=0, le=65535)
    gateway_url: str | None = Field(None, description="where `emailer send` finds the gateway")
    gateway_max_body_bytes: int = Field(
        30 * 1024 * 1024, ge=1024, description="largest request body the gateway reads (413 beyond)"
    )
    api_tokens: SecretStr | None = Field(
        None,
        description="gateway API tokens, comma-separated; each 'TOKEN' (every scope), 'send:TOKEN' or "
        "'read:TOKEN'; a TOKEN may be given as 'sha256:<hex digest>' instead of in clear",
    )
    gateway_allow_anonymous: bool = Field(
        False, description="serve a non-loopback address without API tokens (not recommended)"
    )
    api_token: SecretStr | None = Field(None, description="the token `emailer send` / `status` present")

    retry_first_delay: float = Field(5.0, gt=0, description="seconds")
    retry_max_delay: float = Field(600.0, gt=0, description="seconds")
    retry_budget: float = Field(86400.0, gt=0, description="seconds; then EmailDeliveryFailed")
    unknown_outcome_wait: float = Field(3600.0, gt=0, description="seconds to wait for a callback")
    dispatch_lease: float = Field(120.0, gt=0, description="seconds")
    circuit_threshold: int = Field(5, ge=1)
    circuit_cooldown: float = Field(30.0, gt=0)
    scheduler_interval: float = Field(1.0, gt=0)
    outbox_sweep_interval: float = Field(5.0, gt=0)
    outbox_sweep_after: float = Field(10.0, ge=0, description="age before the sweep takes a row")
    outbox_retention: float = Field(86400.0, gt=0, description="seconds a sent outbox row is kept")
    inbox_retention: float = Field(7 * 86400.0, gt=0, description="seconds a handled message id is kept")
    housekeeping_interval: float = Field(600.0, gt=0)

    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    crash_at: str | None = Field(None, description="fault injection for tests: a crash point name")

    @field_validator("bus_url")
    @classmethod
    def _bus_scheme(cls, value: str) -> str:
        if not value.startswith(("memory://", "amqp://", "amqps://", "pyamqp://")):
            raise ValueError("must start with memory://, amqp:// or amqps://")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError:
            backend = None
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(
                "not a database URL Emailer can use: give postgresql://user:pass@host:5432/db "
                "or sqlite:///path/to/file.db (or leave it unset for var/emailer.db)"
            )
        return value

    @field_validator("internal_key")
    @classmethod
    def _internal_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        keys = [key.strip() for key in value.get_secret_value().split(",") if key.strip()]
        if not keys or any(len(key) < MIN_KEY_CHARS for key in keys):
            raise ValueError(
                f"each key must have at least {MIN_KEY_CHARS} characters "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return value

    @model_validator(mode="after")
    def _rabbitmq_needs_internal_key(self) -> Settings:
        if not self.embedded_bus and self.internal_key is None:
            raise ValueError(
                "EMAILER_INTERNAL_KEY is required when EMAILER_BUS_URL is RabbitMQ: give every worker, "
                "gateway and ingress the same one "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return self

    @model_validator(mode="after")
    def _provider_needs_key(self) -> Settings:
        if self.provider == "sendgrid" and not self.sendgrid_api_key:
            raise ValueError("EMAILER_SENDGRID_API_KEY is required when EMAILER_PROVIDER=sendgrid")
        return self

    # -------------------------------------------------------------- derived

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'emailer.db'}"

    @property
    def effective_blob_dir(self) -> Path:
        return self.blob_dir or self.var_dir / "blobs"

    @property
    def effective_mail_dir(self) -> Path:
        return self.mail_dir or self.var_dir / "mail"

    @property
    def embedded_bus(self) -> bool:
        return self.bus_url.startswith("memory://")

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            first_delay=timedelta(seconds=self.retry_first_delay),
            max_delay=timedelta(seconds=self.retry_max_delay),
            budget=timedelta(seconds=self.retry_budget),
            unknown_outcome_wait=timedelta(seconds=self.unknown_outcome_wait),
            dispatch_lease=timedelta(seconds=self.dispatch_lease),
        )

    def shown(self) -> dict[str, Any]:
        """The effective configuration with secrets and passwords masked (for show-config)."""
        from sqlalchemy.engine import make_url

        data = self.model_dump(mode="json")
        data["database_url"] = make_url(self.effective_database_url).render_as_string(hide_password=True)
        data["bus_url"] = _mask_url_password(self.bus_url)
        for secret in ("sendgrid_api_key", "api_tokens", "api_token", "internal_key"):
            data[secret] = "**********" if getattr(self, secret) else None
        return data


def _mask_url_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; a bad value raises ConfigError naming the environment variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            name = f"{PREFIX}{field.upper()}" if field else "configuration"
            problems.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
