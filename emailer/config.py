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


SECRETS = (
    "sendgrid_api_key",
    "api_tokens",
    "api_token",
    "ingress_basic_auth",
    "s3_access_key",
    "s3_secret_key",
    "internal_key",
)
"""Settings show-config prints masked."""


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
    input_queue: str = Field("emailer", description="the input queue: commands to Emailer")
    events_exchange: str = Field("emailer.events", description="the topic exchange events are published to")
    error_queue: str = Field("error", description="where messages that failed for good go, with the reason")
    topology: Literal["native", "nsb-conventional", "nsb-direct"] = Field(
        "native",
        description="RabbitMQ routing: native (input queue + events topic exchange), or that plus "
        "NServiceBus's conventional or direct routing topology (RabbitMQ only)",
    )
    nsb_namespace: str = Field(
        "Emailer.Contracts",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
        description="the .NET namespace of Emailer's messages for NServiceBus endpoints "
        "(exchange Namespace:TypeName, routing key Namespace-TypeName, type Namespace.TypeName)",
    )
    prefetch: int = Field(50, ge=1, le=10000, description="unacknowledged messages a worker takes at once")
    batch_size: int = Field(50, ge=1, le=10000, description="messages handled in one transaction")
    dispatch_concurrency: int = Field(32, ge=1, le=256, description="provider calls in flight per worker")
    dispatch_slice: int = Field(
        128,
        ge=1,
        le=1000,
        description="emails a worker claims, sends and records together (the calls at most "
        "dispatch_concurrency at once); a crash leaves at most two slices waiting for the provider's "
        "callback or a lookup, never resent blind",
    )
    dispatch_locally: bool = Field(
        True,
        description="the worker that accepted emails dispatches them right after the commit, before its "
        "next batch, while it keeps up (its batches lately under half full); their DispatchEmail still comes "
        "round and finds them done. Off: every email waits for its DispatchEmail to come round the queue",
    )
    immediate_retries: int = Field(
        5, ge=0, le=100, description="times a failing message is tried again at once, before delayed retries"
    )
    delayed_retries: int = Field(
        3, ge=0, le=100, description="times it is then tried again after a delay, before the error queue"
    )
    delayed_retry_delays: str = Field(
        "10,20,30",
        description="seconds before each delayed retry, comma-separated (the last one repeats); "
        "one RabbitMQ delay queue per distinct value",
    )
    broker_heartbeat: float = Field(
        10.0, ge=0, le=600, description="AMQP heartbeat, seconds (0: off): a dead connection is noticed then"
    )

    blob_store: Literal["local", "s3"] = Field("local", description="attachments' store: local or s3")
    blob_dir: Path | None = Field(None, description="the local store's folder (default: var_dir/blobs)")
    s3_endpoint: str = Field("", description="host:port of the S3 / MinIO server (no scheme)")
    s3_bucket: str = Field("", description="the bucket blobs live in")
    s3_access_key: SecretStr | None = Field(None, description="S3 / MinIO access key (masked)")
    s3_secret_key: SecretStr | None = Field(None, description="S3 / MinIO secret key (masked)")
    s3_region: str | None = Field(None, description="S3 region (optional)")
    s3_secure: bool = Field(True, description="TLS (https); false for a local MinIO over http")
    s3_prefix: str = Field("blobs/", description="object names are <prefix><sha256>")
    s3_create_bucket: bool = Field(False, description="create the bucket at start-up if it is missing")
    s3_part_size: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024, description="multipart part size, bytes")
    s3_timeout: float = Field(30.0, gt=0, description="seconds to wait for S3 to answer")

    attachment_max_bytes: int = Field(
        25 * 1024 * 1024, ge=1, description="largest upload POST /v1/attachments takes (413 beyond)"
    )
    inline_attachments_max_bytes: int = Field(
        256 * 1024,
        ge=0,
        le=2 * 1024 * 1024,
        description="inline attachment content a SendEmail may carry in all, decoded",
    )
    sendgrid_max_email_bytes: int = Field(
        30 * 1000 * 1000,
        ge=1024,
        description="SendGrid refuses a request this large or more (base64 included): refused at acceptance",
    )
    file_max_email_bytes: int | None = Field(None, ge=1024, description="the .eml provider's limit (none)")
    attachment_retention: float = Field(
        0.0, ge=0, description="seconds attachments are kept after the provider accepted their email"
    )
    blob_grace: float = Field(
        3600.0,
        ge=0,
        description="seconds a blob written (or re-uploaded) recently is never deleted: its command may "
        "still be on its way",
    )
    attachment_purge_interval: float = Field(5.0, gt=0, description="seconds between attachment purges")

    provider: Literal["file", "sendgrid"] = Field(
        "file", description="file (one .eml per email under var_dir/mail) or sendgrid"
    )
    mail_dir: Path | None = Field(None, description="where the file provider writes .eml files")
    sendgrid_api_key: SecretStr | None = Field(None, description="required with sendgrid (masked)")
    sendgrid_base_url: str = Field(
        "https://api.sendgrid.com", description="SendGrid's API (the sandbox's URL in tests)"
    )
    sendgrid_timeout: float = Field(
        30.0,
        gt=0,
        description="read timeout: seconds any one read of SendGrid's answer may wait (and a send for a "
        "free connection when all are in use)",
    )
    sendgrid_connect_timeout: float = Field(
        5.0, gt=0, description="seconds to open a connection to SendGrid (TLS included)"
    )
    sendgrid_keepalive_expiry: float = Field(
        4.0,
        gt=0,
        le=3600,
        description="seconds an idle connection to SendGrid is kept for the next email (a worker keeps "
        "EMAILER_DISPATCH_CONCURRENCY at most); keep it below the server's idle timeout (the sandbox's: 5)",
    )
    provider_max_rate: float = Field(
        200.0,
        ge=0,
        description="emails/s the provider is sent at most, shared by every worker (a backlog after an "
        "outage drains at this rate); 0: no limit",
    )
    provider_probe_interval: float = Field(
        60.0, gt=0, description="seconds between probes of a provider that refused the API key (401/403)"
    )
    provider_rate_limit_pause: float = Field(
        10.0, gt=0, description="seconds the provider is paused after a 429 that says nothing of when"
    )
    provider_pause_jitter: float = Field(
        1.0, ge=0, description="seconds over which emails waiting out a pause come back (spread, never early)"
    )

    gateway_host: str = Field("127.0.0.1", description="where the gateway listens (--host)")
    gateway_port: int = Field(8025, ge=0, le=65535, description="the gateway's port (--port; 0: any)")
    gateway_url: str | None = Field(None, description="where `emailer send` finds the gateway")
    gateway_max_body_bytes: int = Field(
        30 * 1024 * 1024, ge=1024, description="largest request body the gateway reads (413 beyond)"
    )
    gateway_publish_timeout: float = Field(
        5.0, gt=0, le=120, description="seconds a POST waits for the broker's confirm before answering 503"
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

    ingress_host: str = Field("127.0.0.1", description="where `emailer ingress` listens")
    ingress_port: int = Field(8026, ge=0, le=65535, description="the ingress's port")
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
    circuit_threshold: int = Field(5, ge=1, description="provider failures in a row that open its circuit")
    circuit_cooldown: float = Field(30.0, gt=0, description="seconds the provider circuit stays open")
    scheduler_interval: float = Field(1.0, gt=0, description="seconds between the scheduler's passes")
    outbox_sweep_interval: float = Field(5.0, gt=0, description="seconds between outbox sweeps")
    outbox_sweep_after: float = Field(10.0, ge=0, description="age before the sweep takes a row")
    outbox_retention: float = Field(
        86400.0, gt=0, description="seconds a sent outbox row is kept (and the event streams can replay it)"
    )
    event_stream_poll: float = Field(
        0.25, gt=0, le=10, description="seconds between the gateway's looks for new events (SSE streams)"
    )
    inbox_retention: float = Field(7 * 86400.0, gt=0, description="seconds a handled message id is kept")
    housekeeping_interval: float = Field(600.0, gt=0, description="seconds between purges of old rows")

    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="json (default off a terminal) or console"
    )
    crash_at: str | None = Field(None, description="fault injection for tests: a crash point name")
    fail_handling: str | None = Field(
        None, description="fault injection for tests: every message of this type fails in its handler"
    )

    @field_validator("delayed_retry_delays")
    @classmethod
    def _delays(cls, value: str) -> str:
        _parse_delays(value)
        return value

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
    def _nservicebus_needs_rabbitmq(self) -> Settings:
        if self.topology != "native" and self.embedded_bus:
            raise ValueError(
                f"EMAILER_TOPOLOGY={self.topology} needs RabbitMQ (EMAILER_BUS_URL=amqp://...): "
                "NServiceBus endpoints cannot reach the embedded bus"
            )
        return self

    @model_validator(mode="after")
    def _provider_needs_key(self) -> Settings:
        if self.provider == "sendgrid" and not self.sendgrid_api_key:
            raise ValueError("EMAILER_SENDGRID_API_KEY is required when EMAILER_PROVIDER=sendgrid")
        if self.blob_store == "s3" and not (self.s3_endpoint and self.s3_bucket):
            raise ValueError(
                "EMAILER_S3_ENDPOINT and EMAILER_S3_BUCKET are required when EMAILER_BLOB_STORE=s3"
            )
        return self

    @field_validator("s3_endpoint")
    @classmethod
    def _bare_endpoint(cls, value: str) -> str:
        if "://" in value or "/" in value.rstrip("/"):
            raise ValueError("give host:port only (TLS is EMAILER_S3_SECURE), e.g. minio.internal:9000")
        return value.rstrip("/")

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
    def max_email_bytes(self) -> int | None:
        """The configured provider's limit on one encoded email."""
        return self.sendgrid_max_email_bytes if self.provider == "sendgrid" else self.file_max_email_bytes

    @property
    def embedded_bus(self) -> bool:
        return self.bus_url.startswith("memory://")

    @property
    def retry_delays(self) -> tuple[float, ...]:
        """One delay per delayed retry (EMAILER_DELAYED_RETRIES of them) from EMAILER_DELAYED_RETRY_DELAYS."""
        given = _parse_delays(self.delayed_retry_delays)
        if self.delayed_retries <= 0:
            return ()
        return tuple(given[min(i, len(given) - 1)] for i in range(self.delayed_retries))

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
        for secret in SECRETS:
            data[secret] = "**********" if getattr(self, secret) else None
        return data


def _parse_delays(value: str) -> tuple[float, ...]:
    try:
        delays = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise ValueError("give seconds, comma-separated, e.g. 10,20,30") from None
    if not delays or any(not 0.001 <= delay <= 86400 * 7 for delay in delays):
        raise ValueError("give at least one delay, each between 0.001 and 604800 seconds, e.g. 10,20,30")
    return delays


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
            message = err["msg"].removeprefix("Value error, ")
            # A rule over several settings names its variables itself.
            problems.append(f"{PREFIX}{field.upper()}: {message}" if field else message)
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
