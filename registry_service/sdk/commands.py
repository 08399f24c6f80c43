"""Client commands of ``registry-service``: talk to a running service over REST.

Exit codes a CI job can branch on:
  0  done (for ``--wait``: executed)
  1  the service refused (the problem's detail goes to stderr)
  3  the service could not be reached
  4  the request ended without executing (rejected, cancelled, expired, failed,
     superseded),
     ``evaluate`` found the challenger short of a criterion, ``audit verify``
     found a broken chain, or ``versions verify`` files that differ from their
     signed manifest
  5  ``--wait`` timed out with the request still open
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click
import requests

from registry_service.sdk.client import ApiProblem, RegistryClient, Unreachable

EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_NOT_EXECUTED, EXIT_TIMEOUT = 1, 3, 4, 5


URL_OPTION = click.option(
    "--url",
    envvar="REGISTRY_URL",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="Service base URL (or REGISTRY_URL).",
)


def token_option(help: str = "Bearer token (or REGISTRY_TOKEN).") -> Callable:
    return click.option("--token", envvar="REGISTRY_TOKEN", help=help)


def client_command(group: click.Group | None, name: str) -> Callable:
    """A command (of ``group``, or top-level) with --url, --token and --json, errors
    mapped to exit codes."""

    def decorator(func: Callable) -> click.Command:
        @(group.command(name) if group is not None else click.command(name))
        @URL_OPTION
        @token_option()
        @click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
        @functools.wraps(func)
        def wrapper(url: str, token: str | None, as_json: bool, **kwargs: Any) -> None:
            # The client's retries and waits report on stderr, never in --json output.
            logging.basicConfig(format="registry-service: %(message)s", level=logging.WARNING)
            client = RegistryClient(url, token)
            try:
                code = func(client, as_json, **kwargs)
            except ApiProblem as problem:
                if as_json:
                    click.echo(json.dumps(problem.body), err=True)
                else:
                    click.echo(f"error: {problem}", err=True)
                    for err in problem.body.get("errors") or []:
                        click.echo(f"  {err.get('field')}: {err.get('message')}", err=True)
                sys.exit(EXIT_REFUSED)
            except Unreachable as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(EXIT_UNREACHABLE)
            sys.exit(code or 0)

        return wrapper

    return decorator


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        render(data)


def table(rows: list[list[Any]], headers: list[str]) -> None:
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def show_promotion(p: dict) -> None:
    if p.get("kind") == "deployment":
        change = (p.get("evidence") or {}).get("deployment") or {}
        click.echo(
            f"request {p['id']} (deployment): {p['model_name']} traffic "
            f"({change.get('routing_change', 'change')} of revision {p['version']})"
        )
    else:
        target = (
            f"stage {p['target_stage']}" if p.get("target_stage") else f"alias {p['target_alias']}"
        )
        click.echo(
            f"request {p['id']} ({p.get('kind', 'promotion')}): {p['model_name']} "
            f"v{p['version']} -> {target}"
        )
    click.echo(f"  status     {p['status']}")
    click.echo(
        f"  approvals  {p['received_approvals']}/{p['required_approvals']}"
        + "".join(f"  {a['approver']}" for a in p.get("approvals", []))
    )
    click.echo(f"  requester  {p['requester']}: {p['reason']}")
    click.echo(f"  replaces   {p.get('replaces_version') or '-'}")
    if p.get("last_error"):
        click.echo(f"  error      {p['last_error']}")
    if p.get("superseded_by"):
        why = next((c["body"] for c in p["comments"] if c["kind"] == "superseded"), "")
        click.echo(f"  superseded by request {p['superseded_by']}: {why}")
    if p.get("review_required"):
        click.echo("  flagged    break-glass rollback: review required")
    if p.get("comparison"):
        show_comparison(p["comparison"])


def _number(value: float | None, percent: bool = False, sign: bool = False) -> str | None:
    if value is None:
        return None
    if percent:
        return f"{value * 100:+.2f}%"
    return f"{value:+.6g}" if sign else f"{value:.6g}"


def show_comparison(c: dict) -> None:
    champion = c.get("champion")
    label = f"v{champion['version']}" if champion else "none"
    click.echo(f"\ncandidate v{c['candidate']['version']} against champion {label}")
    verdicts = {"candidate": "candidate", "champion": "champion", "equal": "equal"}
    table(
        [
            [
                m["key"] + (" *" if m["key"] == c.get("primary_metric") else ""),
                _number(m["champion"]),
                _number(m["candidate"]),
                _number(m["delta"], sign=True),
                _number(m["relative_delta"], percent=True),
                verdicts.get(m["better"]),
            ]
            for m in c["metrics"]
        ],
        ["metric", "champion", "candidate", "delta", "relative", "better"],
    )
    for side in ("candidate", "champion"):
        for line in evidence_warnings(side, c.get(side)):
            click.echo(line)
    if champion and c["params_differing"]:
        click.echo(f"\nparams that differ ({c['params_same']} equal)")
        table(
            [[d["key"], d["champion"], d["candidate"]] for d in c["params_differing"]],
            ["param", "champion", "candidate"],
        )
    click.echo("\nlineage")
    keys = ("run_id", "git_commit", "data_version", "experiment_name", "registered_by")
    table(
        [
            [k, (champion or {}).get("lineage", {}).get(k), c["candidate"]["lineage"].get(k)]
            for k in keys
        ],
        ["", "champion", "candidate"],
    )


def evidence_warnings(side: str, review: dict | None) -> list[str]:
    """Where a side's metrics are not the ones frozen at registration, or its run has
    changed since."""
    if not review:
        return []
    version = f"{side} v{review['version']}"
    if review.get("metrics_state") == "unfrozen":
        return [f"{version}: registered outside the registry; its run's metrics now (unfrozen)"]
    return [
        f"{version}: {m['key']} changed since registration: "
        f"{_number(m['registered']) or 'absent'} registered, "
        f"{_number(m['current']) or 'absent'} now (the registered value is compared)"
        for m in review.get("changed_since_registration") or []
    ]


def promotion_exit(p: dict) -> int:
    if p["status"] == "executed":
        return 0
    if p["status"] in ("rejected", "cancelled", "expired", "failed", "superseded"):
        return EXIT_NOT_EXECUTED
    return 0


def target_options(func: Callable) -> Callable:
    func = click.option("--alias", help="Target alias, e.g. champion.")(func)
    return click.option("--stage", help="Target stage: Staging, Production, Archived.")(func)


def _one_target(stage: str | None, alias: str | None) -> None:
    if bool(stage) == bool(alias):
        raise click.UsageError("give exactly one of --stage or --alias")


# -- models and versions
models = click.Group("models", help="Registered models.")
versions = click.Group("versions", help="Model versions.")
promote = click.Group("promote", help="Promotion requests: request, approve, reject, status.")
audit = click.Group("audit", help="The audit log.")
experiments = click.Group("experiments", help="Tracking experiments.")
runs = click.Group("runs", help="Tracked runs: the best one, and runs side by side.")


@client_command(models, "list")
@click.option("--prefix", help="Only names starting so.")
def models_list(client: RegistryClient, as_json: bool, prefix: str | None) -> int:
    """List registered models."""
    emit(
        client.models(prefix),
        as_json,
        lambda ms: table(
            [
                [
                    m["name"],
                    m["latest_versions"].get("Production"),
                    m["latest_versions"].get("Staging"),
                    ",".join(f"{a}={v}" for a, v in sorted(m["aliases"].items())),
                ]
                for m in ms
            ],
            ["name", "production", "staging", "aliases"],
        ),
    )
    return 0


@client_command(models, "show")
@click.argument("name")
def models_show(client: RegistryClient, as_json: bool, name: str) -> int:
    """Show one model."""

    def render(m: dict) -> None:
        click.echo(f"{m['name']}: {m['description'] or '(no description)'}")
        for stage, version in sorted(m["latest_versions"].items()):
            click.echo(f"  {stage:<11} v{version}")
        for alias, version in sorted(m["aliases"].items()):
            click.echo(f"  @{alias:<10} v{version}")

    emit(client.model(name), as_json, render)
    return 0


@client_command(versions, "list")
@click.argument("name")
@click.option("--stage", help="Only versions in this stage.")
def versions_list(client: RegistryClient, as_json: bool, name: str, stage: str | None) -> int:
    """List a model's versions, newest first."""
    emit(
        client.versions(name, stage),
        as_json,
        lambda vs: table(
            [[v["version"], v["stage"], v["status"], v["run_id"], v["created_at"]] for v in vs],
            ["version", "stage", "status", "run", "created"],
        ),
    )
    return 0


@client_command(versions, "register")
@click.argument("name")
@click.argument("run_id")
@click.option(
    "--artifact-path", default="model", show_default=True, help="Logged model name in the run."
)
@click.option("--description")
@click.option("--create-model", is_flag=True, help="Create the registered model if missing.")
def versions_register(
    client: RegistryClient,
    as_json: bool,
    name: str,
    run_id: str,
    artifact_path: str,
    description: str | None,
    create_model: bool,
) -> int:
    """Register the model a run logged as a new version, with its lineage."""
    if create_model:
        client.ensure_model(name)
    v = client.register_version(name, run_id, artifact_path, description)

    def render(v: dict) -> None:
        lineage = v.get("lineage") or {}
        click.echo(f"{v['name']} v{v['version']} from run {v['run_id']}")
        click.echo(f"  commit     {lineage.get('git_commit') or '-'}")
        for key, value in sorted((lineage.get("metrics") or {}).items()):
            click.echo(f"  {key:<10} {value}")

    emit(v, as_json, render)
    return 0


# -- experiments and runs
@client_command(experiments, "list")
@click.option("--prefix", help="Only names starting so.")
def experiments_list(client: RegistryClient, as_json: bool, prefix: str | None) -> int:
    """List experiments."""
    emit(
        client.experiments(prefix),
        as_json,
        lambda es: table(
            [[e["experiment_id"], e["name"], e["created_at"]] for e in es],
            ["id", "name", "created"],
        ),
    )
    return 0


@client_command(runs, "best")
@click.argument("experiment")
@click.option("--metric", required=True)
@click.option("--lower-is-better", is_flag=True, help="Smallest value wins (loss, latency).")
@click.option("--filter", "filter_string", help="MLflow search syntax, e.g. \"tags.team = 'x'\".")
def runs_best(
    client: RegistryClient,
    as_json: bool,
    experiment: str,
    metric: str,
    lower_is_better: bool,
    filter_string: str | None,
) -> int:
    """The finished run of EXPERIMENT (name or id) with the best metric."""
    run = client.best_run(
        client.experiment_id(experiment), metric, not lower_is_better, filter_string
    )
    emit(
        run,
        as_json,
        lambda r: table(
            [[r["run_id"], r["run_name"], r["status"], r["metrics"].get(metric)]],
            ["run", "name", "status", metric],
        ),
    )
    return 0


@client_command(runs, "compare")
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--metric", "metrics", multiple=True, help="Only this metric (repeatable).")
def runs_compare(client: RegistryClient, as_json: bool, run_ids, metrics) -> int:
    """Metrics and params of 2-10 runs side by side."""
    comparison = client.compare_runs(list(run_ids), list(metrics))

    def render(c: dict) -> None:
        ids = [r["run_id"] for r in c["runs"]]
        rows = [
            [kind, row["key"], *(row["values"].get(i) for i in ids)]
            for kind in ("metrics", "params")
            for row in c[kind]
        ]
        table(rows, ["kind", "key", *(i[:8] for i in ids)])

    emit(comparison, as_json, render)
    return 0


# -- promotions
@client_command(promote, "request")
@click.argument("name")
@click.argument("version", type=int)
@target_options
@click.option("--reason", required=True, help="Why; approvers see it.")
@click.option("--no-archive", is_flag=True, help="Keep the stage's current versions.")
@click.option("--wait", is_flag=True, help="Wait until the request ends.")
@click.option("--timeout", type=float, default=3600, show_default=True, help="Seconds to wait.")
@click.option("--idempotency-key", help="Reuse to make a retried step open no second request.")
def promote_request(
    client: RegistryClient,
    as_json: bool,
    name: str,
    version: int,
    stage: str | None,
    alias: str | None,
    reason: str,
    no_archive: bool,
    wait: bool,
    timeout: float,
    idempotency_key: str | None,
) -> int:
    """Request the promotion of a version to a stage or alias."""
    _one_target(stage, alias)
    p = client.request_promotion(
        name, version, reason, stage, alias, not no_archive, idempotency_key
    )
    if wait:
        p = client.wait(p["id"], timeout, last=p)
    emit(p, as_json, show_promotion)
    if wait and p["status"] in ("pending", "approved"):
        return EXIT_TIMEOUT
    return promotion_exit(p)


@client_command(promote, "approve")
@click.argument("request_id", type=int)
@click.option("--comment")
def promote_approve(client: RegistryClient, as_json: bool, request_id: int, comment) -> int:
    """Approve a request (the approval completing the quorum executes it)."""
    p = client.review(request_id, "approve", comment)
    emit(p, as_json, show_promotion)
    return promotion_exit(p)


@client_command(promote, "reject")
@click.argument("request_id", type=int)
@click.option("--comment", required=True, help="Why it is rejected.")
def promote_reject(client: RegistryClient, as_json: bool, request_id: int, comment) -> int:
    """Reject a request; it ends."""
    emit(client.review(request_id, "reject", comment), as_json, show_promotion)
    return 0


@client_command(promote, "status")
@click.argument("request_id", type=int)
def promote_status(client: RegistryClient, as_json: bool, request_id: int) -> int:
    """Show a request; exit 4 if it ended without executing."""
    p = client.promotion(request_id)
    emit(p, as_json, show_promotion)
    return promotion_exit(p)


@client_command(None, "rollback")
@click.argument("name")
@target_options
@click.option("--reason", required=True)
def rollback(client: RegistryClient, as_json: bool, name: str, stage, alias, reason) -> int:
    """Request the target back to the version that held it before."""
    _one_target(stage, alias)
    p = client.rollback(name, reason, stage, alias)
    emit(p, as_json, show_promotion)
    return promotion_exit(p)


@client_command(None, "evaluate")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--dry-run", is_flag=True, help="Decide only; open no request.")
def evaluate(client: RegistryClient, as_json: bool, name: str, version: int, dry_run) -> int:
    """Compare a challenger with the champion by the model's auto-promotion criteria."""
    decision = client.evaluate(name, version, dry_run)

    def render(d: dict) -> None:
        champion = f"v{d['champion_version']}" if d["champion_version"] else "no champion"
        verdict = "PASSED" if d["passed"] else "NOT PASSED"
        click.echo(f"v{d['challenger_version']} vs {champion} on {d['metric']}: {verdict}")
        for c in d["criteria"]:
            click.echo(f"  [{'x' if c['passed'] else ' '}] {c['name']:<15} {c['detail']}")
        if d.get("request"):
            show_promotion(d["request"])

    emit(decision, as_json, render)
    return 0 if decision["passed"] else EXIT_NOT_EXECUTED


# -- monitoring
def _ms(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f}"


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{value * 100:.2f}%"


@client_command(None, "monitor")
@click.argument("name")
@click.option("--version", type=int, help="Only this version.")
@click.option("--since", default="1h", show_default=True, help="A span ago (15m, 1h, 7d) or ISO.")
@click.option("--until", default="now", show_default=True)
def monitor(client: RegistryClient, as_json: bool, name: str, version, since, until) -> int:
    """Live figures per version and variant: traffic, latency, errors, accuracy."""
    report = client.monitoring(name, version, since, until)

    def render(r: dict) -> None:
        click.echo(f"{r['model_name']}  {r['since']} .. {r['until']}")
        if not r["groups"]:
            click.echo("no predictions in this window")
            return
        rows = []
        for g in r["groups"]:
            fb = g["feedback"]
            quality = (
                f"acc {_pct(fb.get('accuracy'))}"
                if fb.get("accuracy") is not None
                else f"mae {fb['mae']:.4g}"
                if fb.get("mae") is not None
                else None
            )
            rows.append(
                [
                    g["version"],
                    g["variant"],
                    g["requests"],
                    g["throughput_per_minute"],
                    _ms(g["latency_ms"].get("p50")),
                    _ms(g["latency_ms"].get("p95")),
                    _ms(g["latency_ms"].get("p99")),
                    _pct(g["error_rate"]),
                    _pct(g["fallback_rate"]),
                    quality,
                    fb["requests"],
                ]
            )
        table(
            rows,
            [
                "version",
                "variant",
                "requests",
                "per min",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "errors",
                "fallback",
                "quality",
                "feedback",
            ],
        )

    emit(report, as_json, render)
    return 0


@click.group("ab-test")
def ab_test() -> None:
    """A/B tests of a model."""


@client_command(ab_test, "status")
@click.argument("name")
@click.argument("test_id", type=int)
def ab_test_status(client: RegistryClient, as_json: bool, name: str, test_id: int) -> int:
    """A test's sides, metric with 95% interval, p-value and decision."""
    test = client.ab_test(name, test_id)

    def render(t: dict) -> None:
        r = t.get("result") or {}
        click.echo(
            f"A/B test {t['id']} on {t['model_name']} ({t['status']}): {t['metric']}, "
            f"challenger share {t['challenger_share']}%, alpha {t['alpha']}, "
            f"min samples {t['min_samples']}"
        )
        rows = []
        for side in ("champion", "challenger"):
            s = r.get(side) or t[side]
            metric = s.get("metric") or {}
            ci = metric.get("ci95")
            rows.append(
                [
                    side,
                    s.get("target"),
                    s.get("version"),
                    s.get("samples"),
                    None if metric.get("value") is None else f"{metric['value']:.4g}",
                    None if not ci else f"[{ci[0]:.4g}, {ci[1]:.4g}]",
                    _ms((s.get("latency_ms") or {}).get("p95")),
                    _pct(s.get("error_rate")),
                ]
            )
        table(
            rows, ["side", "target", "version", "samples", "metric", "95% ci", "p95 ms", "errors"]
        )
        if r:
            click.echo(f"{r.get('test')}: p = {r.get('p_value')}  ->  {r.get('decision')}")
        if t.get("promotion_request_id"):
            click.echo(f"promotion request {t['promotion_request_id']} opened")

    emit(test, as_json, render)
    return 0


# -- audit
@client_command(audit, "tail")
@click.option("--model", help="Only this model's events.")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
def audit_tail(client: RegistryClient, as_json: bool, model: str | None, limit: int) -> int:
    """The newest audit events."""
    emit(
        client.audit(model, limit),
        as_json,
        lambda events: table(
            [
                [
                    e["seq"],
                    e["occurred_at"],
                    e["actor"],
                    e["action"],
                    e["model_name"],
                    e["model_version"],
                ]
                for e in events
            ],
            ["seq", "at", "actor", "action", "model", "version"],
        ),
    )
    return 0


@client_command(audit, "verify")
def audit_verify(client: RegistryClient, as_json: bool) -> int:
    """Recompute the hash chain; exit 4 if it is broken."""
    result = client.verify()

    def render(r: dict) -> None:
        if r["ok"]:
            click.echo(f"ok: {r['events_checked']} events, head {r['head_seq']} {r['head_hash']}")
        else:
            click.echo(f"BROKEN at event {r['first_broken_seq']}: {r['problem']}")

    emit(result, as_json, render)
    return 0 if result["ok"] else EXIT_NOT_EXECUTED


@click.command("mcp")
@URL_OPTION
@token_option(
    "Bearer token the tools act with (or REGISTRY_TOKEN); give assistants an agent token."
)
@click.option("--http", "over_http", is_flag=True, help="Streamable HTTP instead of stdio.")
@click.option("--host", default="127.0.0.1", show_default=True, help="With --http.")
@click.option("--port", default=8765, show_default=True, type=int, help="With --http.")
def mcp(url: str, token: str | None, over_http: bool, host: str, port: int) -> None:
    """Serve the registry as MCP tools for AI assistants (stdio, or --http), each a REST
    call with this token: the same roles, policies and audit as everyone else."""
    from registry_service.sdk.mcp_tools import RegistryTools, is_loopback, serve_http, serve_stdio

    if over_http and not is_loopback(host):
        # Whoever reaches the endpoint acts with this token: it stays on this machine.
        raise click.UsageError("--host must be a loopback address (127.0.0.1, ::1, localhost)")

    # stdout carries the protocol under stdio: every log line goes to stderr.
    logging.basicConfig(stream=sys.stderr, format="registry-service mcp: %(message)s")
    try:
        tools = RegistryTools.connect(url, token)
    except (requests.RequestException, ValueError, KeyError) as exc:
        # KeyError: an operation a tool needs is missing (a service of another version).
        click.echo(f"error: cannot build tools from {url}/api/openapi.json: {exc!r}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    if over_http:
        click.echo(f"MCP over streamable HTTP at http://{host}:{port}/mcp", err=True)
        serve_http(tools, host, port)
    else:
        serve_stdio(tools)


def register(main: click.Group) -> None:
    from registry_service.sdk.verify import versions_verify

    versions.add_command(versions_verify)
    for group in (models, versions, promote, audit, experiments, runs, ab_test):
        main.add_command(group)
    main.add_command(rollback)
    main.add_command(evaluate)
    main.add_command(monitor)
    main.add_command(mcp)
