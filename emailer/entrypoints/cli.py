"""The ``emailer`` command.

Each subcommand imports its implementation lazily: ``--help`` touches no server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

app = typer.Typer(
    help="Emailer: SendEmail in, lifecycle events out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
contracts_app = typer.Typer(help="The public message contracts.", no_args_is_help=True)
blobs_app = typer.Typer(help="The blob store (attachments).", no_args_is_help=True)
events_app = typer.Typer(help="Emailer's published events.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(blobs_app, name="blobs")
app.add_typer(contracts_app, name="contracts")
app.add_typer(events_app, name="events")


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"emailer: {message}", err=True)
    raise typer.Exit(code)


def _settings(**overrides: object):  # type: ignore[no-untyped-def]
    from emailer.config import ConfigError, load_settings
    from emailer.entrypoints.logging import configure

    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        _fail(str(exc))
    configure(settings.log_level, settings.log_format)
    return settings


def _listen_on(host: str | None, port: int | None) -> dict[str, object]:
    """Settings overrides from --host / --port, when given."""
    return {k: v for k, v in {"gateway_host": host, "gateway_port": port}.items() if v is not None}


@app.command()
def run(
    host: Annotated[str | None, typer.Option(help="gateway host")] = None,
    port: Annotated[int | None, typer.Option(help="gateway port")] = None,
) -> None:
    """Run worker, scheduler and gateway in one process (embedded defaults: no servers needed)."""
    from emailer.entrypoints.runner import run_all

    run_all(_settings(**_listen_on(host, port)))


@app.command()
def worker() -> None:
    """Consume the input queue, dispatch emails, relay the outbox, run the scheduler."""
    from emailer.entrypoints.runner import run_worker

    run_worker(_settings())


@app.command()
def gateway(
    host: Annotated[str | None, typer.Option(help="listen host")] = None,
    port: Annotated[int | None, typer.Option(help="listen port")] = None,
) -> None:
    """Serve the HTTP API (commands, queries, health)."""
    from emailer.entrypoints.runner import run_gateway

    run_gateway(_settings(**_listen_on(host, port)))


@app.command()
def ingress(
    host: Annotated[str | None, typer.Option(help="listen host")] = None,
    port: Annotated[int | None, typer.Option(help="listen port")] = None,
) -> None:
    """Serve the webhook ingress: provider callbacks, verified, onto the bus (no database)."""
    from emailer.entrypoints.runner import run_ingress

    overrides = {k: v for k, v in {"ingress_host": host, "ingress_port": port}.items() if v is not None}
    run_ingress(_settings(**overrides))


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="listen host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="listen port")] = 3025,
    api_key_env: Annotated[
        str, typer.Option(help="environment variable holding the API key to require")
    ] = "EMAILER_SANDBOX_API_KEY",
    webhook_url: Annotated[
        str | None,
        typer.Option(envvar="EMAILER_SANDBOX_WEBHOOK_URL", help="post signed Event Webhook batches here"),
    ] = None,
    webhook_mode: Annotated[
        str,
        typer.Option(envvar="EMAILER_SANDBOX_WEBHOOK_MODE", help="normal, duplicate, shuffle or both"),
    ] = "normal",
    webhook_batch_interval: Annotated[
        float, typer.Option(envvar="EMAILER_SANDBOX_WEBHOOK_BATCH_INTERVAL", help="seconds a batch collects")
    ] = 1.0,
    webhook_key_env: Annotated[
        str, typer.Option(help="environment variable holding the webhook signing key (else a new one)")
    ] = "EMAILER_SANDBOX_WEBHOOK_PRIVATE_KEY",
) -> None:
    """Serve a SendGrid-compatible API for local runs, tests and benchmarks (and post its webhooks)."""
    import os

    from emailer.sandbox.server import serve
    from emailer.sandbox.webhooks import WebhookMode, WebhookOptions

    webhook = None
    if webhook_url:
        webhook = WebhookOptions(
            url=webhook_url,
            private_key=os.environ.get(webhook_key_env) or None,
            mode=WebhookMode(webhook_mode),
            batch_interval=webhook_batch_interval,
        )
    serve(host, port, os.environ.get(api_key_env) or None, webhook)


@app.command()
def send(
    to: Annotated[list[str], typer.Option("--to", help="recipient (repeat for more)")],
    subject: Annotated[str, typer.Option(help="subject line")],
    sender: Annotated[str, typer.Option("--from", help="sender address")] = "emailer@example.com",
    cc: Annotated[list[str] | None, typer.Option(help="cc recipient (repeatable)")] = None,
    bcc: Annotated[list[str] | None, typer.Option(help="bcc recipient (repeatable)")] = None,
    text: Annotated[str | None, typer.Option(help="plain-text body")] = None,
    text_file: Annotated[Path | None, typer.Option(help="plain-text body from a file")] = None,
    html: Annotated[str | None, typer.Option(help="HTML body")] = None,
    html_file: Annotated[Path | None, typer.Option(help="HTML body from a file")] = None,
    attach: Annotated[list[Path] | None, typer.Option(help="file to attach (repeatable)")] = None,
    email_id: Annotated[str | None, typer.Option(help="idempotency key (default: a new one)")] = None,
    gateway_url: Annotated[str | None, typer.Option(help="gateway URL (default: from settings)")] = None,
) -> None:
    """Send an email through the gateway, or straight onto the bus when a broker URL is configured."""
    from emailer.entrypoints.send_cli import build_command, submit, uploader

    settings = _settings()
    try:
        build_command(  # checked first, so that a bad command uploads nothing
            sender, to, cc or [], bcc or [], subject, text, text_file, html, html_file, attach or [], email_id
        )
        upload = uploader(settings, gateway_url)
        command = build_command(
            sender, to, cc or [], bcc or [], subject, text, text_file, html, html_file, attach or [],
            email_id, upload,
        )  # fmt: skip
    except ValueError as exc:
        _fail(str(exc))
    except RuntimeError as exc:
        _fail(str(exc), 1)
    try:
        where = submit(command, settings, gateway_url)
    except RuntimeError as exc:
        _fail(str(exc), 1)
    typer.echo(f"accepted {command.email_id} ({where})")


@app.command()
def status(
    email_id: str,
    gateway_url: Annotated[str | None, typer.Option(help="gateway URL (default: from settings)")] = None,
    from_db: Annotated[bool, typer.Option("--from-db", help="read the database instead")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show an email's state, recipients and timeline."""
    from emailer.entrypoints.send_cli import fetch_status, render_status

    try:
        view = fetch_status(email_id, _settings(), gateway_url, from_db)
    except RuntimeError as exc:
        _fail(str(exc), 1)
    if view is None:
        _fail(f"no email {email_id!r}", 1)
    if as_json:
        import json

        typer.echo(json.dumps(view, indent=2))
    else:
        typer.echo(render_status(view))


@app.command("show-config")
def show_config(
    reference: Annotated[
        bool, typer.Option("--reference", help="print every setting as a Markdown table instead")
    ] = False,
) -> None:
    """Print the effective configuration (secrets masked), or every setting's reference."""
    if reference:
        from emailer.entrypoints.settings_doc import reference as render

        typer.echo(render(), nl=False)
        return
    import json

    typer.echo(json.dumps(_settings().shown(), indent=2, default=str))


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Migrate the database to the latest schema (or to REVISION)."""
    from emailer.adapters.persistence import schema
    from emailer.adapters.persistence.engine import make_engine

    settings = _settings()
    engine = make_engine(settings.effective_database_url)
    schema.upgrade(engine, revision)
    typer.echo(f"database at revision {schema.current_revision(engine)}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="target revision, e.g. base")]) -> None:
    """Migrate the database down to REVISION (``base`` removes every table: data is lost)."""
    from emailer.adapters.persistence import schema
    from emailer.adapters.persistence.engine import make_engine

    engine = make_engine(_settings().effective_database_url)
    schema.downgrade(engine, revision)
    typer.echo(f"database at revision {schema.current_revision(engine)}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and the head this version needs."""
    from emailer.adapters.persistence import schema
    from emailer.adapters.persistence.engine import make_engine

    engine = make_engine(_settings().effective_database_url)
    typer.echo(f"current: {schema.current_revision(engine)}  head: {schema.head_revision()}")


@blobs_app.command("gc")
def blobs_gc(
    grace: Annotated[
        float | None,
        typer.Option(help="seconds; keep blobs written more recently (default EMAILER_BLOB_GRACE)"),
    ] = None,
) -> None:
    """Delete blobs nothing needs any more (unused uploads, leftovers), after a grace period."""
    from datetime import timedelta

    from emailer.adapters.clock import SystemClock
    from emailer.adapters.persistence.blob_refs import PurgeRules, collect_garbage
    from emailer.adapters.persistence.engine import make_engine
    from emailer.bootstrap import build_blob_store

    settings = _settings()
    rules = PurgeRules(
        retention=timedelta(seconds=settings.attachment_retention),
        grace=timedelta(seconds=settings.blob_grace if grace is None else grace),
    )
    engine = make_engine(settings.effective_database_url)
    deleted = collect_garbage(engine, build_blob_store(settings), SystemClock(), rules)
    typer.echo(f"deleted {deleted} blob(s) nothing needs")


@contracts_app.command("schema")
def contracts_schema(
    directory: Path,
    internal: Annotated[bool, typer.Option("--internal", help="also Emailer's internal commands")] = False,
) -> None:
    """Write one JSON Schema file per public message into DIRECTORY."""
    from contracts.schema import write_schemas

    for path in write_schemas(directory, internal=internal):
        typer.echo(str(path))


@events_app.command("tail")
def events_tail(
    email_id: Annotated[str | None, typer.Option("--email-id", help="only this email's events")] = None,
    types: Annotated[list[str] | None, typer.Option("--type", help="only this type (repeatable)")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="stop after this many events")] = None,
    timeout: Annotated[float | None, typer.Option(min=0.1, help="stop after this many seconds")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per event")] = False,
    gateway_url: Annotated[str | None, typer.Option(help="the gateway (embedded bus)")] = None,
) -> None:
    """Print events as they are published (RabbitMQ: an exclusive queue; embedded: the gateway's stream)."""
    from emailer.entrypoints.events_tail import Filter, TailError, tail

    overrides = {"gateway_url": gateway_url} if gateway_url else {}
    wanted = Filter(email_id=email_id, types=tuple(types or ()), count=count, timeout=timeout)
    try:
        tail(
            _settings(**overrides),
            wanted,
            lambda line: typer.echo(line),
            as_json,
            on_ready=lambda where: typer.echo(f"tailing events from {where} (Ctrl-C stops)", err=True),
        )
    except TailError as exc:
        _fail(str(exc), code=1)


@contracts_app.command("asyncapi")
def contracts_asyncapi(
    out: Annotated[Path | None, typer.Option("--out", help="write to FILE (default: print it)")] = None,
) -> None:
    """Print (or write) the AsyncAPI 3.0 document of the bus as configured (EMAILER_TOPOLOGY etc.)."""
    import json

    from emailer.bootstrap import asyncapi

    text = json.dumps(asyncapi(_settings()), indent=2, sort_keys=True) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        typer.echo(str(out))


def main() -> None:
    from emailer.entrypoints.startup import describe

    try:
        app(prog_name="emailer")
    except Exception as exc:  # noqa: BLE001 - known start-up failures become one line; others re-raise
        line = describe(exc)
        if line is None:
            raise
        typer.echo(f"emailer: {line}", err=True)
        raise SystemExit(3) from None


if __name__ == "__main__":  # pragma: no cover
    main()
