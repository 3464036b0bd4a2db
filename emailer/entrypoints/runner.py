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


def run_gateway(settings: Settings) -> None:
    import uvicorn

    from emailer.bootstrap import bootstrap
    from emailer.entrypoints.gateway.app import create_app

    app = bootstrap(settings)
    _require_schema(app.engine)
    app.bus.connect()
    print(f"gateway listening on http://{settings.gateway_host}:{settings.gateway_port}", flush=True)
    try:
        uvicorn.run(
            create_app(app), host=settings.gateway_host, port=settings.gateway_port, log_level="warning"
        )
    finally:
        app.close()


def run_ingress(settings: Settings) -> None:
    from emailer.entrypoints.ingress.process import serve

    serve(settings)


def run_all(settings: Settings) -> None:
    """Everything in one process; migrates its own database first (this is the laptop mode)."""
    import uvicorn

    from emailer.adapters.persistence import schema
    from emailer.bootstrap import bootstrap
    from emailer.entrypoints.gateway.app import create_app
    from emailer.entrypoints.ingress.process import mounted_router
    from emailer.entrypoints.worker import Worker

    app = bootstrap(settings)
    webhooks = mounted_router(app)
    schema.upgrade(app.engine)
    worker = Worker(app)
    worker.start()
    url = f"http://{settings.gateway_host}:{settings.gateway_port}"
    where = (
        f"{settings.effective_mail_dir.resolve()} (one .eml file per email)"
        if settings.provider == "file"
        else f"{settings.provider} at {settings.sendgrid_base_url}"
    )
    print(
        "Emailer is running.\n"
        f"  API       {url}  (POST /v1/emails, GET /v1/emails/{{id}}, /readyz)\n"
        f"  webhooks  {url}/webhooks/sendgrid  (SendGrid's Event Webhook)\n"
        f"  emails    {where}\n"
        f"  database  {app.settings.shown()['database_url']}\n"
        f"  bus       {app.bus.safe_url}\n"
        "  try       .venv/bin/emailer send --to you@example.com --subject Hello "
        "--text 'Hi there' --attach README.md\n"
        "  stop      Ctrl-C",
        flush=True,
    )
    api = create_app(app)
    api.include_router(webhooks)
    try:
        uvicorn.run(api, host=settings.gateway_host, port=settings.gateway_port, log_level="warning")
    finally:
        worker.stop()
        app.close()
