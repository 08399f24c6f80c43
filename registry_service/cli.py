"""The ``registry-service`` command: database, tokens, the server, and a REST client."""

from __future__ import annotations

import getpass
import json
import os
import sys
from datetime import timedelta

import click

from registry_service.config import Settings
from registry_service.domain.entities import Role, TokenKind
from registry_service.errors import RegistryError
from registry_service.services.context import Context

ROLES = [r.value for r in Role]
# Gunicorn closes idle connections after 2 s by default, so a client polling every 2 s
# sends into a closing socket. Longer than clients' poll intervals and than the 60 s
# idle timeout of common load balancers, so that the balancer closes first.
KEEPALIVE_SECONDS = 75


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.UsageError(f"configuration: {exc}") from exc


def _ctx() -> Context:
    return Context(actor=f"cli:{getpass.getuser()}")


def _token_service():
    from registry_service.db.database import Database
    from registry_service.services.audit import AuditLog
    from registry_service.services.tokens import TokenService

    db = Database(_settings().database_url)
    return TokenService(db, AuditLog(db))


def _fail(error: RegistryError) -> None:
    click.echo(f"error: {error.detail}", err=True)
    sys.exit(1)


@click.group()
def main() -> None:
    """registry-service: a governed model registry in front of MLflow."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations to REGISTRY_DATABASE_URL."""
    from registry_service.db.migrate import upgrade

    settings = _settings()
    if settings.database_url.startswith("sqlite:///"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


@main.group()
def tokens() -> None:
    """API tokens."""


@tokens.command("create")
@click.option("--name", required=True, help="Principal the token acts as.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice(ROLES),
    help="Repeat for several roles.",
)
@click.option(
    "--group",
    "groups",
    multiple=True,
    help="Approver group the principal belongs to (repeatable); replaces its groups.",
)
@click.option(
    "--kind",
    type=click.Choice([k.value for k in TokenKind]),
    default=TokenKind.HUMAN.value,
    show_default=True,
    help="Who holds it: by default only human tokens' approvals count toward a quorum.",
)
@click.option("--expires-in-days", type=click.IntRange(min=1), default=None)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tokens_create(
    name: str,
    roles: tuple[str, ...],
    groups: tuple[str, ...],
    kind: str,
    expires_in_days: int | None,
    as_json: bool,
) -> None:
    """Issue a token; the secret is shown once and stored only as a hash."""
    expires = timedelta(days=expires_in_days) if expires_in_days else None
    try:
        secret, info = _token_service().create(
            _ctx(), name, list(roles), expires, list(groups) if groups else None, kind
        )
    except RegistryError as exc:
        _fail(exc)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "id": info.id,
                    "principal": info.principal,
                    "roles": info.roles,
                    "kind": info.kind,
                    "token": secret,
                }
            )
        )
    else:
        click.echo(f"token {info.id} for {info.principal} ({', '.join(info.roles)}; {info.kind}):")
        click.echo(secret)
        click.echo("store it now: it cannot be shown again", err=True)


@tokens.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
def tokens_list(include_revoked: bool) -> None:
    """List tokens (never their secrets)."""
    rows = _token_service().list(include_revoked)
    click.echo(
        f"{'ID':>4}  {'PRINCIPAL':<24} {'ROLES':<28} {'KIND':<6} {'PREFIX':<10} "
        f"{'CREATED':<20} STATE"
    )
    for t in rows:
        state = (
            "revoked"
            if t.revoked_at
            else (f"expires {t.expires_at:%Y-%m-%d}" if t.expires_at else "active")
        )
        click.echo(
            f"{t.id:>4}  {t.principal:<24} {','.join(t.roles):<28} {t.kind:<6} {t.prefix:<10} "
            f"{t.created_at:%Y-%m-%d %H:%M:%S}  {state}"
        )


@tokens.command("revoke")
@click.argument("token_id", type=int)
def tokens_revoke(token_id: int) -> None:
    """Revoke a token by id; it stops working at once."""
    try:
        info = _token_service().revoke(_ctx(), token_id)
    except RegistryError as exc:
        _fail(exc)
    click.echo(f"token {info.id} of {info.principal} revoked")


@tokens.command("bootstrap")
@click.option("--name", default="admin", show_default=True)
def tokens_bootstrap(name: str) -> None:
    """Issue a first admin token if no admin token exists yet."""
    secret = _token_service().bootstrap_admin(_ctx(), name)
    if secret is None:
        click.echo("an admin token already exists (see `registry-service tokens list`)")
    else:
        click.echo(f"first admin token for {name!r} (shown once, stored only as a hash):")
        click.echo(f"    {secret}")


@main.group()
def promotions() -> None:
    """Housekeeping of promotion requests, run next to the database."""


@promotions.command("sweep")
def promotions_sweep() -> None:
    """Run every housekeeping job once (cron), as the in-service scheduler does on its
    intervals: retention, expiry and stalled executions, unconfirmed MLflow writes, A/B
    tests past their maximum duration, alert rules, drift reports. One line per job;
    exit 1 if any failed."""
    from registry_service.services.container import build_services

    services = build_services(_settings())
    try:
        if not services.scheduler.leadership.try_acquire():
            click.echo("a running service's scheduler leads and runs these jobs: nothing run")
            return
        for job in services.scheduler.jobs:
            services.scheduler.run(job)
        states = services.scheduler.states()
    finally:
        services.close()
    for state in states:
        figures = " ".join(f"{k}={v}" for k, v in (state.last_result or {}).items())
        click.echo(f"{state.name}: {state.last_outcome} {state.last_error or figures}".rstrip())
    if any(state.last_outcome == "failed" for state in states):
        sys.exit(1)


@main.command("serve")
@click.option("--host", default=lambda: os.environ.get("HOST", "127.0.0.1"), show_default="HOST")
@click.option(
    "--port", type=int, default=lambda: int(os.environ.get("PORT", "8080")), show_default="PORT"
)
@click.option("--workers", type=int, default=lambda: int(os.environ.get("WORKERS", "1")))
@click.option("--threads", type=int, default=lambda: int(os.environ.get("THREADS", "8")))
@click.option(
    "--keepalive",
    type=click.IntRange(1, 3600),
    default=lambda: int(os.environ.get("KEEPALIVE", str(KEEPALIVE_SECONDS))),
    show_default="KEEPALIVE, 75",
    help="Seconds an idle kept-alive connection stays open.",
)
@click.option(
    "--serving-only",
    is_flag=True,
    default=lambda: os.environ.get("REGISTRY_SERVING_ONLY", "").lower() in ("1", "true", "yes"),
    help="Serve predictions and deployments only: replicas that scale out inference "
    "behind a load balancer, sharing the database.",
)
def serve(
    host: str, port: int, workers: int, threads: int, keepalive: int, serving_only: bool
) -> None:
    """Serve the API under gunicorn."""
    # Every worker writes its Prometheus samples here, so /metrics adds them all up. Set
    # before anything imports prometheus_client: it picks its storage at import.
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        import tempfile

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="registry-metrics-")
    import atexit
    import gc

    from gunicorn.app.base import BaseApplication

    from registry_service.app import create_app
    from registry_service.services.container import EXTENSION_KEY

    settings = _settings().with_overrides(serving_only=serving_only)
    if settings.embedded_mlflow:
        # Create the embedded MLflow store once, here: workers racing to create its
        # tables on a fresh data directory fail to boot.
        from registry_service.gateway.mlflow_gateway import MlflowGateway

        MlflowGateway(
            settings.mlflow_tracking_uri,
            settings.mlflow_registry_uri,
            artifact_root=settings.artifact_root,
        )
    if settings.direct_mlflow:
        from registry_service.gateway.mlflow_gateway import mlflow_schema_problem

        problem = mlflow_schema_problem(settings.mlflow_tracking_uri)
        if problem:
            raise click.ClickException(f"refusing to start: {problem}")

    class _Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("accesslog", "-")
            self.cfg.set("timeout", 60)
            self.cfg.set("keepalive", keepalive)
            self.cfg.set("child_exit", _child_exit)

        def load(self):
            # Runs in each worker: preloaded deployments load before it takes requests.
            app = create_app(settings)
            services = app.extensions[EXTENSION_KEY]
            services.serving.start()
            atexit.register(services.serving.stop)
            if settings.scheduler and not settings.serving_only:
                # Every worker runs one; the one holding the leadership lock runs jobs.
                services.scheduler.start()
                atexit.register(services.scheduler.stop)
            # Everything loaded so far (mlflow, pandas, the app) lives as long as the
            # worker: keep it out of the collector's full passes, which otherwise walk
            # millions of objects in the middle of a request.
            gc.freeze()
            return app

    shown = "localhost" if host in ("0.0.0.0", "127.0.0.1", "::") else host
    base = f"http://{shown}:{port}"
    click.echo(f"registry-service on {base}")
    click.echo(f"  Swagger UI:  {base}/api/docs")
    if not serving_only:
        click.echo(f"  review page: {base}/review  (approvers)")
    click.echo(f"  predict:     POST {base}/api/v1/models/<name>/predict")
    _Server().run()


def _child_exit(server, worker) -> None:
    from registry_service.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def _register_client_commands() -> None:
    from registry_service.sdk.commands import register

    register(main)


_register_client_commands()
