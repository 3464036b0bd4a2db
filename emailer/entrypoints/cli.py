"""The ``emailer`` command.

Each subcommand imports its implementation lazily: ``--help`` touches no server.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from handlers.unit_of_work import AbstractUnitOfWork

app = typer.Typer(
    help="Emailer: SendEmail in, lifecycle events out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
contracts_app = typer.Typer(help="The public message contracts.", no_args_is_help=True)
blobs_app = typer.Typer(help="The blob store (attachments).", no_args_is_help=True)
suppressions_app = typer.Typer(help="The suppression list: addresses not sent to.", no_args_is_help=True)
errors_app = typer.Typer(
    help="The error queue (RabbitMQ): failed messages listed, shown, replayed, edited, purged.",
    no_args_is_help=True,
)
events_app = typer.Typer(help="Emailer's published events.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(errors_app, name="errors")
app.add_typer(blobs_app, name="blobs")
app.add_typer(contracts_app, name="contracts")
app.add_typer(suppressions_app, name="suppressions")
app.add_typer(events_app, name="events")


PROGRESS_FROM = 10  # messages: a replay or purge of fewer shows no progress bar


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


@app.command()
def cancel(
    email_id: str,
    gateway_url: Annotated[str | None, typer.Option(help="gateway URL (default: from settings)")] = None,
) -> None:
    """Cancel an email the provider does not have yet; exit 1 if it came too late or the email is unknown."""
    from emailer.entrypoints.send_cli import CancelTooLate
    from emailer.entrypoints.send_cli import cancel as cancel_email

    try:
        outcome = cancel_email(email_id, _settings(), gateway_url)
    except CancelTooLate as exc:
        _fail(f"not cancelled: {exc}", 1)
    except (LookupError, RuntimeError) as exc:
        _fail(str(exc), 1)
    typer.echo(f"{email_id}: {outcome}")


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


def _suppressions_uow() -> AbstractUnitOfWork:
    from emailer.adapters.clock import SystemClock
    from emailer.adapters.persistence.engine import make_engine
    from emailer.adapters.persistence.unit_of_work import SqlUnitOfWork

    settings = _settings()
    return SqlUnitOfWork(make_engine(settings.effective_database_url), SystemClock(), settings.input_queue)


@suppressions_app.command("list")
def suppressions_list(
    limit: Annotated[int, typer.Option(help="entries at most")] = 100,
    after: Annotated[str | None, typer.Option(help="start after this address")] = None,
) -> None:
    """List suppressed addresses: address, reason, since, the email that listed it."""
    from handlers.suppressions import list_page

    for entry in list_page(_suppressions_uow(), limit, after):
        source = entry.source_email_id or "-"
        typer.echo(f"{entry.address}\t{entry.reason.value}\t{entry.created_at.isoformat()}\t{source}")


@suppressions_app.command("add")
def suppressions_add(
    address: str, note: Annotated[str | None, typer.Option(help="why (kept with the entry)")] = None
) -> None:
    """Suppress ADDRESS by hand (reason manual); an address listed already keeps its reason."""
    from datetime import UTC, datetime

    from pydantic import EmailStr, TypeAdapter, ValidationError

    from handlers.suppressions import add_by_hand

    try:
        TypeAdapter(EmailStr).validate_python(address)
    except ValidationError:
        _fail(f"{address!r} is not an email address")
    entry, added = add_by_hand(_suppressions_uow(), address, note, datetime.now(UTC))
    typer.echo(f"{'added' if added else 'already listed'}: {entry.address} ({entry.reason.value})")


@suppressions_app.command("remove")
def suppressions_remove(address: str) -> None:
    """Take ADDRESS off the list: later emails go to it again."""
    from handlers.suppressions import remove_by_hand

    if not remove_by_hand(_suppressions_uow(), address):
        _fail(f"{address!r} is not on the suppression list", 1)
    typer.echo(f"removed: {address.strip().lower()}")


@errors_app.command("list")
def errors_list(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Failed messages in groups (exception, first stack frame, message type, handler): count, first, last."""
    from emailer.entrypoints import errors_cli as impl

    with _errors(impl) as errors:
        found = impl.list_groups(errors)
        render = impl.groups_json if as_json else impl.render_groups
        typer.echo(render(errors.queue, found))


@errors_app.command("show")
def errors_show(message_id: Annotated[str, typer.Argument(help="the failed message's id")]) -> None:
    """One failed message: its headers, the body pretty-printed, the stack trace."""
    from emailer.entrypoints import errors_cli as impl

    with _errors(impl) as errors:
        typer.echo(impl.render_message(impl.find(impl.browse(errors), message_id)))


@errors_app.command("replay")
def errors_replay(
    message_id: Annotated[str | None, typer.Argument(help="the failed message's id")] = None,
    group: Annotated[str | None, typer.Option(help="every message of this group (id from 'list')")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every message in the error queue")] = False,
) -> None:
    """Send failed messages back to their queue: same message id, failure and retry headers removed."""
    from emailer.entrypoints import errors_cli as impl

    if sum((message_id is not None, group is not None, all_)) != 1:
        _fail("give exactly one of ID, --group G or --all")
    with _errors(impl) as errors:
        messages = impl.browse(errors)
        if message_id is not None:
            chosen = [impl.find(messages, message_id)]
        else:
            chosen = impl.in_group(messages, group) if group is not None else messages
        progress = _Progress("replaying")
        try:
            outcome = impl.replay_selection(errors, chosen, progress)
        finally:
            progress.close()
        _report("went back to their queue", outcome, len(chosen))


@errors_app.command("edit")
def errors_edit(
    message_id: Annotated[str, typer.Argument(help="the failed message's id")],
    body: Annotated[Path | None, typer.Option(help="the corrected body, a JSON file (else $EDITOR)")] = None,
) -> None:
    """Send a failed message back with a corrected body (checked against its contract), under a new id."""
    from emailer.entrypoints import errors_cli as impl

    with _errors(impl) as errors:
        original = impl.find(impl.browse(errors), message_id)
        if body is not None:
            new_body = body.read_bytes()
        else:
            import click  # typer's own foundation: its editor helper

            impl.check_editable(original)
            text = click.edit(impl.pretty_body(original) + "\n", extension=".json")
            if text is None:
                _fail("no change saved in the editor: nothing sent", 1)
            new_body = text.encode()
        new_id = impl.edit(errors, original, new_body)
        typer.echo(f"sent {new_id} (NServiceBus.EditOf {original.message_id}) to {original.failed_queue}; "
                   f"{original.id} removed from {errors.queue}")  # fmt: skip


@errors_app.command("purge")
def errors_purge(
    message_id: Annotated[str | None, typer.Argument(help="the failed message's id")] = None,
    group: Annotated[str | None, typer.Option(help="every message of this group (id from 'list')")] = None,
    older_than: Annotated[
        str | None, typer.Option(help="those that failed longer ago than this, e.g. 7d, 12h, 1d12h")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Delete failed messages for good (asks first unless --yes)."""
    from emailer.entrypoints import errors_cli as impl

    if message_id is None and group is None and older_than is None:
        _fail("give ID, --group G and/or --older-than DURATION")
    with _errors(impl) as errors:
        chosen = impl.browse(errors)
        if message_id is not None:
            chosen = [impl.find(chosen, message_id)]
        if group is not None:
            chosen = impl.in_group(chosen, group)
        if older_than is not None:
            chosen = impl.older_than(chosen, impl.parse_duration(older_than))
        if not chosen:
            typer.echo("no failed message matches: nothing purged")
            return
        question = f"purge {len(chosen)} failed message(s) from {errors.queue} for good?"
        if not yes and not typer.confirm(question):
            _fail("nothing purged", 1)
        progress = _Progress("purging")
        try:
            outcome = impl.purge_selection(errors, chosen, progress)
        finally:
            progress.close()
        _report("purged", outcome, len(chosen))


@contextmanager
def _errors(impl: Any) -> Iterator[Any]:
    """The error queue, open; any ``ErrorsFailed`` becomes one line and exit code 1."""
    try:
        errors = impl.open_queue(_settings())
        try:
            yield errors
        finally:
            errors.close()
    except impl.ErrorsFailed as exc:
        _fail(str(exc), 1)


class _Progress:
    """A progress bar on stderr, for a move of more than a few messages (``impl.Progress``)."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._bar: Any = None

    def __call__(self, total: int) -> Callable[[], None]:
        if total < PROGRESS_FROM:
            return lambda: None
        self._bar = typer.progressbar(length=total, label=self._label, file=sys.stderr)
        self._bar.__enter__()
        return lambda: self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _report(what: str, outcome: Any, chosen: int) -> None:
    for reason in outcome.skipped:
        typer.echo(f"left in the error queue: {reason}", err=True)
    missing = chosen - outcome.moved - len(outcome.skipped)
    gone = f"; {missing} were no longer in the error queue" if missing > 0 else ""
    typer.echo(f"{outcome.moved} of {chosen} message(s) {what}{gone}")
    if outcome.moved < chosen:
        raise typer.Exit(1)


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
        sys.stderr.write(f"emailer: {line}\n")  # one write: a log line from a thread cannot split it
        sys.stderr.flush()
        raise SystemExit(3) from None


if __name__ == "__main__":  # pragma: no cover
    main()
