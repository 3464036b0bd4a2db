"""Process entry points behind the CLI: run (all in one), worker, gateway."""

from __future__ import annotations

import signal
import sys
import threading

import structlog

from emailer.config import Settings

log = structlog.get_logger(__name__)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _require_schema(engine: object) -> None:
    from emailer.adapters.persistence.schema import SchemaNotAtHead, check_at_head

    try:
        check_at_head(engine)  # type: ignore[arg-type]
    except SchemaNotAtHead as exc:
        print(f"emailer: {exc}", file=sys.stderr)
        raise SystemExit(3) from None


def run_worker(settings: Settings) -> None:
    from emailer.bootstrap import bootstrap
    from emailer.entrypoints.worker import Worker

    app = bootstrap(settings)
    _require_schema(app.engine)
    worker = Worker(app)
    worker.start()
    print(f"worker consuming {settings.input_queue!r} on {app.bus.safe_url}", flush=True)
    try:
        _wait_for_signal()
    finally:
        worker.stop()
        app.close()


def _check_tokens(settings: Settings) -> None:
    """Refuse to serve a non-loopback address without API tokens (``TokenError``: one line)."""
    from emailer.entrypoints.gateway.auth import check_exposure, parse_tokens

    raw = settings.api_tokens.get_secret_value() if settings.api_tokens else None
    check_exposure(settings.gateway_host, parse_tokens(raw), settings.gateway_allow_anonymous)


def run_gateway(settings: Settings) -> None:
    """Serve the API at once; the database and the broker are brought up in the background.

    Only a database that answers but is not at head stops it (one line, exit 3).
    """
    from emailer.bootstrap import bootstrap, build_bus
    from emailer.entrypoints import serving
    from emailer.entrypoints.gateway.app import create_app
    from emailer.entrypoints.gateway.dependencies import Dependencies

    _check_tokens(settings)
    sock = serving.bind(settings.gateway_host, settings.gateway_port)
    timeout = settings.gateway_publish_timeout
    app = bootstrap(settings, bus=build_bus(settings, connect_timeout=timeout, confirm_timeout=timeout))
    dependencies = Dependencies(app)
    try:
        dependencies.start()
        schema_error = dependencies.first_schema_error(timeout=10.0)
        if schema_error is not None:
            print(f"emailer: {schema_error}", file=sys.stderr)
            raise SystemExit(3)
        url = serving.url(sock)
        serving.serve(
            create_app(app, dependencies),
            sock,
            lambda: print(f"gateway listening on {url} (readiness: {url}/readyz)", flush=True),
        )
    finally:
        sock.close()
        dependencies.stop()
        app.close()


def run_ingress(settings: Settings) -> None:
    from emailer.entrypoints.ingress.process import serve

    serve(settings)


def run_all(settings: Settings) -> None:
    """Everything in one process; migrates its own database first (this is the laptop mode)."""
    from emailer.adapters.persistence import schema
    from emailer.bootstrap import bootstrap
    from emailer.entrypoints import serving
    from emailer.entrypoints.gateway.app import create_app
    from emailer.entrypoints.ingress.process import mounted_router
    from emailer.entrypoints.send_cli import gateway_base
    from emailer.entrypoints.worker import Worker

    _check_tokens(settings)
    sock = serving.bind(settings.gateway_host, settings.gateway_port)
    try:
        app = bootstrap(settings)
        webhooks = mounted_router(app)
        schema.upgrade(app.engine)
        worker = Worker(app)
        worker.start()
    except BaseException:
        sock.close()
        raise
    url = serving.url(sock)
    # `emailer send` finds the gateway on its own only where the settings say it is.
    gateway_option = "" if url == gateway_base(settings, None) else f" --gateway-url {url}"
    token_hint = "  (set EMAILER_API_TOKEN first: the API is locked)" if settings.api_tokens else ""
    where = (
        f"{settings.effective_mail_dir.resolve()} (one .eml file per email)"
        if settings.provider == "file"
        else f"{settings.provider} at {settings.sendgrid_base_url}"
    )

    def banner() -> None:
        print(
            "Emailer is running.\n"
            f"  API       {url}  (POST /v1/emails, GET /v1/emails/{{id}}, /readyz)\n"
            f"  webhooks  {url}/webhooks/sendgrid  (SendGrid's Event Webhook)\n"
            f"  emails    {where}\n"
            f"  database  {app.settings.shown()['database_url']}\n"
            f"  bus       {app.bus.safe_url}\n"
            f"  try       .venv/bin/emailer send{gateway_option} --to you@example.com --subject Hello "
            f"--text 'Hi there' --attach README.md{token_hint}\n"
            "  stop      Ctrl-C",
            flush=True,
        )

    api = create_app(app)
    api.include_router(webhooks)
    try:
        serving.serve(api, sock, banner)
    finally:
        worker.stop()
        app.close()
