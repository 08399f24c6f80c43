"""Approve-to-executed latency: the approval that completes the quorum, over HTTP.

Starts PostgreSQL (our tables and MLflow's backend), a real `mlflow server` and
registry-service under gunicorn (2 workers x 8 threads), one after the other on the same
databases: remote (MLflow over HTTP), then direct-store (MLflow's store in-process), each
running alone as a deployment would. Each trial opens
a request for Production (default policy: 2 approvals), approves once, then times the
second approval, whose response returns after the move is executed in MLflow and
recorded. The baseline, timed in every trial of the same run, is MLflow's own
transition-stage REST call with archive_existing_versions (what an ungoverned promotion
costs), on fresh and kept-alive connections; the faster of the two is the one compared
against.

    python bench/promotion_latency.py [--trials 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.version_latency import percentile, start_service, stop  # noqa: E402
from tests.rig import MlflowServer, Postgres, create_database, free_port  # noqa: E402


def summary(label: str, samples: list[float]) -> dict:
    figures = {
        "p50": percentile(samples, 50),
        "p95": percentile(samples, 95),
        "p99": percentile(samples, 99),
    }
    print(
        f"{label:<58} p50 {figures['p50']:7.2f}  p95 {figures['p95']:7.2f}  "
        f"p99 {figures['p99']:7.2f} ms  (n={len(samples)})"
    )
    return figures


def token(cli: str, env: dict, name: str, role: str) -> dict:
    secret = subprocess.run(
        [cli, "tokens", "create", "--name", name, "--role", role],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    return {"Authorization": f"Bearer {secret}"}


def migrated_service_env(pg_url: str, mlflow_uri: str, workdir: Path) -> tuple[dict, str]:
    """The service's environment on a fresh, migrated database, and its command."""
    env = {
        **os.environ,
        "REGISTRY_DATA_DIR": str(workdir / "registry"),
        "REGISTRY_DATABASE_URL": create_database(pg_url, "registry"),
        "MLFLOW_TRACKING_URI": mlflow_uri,
    }
    cli = str(Path(sys.executable).parent / "registry-service")
    subprocess.run([cli, "db", "upgrade"], env=env, check=True, capture_output=True)
    return env, cli


def promote(http, api: str, model: str, trials: int, requester: dict, approvers: list, each=None):
    """Open, approve, approve again: the three timings of each trial after 5 warm-ups.
    ``each(i)`` runs at the start of trial ``i`` (a baseline timed in the same window)."""
    first, final, opened = [], [], []
    for i in range(trials + 5):
        if each is not None:
            each(i)
        started = time.perf_counter()
        created = http.post(
            f"{api}/promotions",
            headers=requester,
            json={
                "model_name": model,
                "version": 1 + i % 2,
                "target_stage": "Production",
                "reason": f"trial {i}",
            },
        )
        created.raise_for_status()
        open_ms = (time.perf_counter() - started) * 1000
        request_id = created.json()["id"]
        started = time.perf_counter()
        http.post(
            f"{api}/promotions/{request_id}/approve", headers=approvers[0], json={}
        ).raise_for_status()
        first_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        done = http.post(f"{api}/promotions/{request_id}/approve", headers=approvers[1], json={})
        final_ms = (time.perf_counter() - started) * 1000
        done.raise_for_status()
        if done.json()["status"] != "executed":
            raise SystemExit(f"trial {i} ended {done.json()['status']}: {done.json()}")
        if i >= 5:
            opened.append(open_ms)
            first.append(first_ms)
            final.append(final_ms)
    return opened, first, final


def mlflow_transition(uri: str, http, baseline: dict[str, list[float]]):
    """MLflow's own transition-stage call, archiving the previous holder, timed on a fresh
    and on a kept-alive connection (where it can stall on delayed ACKs, which would
    flatter us; the faster series is the one compared against); after 5 warm-ups."""
    transition = f"{uri}/api/2.0/mlflow/model-versions/transition-stage"

    def call(i: int) -> None:
        for label, client in (("fresh connection", requests), ("kept alive", http)):
            started = time.perf_counter()
            client.post(
                transition,
                json={
                    "name": "bench-plain",
                    "version": str(1 + i % 2),
                    "stage": "Production",
                    "archive_existing_versions": True,
                },
            ).raise_for_status()
            if i >= 5:
                baseline.setdefault(label, []).append((time.perf_counter() - started) * 1000)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    workdir = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    pg = Postgres.start()
    server = None
    services = []
    try:
        mlflow_db = create_database(pg.url, "mlflow")
        server = MlflowServer.start(mlflow_db)
        client = MlflowClient(server.uri)
        run = client.create_run(client.create_experiment("bench"))
        client.log_metric(run.info.run_id, "auc", 0.9)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "model").mkdir()
            (Path(tmp) / "model" / "MLmodel").write_text("flavors: {}\n")
            client.log_artifacts(run.info.run_id, str(Path(tmp) / "model"), "model")
        client.set_terminated(run.info.run_id)

        env, cli = migrated_service_env(pg.url, server.uri, workdir)
        requester = token(cli, env, "ci-bot", "requester")
        approvers = [token(cli, env, f"approver-{i}", "approver") for i in (1, 2)]

        direct_env = {
            **env,
            "MLFLOW_TRACKING_URI": mlflow_db,
            "REGISTRY_MLFLOW_SERVER_URL": server.uri,
            "REGISTRY_DATA_DIR": str(workdir / "direct"),
        }
        modes = {"remote (HTTP)": env, "direct-store": direct_env}
        models = {label: f"bench-governed-{i}" for i, label in enumerate(modes)}
        http = requests.Session()
        timings, baselines = {}, {}
        # One deployment at a time, as a registry runs: an idle second service's
        # background jobs would only add noise on 2 cores. MLflow's call is timed in
        # each trial, so both see the same background (checkpoints, autovacuum).
        for label, mode_env in modes.items():
            port = free_port()
            services.append(start_service(mode_env, port))
            api = f"http://127.0.0.1:{port}/api/v1"
            if not timings:
                for model in (*models.values(), "bench-plain"):
                    http.post(
                        f"{api}/models", headers=requester, json={"name": model}
                    ).raise_for_status()
                    for _ in range(2):
                        http.post(
                            f"{api}/models/{model}/versions",
                            headers=requester,
                            json={"run_id": run.info.run_id},
                        ).raise_for_status()
            baselines[label] = {}
            timings[label] = promote(
                http,
                api,
                models[label],
                args.trials,
                requester,
                approvers,
                each=mlflow_transition(server.uri, http, baselines[label]),
            )
            stop(services.pop())

        print(f"{args.trials} trials after 5 warm-up; PostgreSQL for both; 2 cores")
        ratios = []
        for label, (opened, first, final) in timings.items():
            print(f"-- {label}")
            figures = {
                series: summary(f"MLflow transition-stage REST, {series}", samples)
                for series, samples in baselines[label].items()
            }
            best = min(figures, key=lambda series: figures[series]["p95"])
            base = figures[best]
            summary("ours POST /promotions (policy, evidence snapshot)", opened)
            summary("ours approve, quorum not yet reached", first)
            ours = summary("ours approve that completes quorum -> executed", final)
            ratios.append((label, best, ours["p50"] / base["p50"], ours["p95"] / base["p95"]))
        print()
        for label, best, p50, p95 in ratios:
            print(
                f"{label:<14} approve-to-executed / MLflow transition ({best}): "
                f"p50 {p50:.2f}  p95 {p95:.2f}"
            )
    finally:
        for service in services:
            stop(service)
        if server is not None:
            server.stop()
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
