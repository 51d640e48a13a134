"""The ``evbilling`` command line (Typer + Rich). Thin: read files, call a use case, render."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from evbilling import __version__
from evbilling.entrypoints.rendering import (
    dumps,
    print_rated_session,
    rated_session_to_json,
    text,
)
from evbilling.services.rating import DocumentError, rate_cdr_document, running_costs

#: TLS 1.2 cipher suites with forward secrecy and AEAD only (TLS 1.3 suites are separate and all
#: allowed): a TLS 1.0/1.1 client finds nothing in common, whatever the system OpenSSL allows
#: (OCPP 1.6 security whitepaper: TLS 1.2 or higher).
TLS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"

app = typer.Typer(
    name="evbilling",
    help="Billing and payments for EV charging operators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
demo_app = typer.Typer(help="Demonstrations with packaged demo data.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console()
err_console = Console(stderr=True)


class InputFileError(Exception):
    """A file given on the command line cannot be read as JSON."""


def read_json(path: Path) -> Any:
    """Decode a JSON file keeping every number exact (Decimal)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputFileError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: cannot read: {exc}") from exc
    try:
        return json.loads(raw, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise InputFileError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc


def fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


@app.command()
def rate(
    tariff: Annotated[Path, typer.Option("--tariff", help="OCPI 2.2.1 Tariff JSON file.")],
    cdr: Annotated[Path, typer.Option("--cdr", help="OCPI 2.2.1 CDR (or Session) JSON file; "
                                      "its own totals are ignored.")],
    time_zone: Annotated[str, typer.Option("--time-zone", help="IANA time zone of the site; "
                                           "tariff restrictions are in local time.")] = "UTC",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with the OCPI "
                                          "totals and the per-period breakdown.")] = False,
) -> None:
    """Price a CDR's charging periods under a tariff (OCPI 2.2.1 rules)."""
    try:
        tariff_doc = read_json(tariff)
        cdr_doc = read_json(cdr)
        parsed, rated = rate_cdr_document(tariff_doc, cdr_doc, time_zone,
                                          tariff_source=str(tariff), cdr_source=str(cdr))
    except (InputFileError, DocumentError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        sys.stdout.write(dumps(rated_session_to_json(rated, tariff_id=parsed.id,
                                                     time_zone=time_zone)) + "\n")
        return
    print_rated_session(console, rated,
                        title=f"Tariff {parsed.id} · CDR {cdr.name} · {time_zone}")


def _demo_file(name: str) -> Path:
    return Path(str(resources.files("evbilling") / "demo" / name))


@demo_app.command("rating")
def demo_rating() -> None:
    """Rate a packaged time-of-use session: live running cost, then the final CDR."""
    tariff_path, cdr_path = _demo_file("tou_tariff.json"), _demo_file("tou_cdr.json")
    time_zone = "Europe/Berlin"
    parsed, final = rate_cdr_document(read_json(tariff_path), read_json(cdr_path), time_zone)
    console.rule(f"[bold]evbilling {__version__}[/bold] · rating demo")
    console.print(f"Tariff [cyan]{parsed.id}[/cyan]: "
                  f"{parsed.tariff_alt_text[0].text if parsed.tariff_alt_text else ''}")
    live = Table(title="Running cost as the driver sees it (after each charging period)",
                 title_justify="left")
    live.add_column("after period starting (UTC)")
    live.add_column("energy kWh", justify="right")
    live.add_column("cost excl. VAT", justify="right")
    live.add_column("cost incl. VAT", justify="right")
    for label, snapshot in running_costs(parsed, read_json(cdr_path), time_zone):
        live.add_row(label, text(snapshot.total_energy),
                     text(snapshot.total_cost.excl_vat),
                     text(snapshot.total_cost.incl_vat or Decimal(0)))
    console.print(live)
    print_rated_session(console, final, title="Final CDR (Europe/Berlin)")
    console.print(f"Try it yourself: [bold]evbilling rate --tariff {tariff_path} "
                  f"--cdr {cdr_path} --time-zone {time_zone} --json[/bold]")


@db_app.command("upgrade")
def db_upgrade(
    database_url: Annotated[str | None, typer.Option("--database-url", envvar=
                                                     "EVBILLING_DATABASE_URL",
                                                     help="Default: sqlite:///evbilling.sqlite3"
                                                     )] = None,
) -> None:
    """Migrate the database to the newest schema."""
    from evbilling.adapters.db.engine import database_url as resolve
    from evbilling.adapters.db.engine import make_engine, migrate

    engine = make_engine(database_url)
    migrate(engine)
    console.print(f"database at [cyan]{_safe_url(resolve(database_url))}[/cyan] is up to date")


@db_app.command("check-ledger")
def db_check_ledger(
    database_url: Annotated[str | None, typer.Option("--database-url", envvar=
                                                     "EVBILLING_DATABASE_URL")] = None,
) -> None:
    """Audit the ledger: unbalanced transactions and wallets whose balance differs from their
    postings (exit status 1 if any). PostgreSQL refuses unbalanced transactions itself; on
    SQLite this is the re-check (docs/ledger.md)."""
    from evbilling.adapters.db.engine import make_engine
    from evbilling.services.ledger import unbalanced_transactions
    from evbilling.services.wallets import mismatched_wallets

    engine = make_engine(database_url)
    with engine.connect() as conn:
        unbalanced = unbalanced_transactions(conn)
        mismatched = mismatched_wallets(conn)
    engine.dispose()
    for txn_id in unbalanced:
        err_console.print(f"unbalanced ledger transaction {txn_id}")
    for m in mismatched:
        err_console.print(f"wallet {m.wallet_id} (driver {m.driver_id}) stores "
                          f"{m.balance_minor}, its postings say {m.ledger_minor}")
    if unbalanced or mismatched:
        raise typer.Exit(1)
    console.print("ledger balanced; every wallet matches its postings")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@demo_app.command("seed")
def demo_seed(
    database_url: Annotated[str | None, typer.Option("--database-url",
                                                     envvar="EVBILLING_DATABASE_URL")] = None,
) -> None:
    """Create the demo operator (idempotent); log-ins are listed in the README."""
    from evbilling.adapters.db.engine import make_engine, migrate
    from evbilling.adapters.db.uow import write_transaction
    from evbilling.services.demo import DEMO_API_KEY, seed_demo

    engine = make_engine(database_url)
    migrate(engine)
    with write_transaction(engine) as conn:
        operator_id = seed_demo(conn)
    console.print(f"demo operator [cyan]{operator_id}[/cyan] ready; "
                  f"admin API key [bold]{DEMO_API_KEY}[/bold]")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    database_url: Annotated[str | None, typer.Option("--database-url",
                                                     envvar="EVBILLING_DATABASE_URL")] = None,
    demo: Annotated[bool, typer.Option("--demo/--no-demo", help="Seed the demo operator first."
                                       )] = False,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    tls_cert: Annotated[Path | None, typer.Option(
        "--tls-cert", envvar="EVBILLING_TLS_CERT",
        help="PEM certificate (chain): serve HTTPS and wss://, for OCPP security profile 2."
    )] = None,
    tls_key: Annotated[Path | None, typer.Option(
        "--tls-key", envvar="EVBILLING_TLS_KEY", help="PEM private key of --tls-cert.")] = None,
) -> None:
    """Serve the API (migrates the database first); /docs shows the OpenAPI UI."""
    import os

    import uvicorn

    from evbilling.adapters.db.engine import make_engine, migrate
    from evbilling.adapters.db.uow import write_transaction
    from evbilling.services.demo import DEMO_API_KEY, seed_demo

    if database_url:
        os.environ["EVBILLING_DATABASE_URL"] = database_url
    engine = make_engine(database_url)
    migrate(engine)
    if demo:
        with write_transaction(engine) as conn:
            seed_demo(conn)
        console.print(f"demo data ready: admin API key [bold]{DEMO_API_KEY}[/bold]")
    engine.dispose()
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together")
    tls: dict[str, Any] = {} if tls_cert is None else {
        "ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key), "ssl_ciphers": TLS_CIPHERS}
    scheme = "https" if tls else "http"
    console.print(f"evbilling API on [bold]{scheme}://{host}:{port}/docs[/bold]")
    # OCPP frames are small: a per-connection deflate context would cost more memory than the
    # rest of the connection and CPU on every frame; 1.1 MB: the gateway's frame limit (1 MiB)
    uvicorn.run("evbilling.entrypoints.api.asgi:app", host=host, port=port, workers=workers,
                log_level="warning", access_log=False, ws_per_message_deflate=False,
                ws_max_size=1_100_000, **tls)


@app.command()
def simulate(
    chargers: Annotated[int, typer.Option(help="How many chargers to simulate.")] = 3,
    minutes: Annotated[float, typer.Option(help="Simulated minutes to run.")] = 60,
    ocpp: Annotated[str, typer.Option(help="1.6, 2.0.1 or mixed.")] = "mixed",
    speedup: Annotated[float, typer.Option(help="Time compression: wall time = simulated "
                                           "time / speedup.")] = 60,
    url: Annotated[str, typer.Option(help="Central system; a charger connects to URL/ID."
                                     )] = "ws://127.0.0.1:8000/ocpp",
    password: Annotated[str | None, typer.Option(help="Basic-auth password of every simulated "
                                                 "charger. Default: the demo one.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sessions (same seed, same cars).")] = 0,
    token: Annotated[list[str] | None, typer.Option(help="RFID token (repeat). Default: the "
                                                    "demo tokens.")] = None,
    identity: Annotated[list[str] | None, typer.Option(help="Charger identity, ID or ID@1.6 "
                                                       "(repeat). Default: the demo chargers, "
                                                       "then SIM-00001...")] = None,
    sample_interval: Annotated[int, typer.Option(help="Meter sample interval, simulated "
                                                 "seconds.")] = 60,
) -> None:
    """Simulate OCPP chargers charging cars against a central system (real sockets)."""
    from evbilling.simulator import runner

    try:
        config = runner.SimulationConfig(
            chargers=chargers, minutes=minutes, ocpp=ocpp, speedup=speedup, url=url,
            password=password or runner.DEMO_CHARGER_PASSWORD, seed=seed,
            tokens=tuple(token or runner.DEMO_TOKENS), identities=tuple(identity or ()),
            sample_interval_s=sample_interval)
    except ValueError as exc:
        raise fail(str(exc)) from None
    result = runner.run_with_display(config, console)
    if result.stats.booted == 0:
        raise typer.Exit(code=1)


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
