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

    ingress_host: str = "127.0.0.1"
    ingress_port: int = Field(8026, ge=0, le=65535)
    ingress_max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="largest webhook body the ingress reads (413 beyond)"
    )
    ingress_basic_auth: SecretStr | None = Field(
        None, description="'user:password' a webhook must present (HTTP basic auth); unset: none asked"
    )
    sendgrid_webhook_public_keys: str | None = Field(
        None,
        description="SendGrid's Event Webhook verification key(s), base64 DER as SendGrid shows them; "
        "several comma-separated while rotating",
    )
    sendgrid_webhook_verify: bool = Field(
        True, description="verify SendGrid's signature; false only for local experiments (warned)"
    )
    sendgrid_webhook_tolerance: float = Field(
        300.0, gt=0, description="seconds a signed timestamp may be from now, either way"
    )
    provider_event_retention: float = Field(
        30 * 86400.0, gt=0, description="seconds a handled provider event id is kept for dedupe"
    )

    retry_first_delay: float = Field(5.0, gt=0, description="seconds")
    retry_max_delay: float = Field(600.0, gt=0, description="seconds")
    retry_budget: float = Field(86400.0, gt=0, description="seconds; then EmailDeliveryFailed")
    unknown_outcome_wait: float = Field(3600.0, gt=0, description="seconds to wait for a callback")
    dispatch_lease: float = Field(120.0, gt=0, description="seconds")
    reconcile_lookup: bool = Field(
        False,
        description="before any resend, ask the provider whether it holds the email (SendGrid: the Email "
        "Activity Feed API, a paid add-on); off: an unknown outcome waits for a callback",
    )
    reconcile_interval: float = Field(10.0, gt=0, description="seconds between reconciliation passes")
    reconcile_after: float = Field(
        35.0, ge=0, description="seconds after an attempt started before its unknown outcome is looked up"
    )
    reconcile_grace: float = Field(
        300.0,
        gt=0,
        description="seconds after an attempt started before the provider's 'none' allows a resend",
    )
    reconcile_lookups: int = Field(
        1, ge=1, le=10000, description="lookups per pass at most (SendGrid allows 6 a minute)"
    )
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

    @model_validator(mode="after")
    def _provider_needs_key(self) -> Settings:
        if self.provider == "sendgrid" and not self.sendgrid_api_key:
            raise ValueError("EMAILER_SENDGRID_API_KEY is required when EMAILER_PROVIDER=sendgrid")
        return self

    @model_validator(mode="after")
    def _grace_outlasts_a_call(self) -> Settings:
        # A "none" inside the time a request may still be on its way must never allow a resend.
        if self.reconcile_lookup and self.reconcile_grace <= self.sendgrid_timeout:
            raise ValueError(
                "EMAILER_RECONCILE_GRACE must be longer than EMAILER_SENDGRID_TIMEOUT "
                "(a request may still be on its way until then)"
            )
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
            resend_needs_lookup=self.reconcile_lookup,
            reconcile_after=timedelta(seconds=self.reconcile_after),
            reconcile_grace=timedelta(seconds=self.reconcile_grace),
        )

    def shown(self) -> dict[str, Any]:
        """The effective configuration with secrets and passwords masked (for show-config)."""
        from sqlalchemy.engine import make_url

        data = self.model_dump(mode="json")
        data["database_url"] = make_url(self.effective_database_url).render_as_string(hide_password=True)
        data["bus_url"] = _mask_url_password(self.bus_url)
        for secret in ("sendgrid_api_key", "api_tokens", "api_token", "ingress_basic_auth"):
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
