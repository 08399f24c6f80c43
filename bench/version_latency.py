"""GET one model version: our endpoint against MLflow's own REST call, in one run.

Starts a real `mlflow server` (its default uvicorn workers), registers a version from
a run with params and metrics, then serves registry-service under gunicorn twice:
with the quick-ack MLflow transport and without it, to show what the gateway paid
for MLflow's kept-alive connections. Every server listens on 127.0.0.1 only.

    python bench/version_latency.py [--requests 300] [--seconds 5] [--threads 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.rig import MlflowServer, free_port  # noqa: E402


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def sequential(
    url: str, headers: dict, n: int, keep_alive: bool, body: dict | None = None
) -> list[float]:
    """Latencies of ``n`` calls after a warm-up: GET, or POST of ``body``."""
    session = requests.Session() if keep_alive else None

    def call():
        client = session or requests
        if body is None:
            return client.get(url, headers=headers, timeout=10)
        return client.post(url, headers=headers, json=body, timeout=10)

    for _ in range(10):  # warm-up: caches, pools, JIT-free but still first-touch costs
        call().raise_for_status()
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        response = call()
        latencies.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return latencies


def timed(call, n: int) -> list[float]:
    for _ in range(10):
        call()
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def throughput(
    url: str, headers: dict, seconds: float, threads: int, body: dict | None = None
) -> float:
    """Requests/s from ``threads`` kept-alive clients, for a bounded time (GET, or POST
    of ``body``)."""
    deadline = time.monotonic() + seconds
    counts = [0] * threads

    def worker(i: int) -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                if body is None:
                    session.get(url, headers=headers, timeout=10).raise_for_status()
                else:
                    session.post(url, headers=headers, json=body, timeout=10).raise_for_status()
                counts[i] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts) / (time.monotonic() - started)


def start_service(env: dict, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "registry-service"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--threads",
            "8",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return process
        except requests.RequestException:
            time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError("registry-service did not start")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        # gunicorn waits for kept-alive clients; the figures are already printed.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def row(label: str, samples: list[float], rps: float | None = None) -> dict:
    figures = {
        "label": label,
        "p50": statistics.median(samples),
        "p95": percentile(samples, 95),
        "p99": percentile(samples, 99),
        "rps": rps,
    }
    rps_text = f"{rps:8.1f}" if rps is not None else "       -"
    print(
        f"{label:<52} p50 {figures['p50']:6.2f} ms  p95 {figures['p95']:6.2f} ms  "
        f"p99 {figures['p99']:6.2f} ms  req/s {rps_text}"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--mlflow-workers",
        type=int,
        default=None,
        help="mlflow server --workers (default: its own default)",
    )
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    workdir = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    server = MlflowServer.start(f"sqlite:///{workdir / 'mlflow.db'}", workers=args.mlflow_workers)
    services = []
    try:
        client = MlflowClient(server.uri)
        exp = client.create_experiment("bench")
        run = client.create_run(exp, tags={"mlflow.source.git.commit": "0" * 40})
        for i in range(20):
            client.log_param(run.info.run_id, f"param_{i}", str(i))
            client.log_metric(run.info.run_id, f"metric_{i}", i / 10)
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = Path(tmp) / "model"
            model_dir.mkdir()
            (model_dir / "MLmodel").write_text("flavors: {}\n")
            client.log_artifacts(run.info.run_id, str(model_dir), "model")
        client.set_terminated(run.info.run_id)

        env = {
            **os.environ,
            "REGISTRY_DATA_DIR": str(workdir / "registry"),
            "MLFLOW_TRACKING_URI": server.uri,
        }
        cli = str(Path(sys.executable).parent / "registry-service")
        subprocess.run([cli, "db", "upgrade"], env=env, check=True, capture_output=True)
        token = subprocess.run(
            [cli, "tokens", "create", "--name", "bench", "--role", "requester"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
        headers = {"Authorization": f"Bearer {token}"}

        port = free_port()
        services.append(start_service(env, port))
        ours = f"http://127.0.0.1:{port}/api/v1/models"
        requests.post(ours, headers=headers, json={"name": "bench-model"}).raise_for_status()
        requests.post(
            f"{ours}/bench-model/versions", headers=headers, json={"run_id": run.info.run_id}
        ).raise_for_status()
        our_url = f"{ours}/bench-model/versions/1"
        mlflow_url = f"{server.uri}/api/2.0/mlflow/model-versions/get?name=bench-model&version=1"
        run_url = f"{server.uri}/api/2.0/mlflow/runs/get?run_id={run.info.run_id}"

        n, secs, threads = args.requests, args.seconds, args.threads
        print(
            f"{n} sequential requests per row after warm-up; req/s from {threads} kept-alive "
            f"clients for {secs:.0f} s; 2 cores"
        )
        base_ka = row(
            "MLflow model-versions/get, kept-alive client",
            sequential(mlflow_url, {}, n, True),
            throughput(mlflow_url, {}, secs, threads),
        )
        base_fresh = row(
            "MLflow model-versions/get, new connection each", sequential(mlflow_url, {}, n, False)
        )
        row("MLflow runs/get, new connection each", sequential(run_url, {}, n, False))
        client_row = row(
            "MlflowClient.get_model_version (MLflow's client)",
            timed(lambda: client.get_model_version("bench-model", "1"), n),
        )
        ours_row = row(
            "ours GET version (+run, lineage), quick-ack on",
            sequential(our_url, headers, n, True),
            throughput(our_url, headers, secs, threads),
        )
        stop(services.pop())

        port = free_port()
        services.append(start_service({**env, "REGISTRY_MLFLOW_QUICKACK": "0"}, port))
        slow_url = f"http://127.0.0.1:{port}/api/v1/models/bench-model/versions/1"
        slow = row(
            "ours GET version, quick-ack off (what it paid)",
            sequential(slow_url, headers, n, True),
            throughput(slow_url, headers, secs, threads),
        )

        print()
        print(f"ratio p95 ours / MLflow kept-alive:     {ours_row['p95'] / base_ka['p95']:.2f}")
        print(f"ratio p95 ours / MLflow new connection: {ours_row['p95'] / base_fresh['p95']:.2f}")
        print(f"ratio p95 ours / MlflowClient call:     {ours_row['p95'] / client_row['p95']:.2f}")
        print(f"ratio req/s ours / MLflow:              {ours_row['rps'] / base_ka['rps']:.2f}")
        print(f"quick-ack saves p95:                    {slow['p95'] - ours_row['p95']:.1f} ms")
    finally:
        for process in services:
            stop(process)
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
