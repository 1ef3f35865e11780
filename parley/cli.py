"""The ``parley`` command line.

Operator commands (``serve``, ``db``, ``tenants``, ``keys``) work on the server's own database.
Everything else talks to the REST API, so it works against a remote server too:
``PARLEY_URL`` (default http://127.0.0.1:8000) and ``PARLEY_API_KEY``. Every command that
reads data back accepts ``--json``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from parley.client import ParleyAPIError, ParleyClient

if TYPE_CHECKING:
    from core.settings import Settings
    from parley.demo import Demo

app = typer.Typer(help="Parley: datasets, training, models and predictions.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
tenants_app = typer.Typer(
    help="Tenants (operator; works on the local database).", no_args_is_help=True
)
keys_app = typer.Typer(
    help="API keys (operator; works on the local database).", no_args_is_help=True
)
datasets_app = typer.Typer(help="Datasets.", no_args_is_help=True)
models_app = typer.Typer(help="Models (train jobs).", no_args_is_help=True)
aliases_app = typer.Typer(help="Aliases such as production.", no_args_is_help=True)
agents_app = typer.Typer(
    help="Agents of the service console (operator; works on the local database).",
    no_args_is_help=True,
)
users_app = typer.Typer(
    help="Users of a tenant: admins, builders (the Studio), agents and supervisors (the agents' "
    "console) (operator; works on the local database).",
    no_args_is_help=True,
)
secrets_app = typer.Typer(
    help="Secrets at rest (operator; works on the local database).", no_args_is_help=True
)
demo_app = typer.Typer(
    help="The demo tenant and bot (operator; works on the local database).", no_args_is_help=True
)
for sub, name in (
    (db_app, "db"),
    (tenants_app, "tenants"),
    (keys_app, "keys"),
    (datasets_app, "datasets"),
    (models_app, "models"),
    (aliases_app, "aliases"),
    (agents_app, "agents"),
    (users_app, "users"),
    (secrets_app, "secrets"),
    (demo_app, "demo"),
):
    app.add_typer(sub, name=name)

# Piped output (scripts, logs) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160)
err = Console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _client() -> ParleyClient:
    api_key = os.environ.get("PARLEY_API_KEY")
    if not api_key and not os.environ.get("PARLEY_URL"):
        from core.settings import get_settings
        from parley.demo import KEY_FILE

        demo_key = get_settings().data_dir / KEY_FILE
        if demo_key.exists():
            err.print(f"(PARLEY_API_KEY is not set: using the demo tenant's key from {demo_key})")
            api_key = demo_key.read_text().strip()
    return ParleyClient(api_key=api_key)


def _api(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except ParleyAPIError as e:
        _fail(f"{e.message} ({e.status} {e.code})")


def _operator_db() -> Any:
    from core.db import ensure_schema, get_engine
    from core.errors import ParleyError
    from core.settings import get_settings

    settings = get_settings()
    try:
        ensure_schema(settings.database_url)
    except ParleyError as e:
        _fail(e.message)
    return get_engine(settings.database_url)


# --- serve and db ------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    demo: Annotated[bool, typer.Option(help="create the demo tenant on first start")] = True,
    workers: Annotated[
        int | None,
        typer.Option(help="local train worker processes (0: this server trains nothing)"),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="gateway processes sharing the port, each with its own model cache (default "
            "PARLEY_SERVING__PROCESSES, 1: one process, inference on one thread per core); more "
            "than 1 needs PARLEY_REDIS__URL for the shared rate limits and quotas",
        ),
    ] = None,
) -> None:
    """Run the Parley server (and its train workers). Migrates an embedded SQLite database."""
    from core.db import ensure_schema
    from core.errors import ParleyError
    from core.settings import get_settings
    from parley.serving import check_processes
    from parley.serving import serve as serve_gateway

    if workers is not None:
        os.environ["PARLEY_QUEUE__WORKERS"] = str(workers)
    if processes is not None:
        os.environ["PARLEY_SERVING__PROCESSES"] = str(processes)
    if demo:
        os.environ["PARLEY_DEMO"] = "1"
    get_settings.cache_clear()
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        check_processes(settings)
        ensure_schema(settings.database_url)
    except ParleyError as e:
        _fail(e.message)
    url = f"http://{host}:{port}"
    if demo:
        info = _ensure_demo(settings, url)
        console.print(f"[bold]Parley[/bold] on {url}  (data in {settings.data_dir.resolve()})")
        if info.api_key:
            console.print(f"Demo tenant API key: [bold]{info.api_key}[/bold]", highlight=False)
            console.print(
                f"Try:  curl -s {url}/v1/models/production/predict -H 'Authorization: Bearer "
                f"{info.api_key}' -H 'Content-Type: application/json' "
                '-d \'{"text": "where is my parcel?"}\'',
                highlight=False,
                soft_wrap=True,
            )
        console.print(f"Demo bot: open {url}/demo and chat with it", highlight=False)
        for line in _demo_logins(info, url):
            console.print(line, highlight=False)
        if info.created:
            console.print(
                "The demo model is training; alias `production` points at it when done "
                "(a few seconds)."
            )
    else:
        console.print(f"[bold]Parley[/bold] on {url}")
    sys.stdout.flush()
    try:
        serve_gateway(settings, host=host, port=port)
    except ParleyError as e:
        _fail(e.message)


def _demo_logins(info: Demo, url: str) -> list[str]:
    """Where the demo users sign in, with their passwords (from the data dir's logins file)."""
    from parley.demo import DEMO_TENANT

    places = {"admin": ("Studio", "/studio"), "agent": ("Agents' console", "/console/agents")}
    lines = []
    for username, password in info.logins.items():
        title, path = places.get(username, ("Studio", "/studio"))
        note = " (new)" if username in info.logins_changed else ""
        lines.append(
            f"{title}: {url}{path}  tenant {DEMO_TENANT}  user {username} password {password}{note}"
        )
    return lines


def _ensure_demo(settings: Settings, url: str) -> Demo:
    """The demo tenant (dataset, queued model, API key in the data dir) and the demo bot for a
    server at ``url``; idempotent (``parley.demo``)."""
    from core.db import get_engine
    from core.storage import store_for
    from parley.demo import ensure_demo, ensure_demo_bot
    from training.datasets.importers import Limits

    lim = settings.limits
    engine = get_engine(settings.database_url)
    info = ensure_demo(
        engine,
        store_for(settings),
        settings.data_dir,
        Limits(lim.max_examples, lim.max_labels, lim.max_text_chars),
    )
    ensure_demo_bot(engine, info.tenant_id, url)
    return info


@demo_app.command("create")
def demo_create(
    url: Annotated[
        str | None,
        typer.Option(
            help="the public URL of the gateways: the demo bot calls its orders API there and "
            "accepts web chat from that origin (default: PARLEY_PUBLIC_URL, else "
            "http://127.0.0.1:8000)"
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create the demo tenant and bot once, for gateways started with --no-demo (a cluster);
    later runs only point the bot at --url. The admin API key is saved in the data dir; the
    output names that file (the key itself only with --json, so it stays out of logs).
    Gateways serve the demo's orders API when PARLEY_DEMO=true."""
    from core.settings import get_settings
    from parley.demo import KEY_FILE, LOGINS_FILE

    settings = get_settings()
    base = (url or settings.public_url or "http://127.0.0.1:8000").rstrip("/")
    _operator_db()
    info = _ensure_demo(settings, base)
    data = {
        "tenant_id": info.tenant_id,
        "api_key": info.api_key,
        "model_id": info.model_id,
        "created": info.created,
        "url": base,
        "logins": info.logins,
    }
    if as_json:
        _print_json(data)
        return
    console.print(
        f"demo tenant {info.tenant_id} ({'created' if info.created else 'already there'}); "
        f"demo bot at {base}/demo",
        highlight=False,
    )
    if info.api_key:
        # not the key itself: this output ends up in logs (`docker compose logs demo`)
        key_file = settings.data_dir / KEY_FILE
        console.print(
            f"Demo tenant API key: saved in {key_file} (not printed here, to keep it out of "
            f"logs); read it with `cat {key_file}` on this machine (Docker Compose: `docker "
            f"compose run --rm --no-deps demo cat {key_file}`), or run `parley demo create "
            "--json`",
            highlight=False,
        )
    else:
        console.print(
            f"The demo tenant's API key is not in {settings.data_dir} (it was created by another "
            "machine); create one with `parley keys create --tenant demo --scope admin`",
            highlight=False,
        )
    logins_file = settings.data_dir / LOGINS_FILE
    console.print(
        f"Demo users admin (the Studio, {base}/studio) and agent (the agents' console): their "
        f"passwords are saved in {logins_file} (not printed here); `parley demo create --json` "
        "shows them",
        highlight=False,
    )


@app.command()
def worker(
    queues: Annotated[
        str, typer.Option(help="queues to take jobs from, comma-separated: cpu, gpu")
    ] = "cpu",
    concurrency: Annotated[int, typer.Option(min=1, help="jobs run at once (processes)")] = 1,
    name: Annotated[
        str | None, typer.Option(help="Celery node name; default parley-<pid>@<host>")
    ] = None,
) -> None:
    """Run a Celery train worker (PARLEY_QUEUE__BACKEND=celery, PARLEY_REDIS__URL): it takes
    jobs from the given queues; on a GPU host use --queues gpu,cpu."""
    from core.errors import ParleyError
    from core.settings import get_settings
    from training.celery_app import QUEUES, run_worker

    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(chosen) - set(QUEUES))
    if unknown or not chosen:
        _fail(f"unknown queue(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(QUEUES)}")
    get_settings.cache_clear()
    try:
        run_worker(get_settings(), queues=chosen, concurrency=concurrency, name=name)
    except ParleyError as e:
        _fail(e.message)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (needed before serving on PostgreSQL)."""
    from core.db import upgrade
    from core.settings import get_settings

    upgrade(get_settings().database_url)
    console.print("database is up to date")


@db_app.command("current")
def db_current(as_json: JsonOpt = False) -> None:
    """Show the schema revision of the database and the one this Parley needs."""
    from core.db import current_revision, get_engine, head_revision
    from core.settings import get_settings

    url = get_settings().database_url
    data = {"current": current_revision(get_engine(url)), "head": head_revision(url)}
    if as_json:
        _print_json(data)
    else:
        console.print(f"current: {data['current']}  head: {data['head']}")


# --- tenants and keys (operator) ---------------------------------------------------------


@agents_app.command("create")
def agents_create(
    username: Annotated[str, typer.Argument(help="the agent's login name")],
    tenant: Annotated[str, typer.Option(help="the tenant (name or id)")],
    role: Annotated[str, typer.Option(help="agent or supervisor")] = "agent",
    name: Annotated[str | None, typer.Option(help="the name customers and agents see")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create an agent who logs in at /console/agents (the password is asked for)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    _create_user(username, tenant=tenant, role=role, name=name, password=password, as_json=as_json)


def _create_user(
    username: str, *, tenant: str, role: str, name: str | None, password: str, as_json: bool
) -> None:
    """Create a user of ``tenant`` in the local database and say where they sign in."""
    from bot_gateway.services.accounts import create_user
    from core.db import session_scope
    from core.errors import ParleyError
    from core.tenants import get_tenant

    engine = _operator_db()
    try:
        with session_scope(engine) as session:
            found = get_tenant(session, tenant)
            user = create_user(
                session,
                tenant_id=found.id,
                username=username,
                password=password,
                role=role,
                name=name,
            )
            data = {
                "id": user.id,
                "tenant": found.name,
                "username": user.username,
                "name": user.name,
                "role": user.role,
            }
    except ParleyError as e:
        _fail(e.message)
    if as_json:
        _print_json(data)
        return
    where = (
        "log in at /console/agents"
        if data["role"] in ("agent", "supervisor")
        else "sign in to the Studio at /studio"
    )
    console.print(
        f"{data['role'].title()} [bold]{data['username']}[/bold] of {data['tenant']}: {where}",
        highlight=False,
    )


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="the user's login name")],
    tenant: Annotated[str, typer.Option(help="the tenant (name or id)")],
    role: Annotated[str, typer.Option(help="admin, builder, agent or supervisor")],
    password: Annotated[
        str | None,
        typer.Option(help="the password (asked for when not given; a flag shows in the history)"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="the name others see")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a user: admins and builders sign in to the Studio (/studio), agents and
    supervisors to the agents' console (/console/agents)."""
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    _create_user(username, tenant=tenant, role=role, name=name, password=password, as_json=as_json)


@users_app.command("list")
def users_list(
    tenant: Annotated[str, typer.Option(help="the tenant (name or id)")], as_json: JsonOpt = False
) -> None:
    """The tenant's users with their roles."""
    from bot_gateway.services.accounts import list_users
    from core.db import session_scope
    from core.errors import ParleyError
    from core.tenants import get_tenant

    try:
        with session_scope(_operator_db()) as session:
            found = get_tenant(session, tenant)
            rows: list[dict[str, Any]] = [
                {
                    "id": u.id,
                    "username": u.username,
                    "name": u.name,
                    "role": u.role,
                    "created_at": u.created_at,
                    "disabled": u.disabled_at is not None,
                }
                for u in list_users(session, found.id)
            ]
    except ParleyError as e:
        _fail(e.message)
    if as_json:
        _print_json(rows)
        return
    table = Table("id", "username", "name", "role", "disabled")
    for row in rows:
        table.add_row(row["id"], row["username"], row["name"], row["role"], str(row["disabled"]))
    console.print(table)


@tenants_app.command("create")
def tenants_create(name: str, as_json: JsonOpt = False) -> None:
    """Create a tenant and its first API key (admin scope; shown once)."""
    from core.db import session_scope
    from core.errors import ParleyError
    from core.tenants import create_tenant

    engine = _operator_db()
    try:
        with session_scope(engine) as session:
            tenant, key = create_tenant(session, name)
            data = {
                "tenant_id": tenant.id,
                "name": tenant.name,
                "api_key": key.secret,
                "key_id": key.record.id,
            }
    except ParleyError as e:
        _fail(e.message)
    if as_json:
        _print_json(data)
    else:
        console.print(
            f"tenant {data['tenant_id']} ({name})\nAPI key (shown once): "
            f"[bold]{data['api_key']}[/bold]",
            highlight=False,
        )


@tenants_app.command("list")
def tenants_list(as_json: JsonOpt = False) -> None:
    from sqlalchemy import select

    from core.db import session_scope
    from core.tables import Tenant

    with session_scope(_operator_db()) as session:
        rows = [
            {"tenant_id": t.id, "name": t.name, "created_at": t.created_at.isoformat()}
            for t in session.scalars(select(Tenant).order_by(Tenant.created_at))
        ]
    if as_json:
        _print_json(rows)
    else:
        _table(rows, ["tenant_id", "name", "created_at"])


def _pairs(values: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            _fail(f"{option} {item!r}: write NAME=VALUE")
        pairs[name.strip()] = value.strip()
    return pairs


def _quota_values(values: list[str]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for name, value in _pairs(values, "--quota").items():
        if value.lower() == "none":
            out[name] = None
        elif value.isdigit():
            out[name] = int(value)
        else:
            _fail(f"--quota {name}={value}: give a whole number, or none to clear it")
    return out


def _rate_values(values: list[str]) -> dict[str, dict[str, float] | None]:
    out: dict[str, dict[str, float] | None] = {}
    for name, value in _pairs(values, "--rate").items():
        per_second, sep, burst = value.partition("/")
        if value.lower() == "none":
            out[name] = None
            continue
        try:
            out[name] = {"per_second": float(per_second), "burst": int(burst)}
        except ValueError:
            _fail(f"--rate {name}={value}: write PER_SECOND/BURST (50/100), or none to clear it")
    return out


@tenants_app.command("update")
def tenants_update(
    tenant: Annotated[str, typer.Argument(help="tenant id or name")],
    quota: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=N or NAME=none (repeatable): predictions_per_month, "
            "train_minutes_per_day, models, storage_bytes"
        ),
    ] = None,
    rate: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=PER_SECOND/BURST or NAME=none (repeatable): predict_key, "
            "predict_tenant, train_*, upload_*, api_*, webhook_tenant"
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a tenant's quotas and rate-limit overrides (running gateways apply them within
    10 s); without options, show them."""
    from core.db import session_scope
    from core.errors import ParleyError
    from core.quotas import TenantLimits, update_limits

    quotas, rates = _quota_values(quota or []), _rate_values(rate or [])
    try:
        with session_scope(_operator_db()) as session:
            row = update_limits(session, tenant, quotas=quotas, rates=rates)
            limits_quotas, limits_rates = TenantLimits.of(row).public()
            data: dict[str, Any] = {
                "tenant_id": row.id,
                "name": row.name,
                "quotas": limits_quotas,
                "rate_limits": limits_rates,
            }
    except ParleyError as e:
        _fail(e.message)
    if as_json:
        _print_json(data)
        return
    console.print(f"tenant {data['tenant_id']} ({data['name']})", highlight=False)
    rows = [{"limit": k, "value": v} for k, v in sorted(data["quotas"].items())]
    rows += [
        {"limit": k, "value": f"{r['per_second']:g}/s, burst {r['burst']}"}
        for k, r in sorted(data["rate_limits"].items())
    ]
    if rows:
        _table(rows, ["limit", "value"])
    else:
        console.print("no quotas; the server's default rate limits")


@app.command()
def usage(
    tenant: Annotated[str, typer.Option(help="tenant id or name")],
    start: Annotated[
        str | None, typer.Option("--from", help="first hour or day, ISO 8601 (UTC)")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="end, exclusive (default now)")] = None,
    granularity: Annotated[str, typer.Option(help="day or hour")] = "day",
    as_json: JsonOpt = False,
) -> None:
    """A tenant's usage (operator; the local database): predictions by model and kind, OCR
    pages, training seconds by device, conversations and messages by channel, storage."""
    from core.db import session_scope
    from core.errors import ParleyError
    from core.settings import get_settings
    from core.storage import store_for
    from core.tenants import get_tenant
    from core.usage import entries_as_dicts, stored_bytes, usage_report

    if granularity not in ("day", "hour"):
        _fail(f"--granularity {granularity!r}: use day or hour")
    try:
        with session_scope(_operator_db()) as session:
            tenant_id = get_tenant(session, tenant).id
            report = usage_report(
                session,
                tenant_id,
                start=_when(start, "--from"),
                end=_when(end, "--to"),
                granularity=granularity,  # type: ignore[arg-type]
            )
        storage = stored_bytes(store_for(get_settings()), tenant_id)
    except ParleyError as e:
        _fail(e.message)
    entries = entries_as_dicts(report.entries)
    if as_json:
        _print_json(
            {
                "tenant_id": report.tenant_id,
                "from": report.start,
                "to": report.end,
                "granularity": report.granularity,
                "entries": entries,
                "totals": report.totals,
                "storage_bytes": storage,
            }
        )
        return
    console.print(
        f"usage of {report.tenant_id} from {report.start.isoformat()} to "
        f"{report.end.isoformat()} by {report.granularity}",
        highlight=False,
    )
    fmt = "%Y-%m-%d %H:00" if report.granularity == "hour" else "%Y-%m-%d"
    rows = [
        {
            **e,
            "start": e["start"].strftime(fmt),
            "value": f"{e['value']:g}",
        }
        for e in entries
    ]
    _table(rows, ["start", "metric", "model_id", "kind", "device", "channel", "value"])
    totals = ", ".join(f"{k} {v:g}" for k, v in sorted(report.totals.items())) or "nothing"
    console.print(f"totals: {totals}; storage_bytes now: {storage}", highlight=False)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="tenant id or name")],
    scope: Annotated[list[str], typer.Option(help="admin, train or predict (repeatable)")],
    name: Annotated[str, typer.Option(help="a note to recognise the key by")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Create an API key for a tenant (shown once)."""
    from core.db import session_scope
    from core.errors import ParleyError
    from core.tenants import create_key, get_tenant

    engine = _operator_db()
    try:
        with session_scope(engine) as session:
            t = get_tenant(session, tenant)
            key = create_key(session, t.id, scopes=scope, name=name)
            data = {
                "key_id": key.record.id,
                "tenant_id": t.id,
                "scopes": key.record.scopes,
                "api_key": key.secret,
            }
    except ParleyError as e:
        _fail(e.message)
    if as_json:
        _print_json(data)
    else:
        console.print(
            f"key {data['key_id']} scopes {', '.join(data['scopes'])}\n"
            f"API key (shown once): [bold]{data['api_key']}[/bold]",
            highlight=False,
        )


@keys_app.command("revoke")
def keys_revoke(key_id: str, tenant: Annotated[str, typer.Option()]) -> None:
    from core.db import session_scope
    from core.errors import ParleyError
    from core.tenants import get_tenant, revoke_key

    try:
        with session_scope(_operator_db()) as session:
            revoke_key(session, get_tenant(session, tenant).id, key_id)
    except ParleyError as e:
        _fail(e.message)
    console.print(f"revoked {key_id}")


# --- audit log and secrets at rest (operator) ----------------------------------------------


def _when(value: str | None, option: str) -> Any:
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{option} {value!r} is not an ISO 8601 time (2026-12-03 or 2026-12-03T08:00)")
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command()
def audit(
    tenant: Annotated[
        str | None,
        typer.Option(help="tenant id or name; default: all, with refused anonymous writes"),
    ] = None,
    since: Annotated[str | None, typer.Option("--from", help="from this time (UTC)")] = None,
    until: Annotated[str | None, typer.Option("--to", help="before this time (UTC)")] = None,
    actor: Annotated[str | None, typer.Option(help="key:<id>, agent:<id>, operator, ...")] = None,
    action: Annotated[str | None, typer.Option(help="e.g. 'DELETE /v1/bots/{bot_id}'")] = None,
    target: Annotated[str | None, typer.Option(help="an id the write touched")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    before: Annotated[int | None, typer.Option(help="entries older than this entry id")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit log: who wrote what to which id, when, from where, with which status."""
    from core import audit as audit_log
    from core.db import session_scope
    from core.errors import ParleyError
    from core.tenants import get_tenant

    start, end = _when(since, "--from"), _when(until, "--to")
    try:
        with session_scope(_operator_db()) as session:
            tenant_id = get_tenant(session, tenant).id if tenant else None
            rows = [
                {
                    "id": e.id,
                    "created_at": e.created_at.isoformat(),
                    "tenant_id": e.tenant_id,
                    "actor": e.actor,
                    "action": e.action,
                    "target_id": e.target_id,
                    "status": e.status,
                    "address": e.address,
                }
                for e in audit_log.query(
                    session,
                    tenant_id=tenant_id,
                    all_tenants=tenant is None,
                    start=start,
                    end=end,
                    actor=actor,
                    action=action,
                    target_id=target,
                    before=before,
                    limit=limit,
                )
            ]
    except ParleyError as e:
        _fail(e.message)
    if as_json:
        _print_json(rows)
    else:
        columns = ["id", "created_at", "actor", "action", "target_id", "status", "address"]
        _table(rows, columns if tenant else ["tenant_id", *columns])


@app.command()
def openapi(
    write: Annotated[
        bool, typer.Option("--write", help="update the committed snapshot docs/openapi.json")
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="exit 1 when the API differs from the snapshot")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="write the document to this file")
    ] = None,
) -> None:
    """The API's OpenAPI document; --check lists how it differs from the committed snapshot
    (breaking or additive, by the README's compatibility policy), --write updates it."""
    from bot_gateway import api_snapshot

    doc = api_snapshot.current_document()
    text = api_snapshot.dumps(doc)
    if check or write:
        old = api_snapshot.load_snapshot() if api_snapshot.SNAPSHOT.exists() else {}
        changes = api_snapshot.compare(old, doc)
        for change in changes:
            typer.echo(str(change))
        if write:
            api_snapshot.SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
            api_snapshot.SNAPSHOT.write_text(text, encoding="utf-8")
            typer.echo(
                f"wrote {api_snapshot.SNAPSHOT} ({len(changes)} changes); say what "
                "changed for clients in CHANGELOG.md"
            )
        elif changes or (old and api_snapshot.dumps(old) != text):
            _fail(
                "the API differs from docs/openapi.json: update it with `parley openapi "
                "--write` and add the changes to CHANGELOG.md"
            )
        return
    if output is not None:
        output.write_text(text, encoding="utf-8")
    else:
        typer.echo(text, nl=False)


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Encrypt every channel secret and action header with the first key in
    PARLEY_SECRET_KEY (those under an older key, and those stored in clear). Afterwards the
    older keys can be removed from PARLEY_SECRET_KEY."""
    from connectors.registry import connectors
    from core import secrets
    from core.db import session_scope
    from core.errors import ParleyError, UnknownPluginError
    from core.registry import load_entry_points
    from core.settings import get_settings

    load_entry_points()

    def channel_secrets(channel_type: str) -> frozenset[str]:
        try:
            return secrets.secret_fields(connectors.get(channel_type).Config)
        except UnknownPluginError:  # its plug-in is gone: only its encrypted values rotate
            return frozenset()

    try:
        box = secrets.SecretBox.from_settings(get_settings())
        with session_scope(_operator_db()) as session:
            count = secrets.rotate(session, box, channel_secrets=channel_secrets)
    except ParleyError as e:
        _fail(e.message)
    console.print(f"{count} secret values now encrypted with the first key of PARLEY_SECRET_KEY")


# --- datasets ----------------------------------------------------------------------------


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A table whose id columns are never shortened (ids are what users copy)."""
    cells = [["" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]
    table = Table()
    for i, column in enumerate(columns):
        widest = max([len(column)] + [len(r[i]) for r in cells])
        is_id = column == "id" or column.endswith("_id")
        table.add_column(column, min_width=widest if is_id else None, no_wrap=is_id)
    for r in cells:
        table.add_row(*r)
    console.print(table)


DATASET_COLUMNS = ["id", "name", "type", "status", "num_examples", "num_labels", "status_message"]


@datasets_app.command("create")
def datasets_create(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    type: Annotated[str, typer.Option(help="text-intent, text-entities, image, ...")] = (
        "text-intent"
    ),
    name: Annotated[str | None, typer.Option()] = None,
    format: Annotated[
        str | None, typer.Option(help="csv, tsv, json, jsonl, rasa-yaml, conll")
    ] = None,
    wait: Annotated[bool, typer.Option(help="wait for a large import to finish")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Upload a dataset file (CSV/TSV text,label; JSON/JSONL; Rasa nlu.yml)."""
    with _client() as client:
        dataset = _api(client.create_dataset, file, type=type, name=name, format=format)
        if wait and dataset["status"] == "processing":
            dataset = _api(client.wait_dataset, dataset["id"])
    if as_json:
        _print_json(dataset)
    else:
        _table([dataset], DATASET_COLUMNS)
    if dataset["status"] == "failed":
        raise typer.Exit(1)


@datasets_app.command("list")
def datasets_list(as_json: JsonOpt = False) -> None:
    with _client() as client:
        rows = _api(client.list_datasets)
    _print_json(rows) if as_json else _table(rows, DATASET_COLUMNS)


@datasets_app.command("get")
def datasets_get(dataset_id: str, as_json: JsonOpt = False) -> None:
    with _client() as client:
        dataset = _api(client.get_dataset, dataset_id)
    if as_json:
        _print_json(dataset)
        return
    _table([dataset], DATASET_COLUMNS)
    _table(
        [{"label": lab["name"], "examples": lab["num_examples"]} for lab in dataset["labels"]],
        ["label", "examples"],
    )


@datasets_app.command("examples")
def datasets_examples(
    dataset_id: str,
    label: Annotated[str | None, typer.Option()] = None,
    offset: int = 0,
    limit: int = 20,
    as_json: JsonOpt = False,
) -> None:
    with _client() as client:
        page = _api(client.list_examples, dataset_id, offset=offset, limit=limit, label=label)
    if as_json:
        _print_json(page)
    else:
        _table(page["examples"], ["id", "text", "label"])
        console.print(f"{len(page['examples'])} of {page['total']}")


@datasets_app.command("add")
def datasets_add(
    dataset_id: str, file: Annotated[Path, typer.Argument(exists=True)], as_json: JsonOpt = False
) -> None:
    """Append the examples of a file to a dataset."""
    with _client() as client:
        result = _api(client.add_examples_file, dataset_id, file)
    if as_json:
        _print_json(result)
    else:
        console.print(f"added {result['added']}, skipped {result['duplicates']} duplicates")


@datasets_app.command("delete")
def datasets_delete(dataset_id: str) -> None:
    with _client() as client:
        _api(client.delete_dataset, dataset_id)
    console.print(f"deleted {dataset_id}")


# --- training and models -----------------------------------------------------------------

MODEL_COLUMNS = ["id", "name", "status", "progress", "backend", "dataset_id", "failure_message"]


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            _fail(f"--param {pair!r}: write KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _watch(client: ParleyClient, model_id: str, quiet: bool) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if quiet:
        return _api(client.wait, model_id)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
    ) as bar:
        task = bar.add_task("queued", total=1.0)

        def show(model: dict[str, Any]) -> None:
            bar.update(task, completed=model["progress"], description=model["status"])

        return _api(client.wait, model_id, on_progress=show)


@app.command()
def train(
    dataset_id: str,
    name: Annotated[str | None, typer.Option()] = None,
    backend: Annotated[str | None, typer.Option(help="default: the dataset type's")] = None,
    param: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, e.g. epochs=40")] = None,
    alias: Annotated[str | None, typer.Option(help="point this alias at it on success")] = None,
    wait: Annotated[bool, typer.Option(help="watch progress until it ends")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Train a model on a dataset (and, by default, watch its progress)."""
    with _client() as client:
        model = _api(
            client.train,
            dataset_id,
            name=name,
            backend=backend,
            params=_parse_params(param or []),
            alias=alias,
        )
        if wait:
            model = _watch(client, model["id"], quiet=as_json)
    _show_model(model, as_json)
    if model["status"] in ("failed", "cancelled"):
        raise typer.Exit(1)


models_app.command("train")(train)


def _show_model(model: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(model)
        return
    _table([model], MODEL_COLUMNS)
    metrics = model.get("metrics")
    if metrics and metrics.get("accuracy") is not None:
        console.print(
            f"held-out accuracy {metrics['accuracy']:.3f}, macro-F1 "
            f"{metrics['macro_f1']:.3f} on {metrics['num_evaluated']} examples"
        )


@models_app.command("list")
def models_list(
    dataset: Annotated[str | None, typer.Option()] = None, as_json: JsonOpt = False
) -> None:
    with _client() as client:
        rows = _api(client.list_models, dataset)
    _print_json(rows) if as_json else _table(rows, MODEL_COLUMNS)


@models_app.command("get")
def models_get(model_id: str, as_json: JsonOpt = False) -> None:
    with _client() as client:
        _show_model(_api(client.get_model, model_id), as_json)


@models_app.command("wait")
def models_wait(model_id: str, as_json: JsonOpt = False) -> None:
    """Watch a model's progress until it ends."""
    with _client() as client:
        model = _watch(client, model_id, quiet=as_json)
    _show_model(model, as_json)
    if model["status"] != "succeeded":
        raise typer.Exit(1)


@models_app.command("metrics")
def models_metrics(model_id: str, as_json: JsonOpt = False) -> None:
    """Held-out metrics: accuracy, macro-F1, and per label precision / recall / F1."""
    with _client() as client:
        model = _api(client.get_model, model_id)
    metrics = model.get("metrics")
    if as_json:
        _print_json(metrics)
        return
    if not metrics:
        _fail(f"model {model_id} has no metrics (status {model['status']})")
    if metrics.get("accuracy") is None:  # no held-out split: only a threshold set by hand
        console.print("accuracy n/a (no held-out split)")
    else:
        console.print(f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}")
    oos = metrics.get("out_of_scope")
    if oos:
        recall, in_scope = oos.get("out_of_scope_recall"), oos.get("in_scope_accuracy")
        console.print(
            f"out of scope below {oos['threshold'] or 0:.3f} ({oos['method']}): in-scope "
            f"accuracy {'n/a' if in_scope is None else format(in_scope, '.4f')}, out-of-scope "
            "recall " + ("n/a (no out_of_scope examples)" if recall is None else f"{recall:.4f}")
        )
    _table(
        [{"label": k, **v} for k, v in metrics.get("per_label", {}).items()],
        ["label", "precision", "recall", "f1", "support"],
    )


@models_app.command("threshold")
def models_threshold(
    model_id: str,
    value: Annotated[str, typer.Argument(help="0 to 1, or 'calibrated' to restore it")],
    as_json: JsonOpt = False,
) -> None:
    """Move an intent model's out-of-scope threshold without retraining."""
    threshold = None
    if value != "calibrated":
        try:
            threshold = float(value)
        except ValueError:
            threshold = math.nan
        if not (math.isfinite(threshold) and 0 <= threshold <= 1):  # nan, inf: no JSON number
            _fail(f"threshold {value!r}: give a number from 0 to 1, or 'calibrated'")
    with _client() as client:
        model = _api(client.set_out_of_scope_threshold, model_id, threshold)
    if as_json:
        _print_json(model)
        return
    oos = model["metrics"]["out_of_scope"]
    recall = oos.get("out_of_scope_recall")
    console.print(
        f"{model_id}: out of scope below {oos['threshold']} ({oos['method']}; calibrated "
        f"{oos.get('calibrated_threshold')}): held-out in-scope accuracy "
        f"{oos.get('in_scope_accuracy')}, out-of-scope recall "
        + ("n/a (no out_of_scope examples)" if recall is None else f"{recall}")
    )


@models_app.command("curve")
def models_curve(model_id: str, as_json: JsonOpt = False) -> None:
    """The learning curve: per epoch loss and held-out accuracy."""
    with _client() as client:
        curve = _api(client.learning_curve, model_id)
    _print_json(curve) if as_json else _table(
        curve["points"], ["epoch", "train_loss", "validation_accuracy", "validation_macro_f1"]
    )


@models_app.command("plot")
def models_plot(
    model_id: str,
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="confusion-matrix, learning-curve, out-of-scope, per-label or ap-per-label",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="the file to write: .svg or .png")],
    max_labels: Annotated[
        int | None, typer.Option(help="past this many labels, keep the most telling")
    ] = None,
) -> None:
    """Save a model's chart as SVG or PNG (the format from the file's extension)."""
    from core.errors import InvalidInput
    from core.plots import parse_format

    try:
        fmt = parse_format(output.name)
    except InvalidInput as e:
        _fail(f"{output}: {e.message}")
    with _client() as client:
        data = _api(client.plot, model_id, kind, fmt, max_labels=max_labels)
    output.write_bytes(data)
    console.print(f"wrote {output} ({len(data):,} bytes)")


@models_app.command("export")
def models_export(
    model_id: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="the zip file to write")],
    fmt: Annotated[str, typer.Option("--format", help="the export format: onnx")] = "onnx",
) -> None:
    """Save a trained intent or image model as a zip that runs with ONNX Runtime alone
    (model.onnx, labels.json, preprocessing.json, README.md, model_card.md)."""
    with _client() as client:
        data = _api(client.export_model, model_id, fmt)
    output.write_bytes(data)
    console.print(f"wrote {output} ({len(data):,} bytes)")


@models_app.command("card")
def models_card(
    model_id: str,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="the file to write; default: stdout")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the card as JSON")] = False,
) -> None:
    """A trained model's card: dataset, backend and params, training time and hardware,
    metrics per label, out-of-scope threshold, limitations (Markdown, Hugging Face layout)."""
    with _client() as client:
        text = _api(client.model_card, model_id, as_json=as_json)
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output} ({len(text.encode()):,} bytes)")


@models_app.command("cancel")
def models_cancel(model_id: str, as_json: JsonOpt = False) -> None:
    with _client() as client:
        _show_model(_api(client.cancel, model_id), as_json)


@models_app.command("delete")
def models_delete(model_id: str) -> None:
    with _client() as client:
        _api(client.delete_model, model_id)
    console.print(f"deleted {model_id}")


# --- aliases and predictions -------------------------------------------------------------


@aliases_app.command("set")
def aliases_set(name: str, model_id: str, as_json: JsonOpt = False) -> None:
    with _client() as client:
        alias = _api(client.set_alias, name, model_id)
    _print_json(alias) if as_json else console.print(f"{name} → {model_id}")


@aliases_app.command("list")
def aliases_list(as_json: JsonOpt = False) -> None:
    with _client() as client:
        rows = _api(client.list_aliases)
    _print_json(rows) if as_json else _table(rows, ["name", "model_id", "updated_at"])


@aliases_app.command("delete")
def aliases_delete(name: str) -> None:
    with _client() as client:
        _api(client.delete_alias, name)
    console.print(f"deleted alias {name}")


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="model id or alias (e.g. production)")],
    texts: Annotated[list[str], typer.Argument(help="one or more texts")],
    top: Annotated[int, typer.Option(help="labels per text")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Classify texts with a model."""
    with _client() as client:
        result = _api(
            client.predict, model, texts[0] if len(texts) == 1 else texts, num_results=top
        )
    if as_json:
        _print_json(result)
        return
    per_text = [result["predictions"]] if len(texts) == 1 else result["predictions"]
    flags = result.get("out_of_scope")
    flags = [flags] if len(texts) == 1 else flags or [None] * len(texts)
    for text, preds, oos in zip(texts, per_text, flags, strict=True):
        suffix = "  [yellow](out of scope)[/yellow]" if oos else ""
        console.print(f"[bold]{text}[/bold]{suffix}", highlight=False)
        for p in preds:
            console.print(f"  {p['label']:<24} {p['probability']:.3f}", highlight=False)


# --- bots --------------------------------------------------------------------------------


@app.command("test-bot")
def test_bot(
    bot: Annotated[str, typer.Argument(help="the bot's id")],
    stories: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="a stories YAML file"),
    ],
    files: Annotated[
        Path | None,
        typer.Option(
            "--files",
            exists=True,
            file_okay=False,
            help="folder of the images the stories send (default: the stories file's folder)",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run story tests (user turns and the bot turns expected) against a bot on the server;
    exits 1 when a story fails."""
    import mimetypes

    from rich.markup import escape

    from bot_gateway.conversations.storytest import image_names, load_cases
    from core.errors import InvalidInput

    text = stories.read_text(encoding="utf-8")
    try:
        cases = load_cases(text)  # the server checks again; this fails before any upload
    except InvalidInput as e:
        errors = e.details.get("errors") or []
        lines = [e.message] if len(errors) <= 1 else [f"{len(errors)} problems:", *errors]
        _fail(f"{stories}: " + "\n  ".join(lines))
    folder = files or stories.parent
    missing = [name for name in image_names(cases) if not (folder / name).is_file()]
    if missing:
        _fail(
            f"image(s) not found in {folder}: {', '.join(missing)}; "
            "put them there or name their folder with --files"
        )
    upload: list[tuple[str, tuple[str, bytes, str]]] = [
        ("stories", (stories.name, text.encode("utf-8"), "application/yaml"))
    ]
    for name in image_names(cases):
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        upload.append(("files", (name, (folder / name).read_bytes(), media_type)))
    with _client() as client:
        report = _api(client._call, "POST", f"/bots/{bot}/test", files=upload)
    if as_json:
        _print_json(report)
    else:
        table = Table()
        for column in ("case", "result", "first failure"):
            table.add_column(column)
        for case in report["cases"]:
            result = "[green]passed[/green]" if case["passed"] else "[red]failed[/red]"
            failure = (case.get("failures") or [""])[0]
            table.add_row(escape(case["name"]), result, escape(failure))
        console.print(table)
        console.print(f"{report['passed']} passed, {report['failed']} failed", highlight=False)
    if report["failed"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
