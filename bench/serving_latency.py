"""Single-row predictions: our serving layer against MLflow's own scoring server, in one run.

The same scikit-learn pipeline (scaler + logistic regression, 8 features) is served by
`mlflow models serve --env-manager local` (2 workers) and by registry-service under
gunicorn (2 workers x 8 threads, bearer auth on, prediction log on, PostgreSQL for our
tables, a real `mlflow server` behind). Then a hot swap under load: a promotion executes
through the approval workflow while 8 clients predict.

    python bench/serving_latency.py [--requests 300] [--seconds 5] [--clients 8]
        [--mlserver /path/to/venv/bin/mlserver]

MLServer is measured when ``--mlserver`` names its binary, installed in a venv of its own
(`pip install mlserver mlserver-mlflow scikit-learn`): it pins packages this project does
not. MLServer 1.7.1's parallel inference pool dies at start with current uvloop ("There is
no current event loop"), so it runs with ``parallel_workers: 0`` (inference in its one
server process).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.version_latency import row, sequential, start_service, stop, throughput  # noqa: E402
from tests.rig import MlflowServer, Postgres, create_database, free_port  # noqa: E402

FEATURES = [f"f{i}" for i in range(8)]
ROW = {name: 0.1 * i for i, name in enumerate(FEATURES)}
BODY = {"dataframe_split": {"columns": FEATURES, "data": [list(ROW.values())]}}
V2_BODY = {
    "inputs": [
        {"name": name, "shape": [1], "datatype": "FP64", "data": [value]}
        for name, value in ROW.items()
    ]
}


def save_pipeline(folder: Path, seed: int) -> None:
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.random((500, len(FEATURES))), columns=FEATURES)
    labels = (frame.f0 + frame.f3 > 1.0 - seed * 0.1).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, labels)
    mlflow.sklearn.save_model(
        model,
        str(folder),
        signature=infer_signature(frame, model.predict(frame)),
        pip_requirements=["scikit-learn"],
    )


def wait_up(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def start_mlserver(binary: str, model_dir: Path, work: Path) -> tuple[subprocess.Popen, str]:
    import json

    root = work / "mlserver"
    (root / "bench").mkdir(parents=True)
    port = free_port()
    settings = {"http_port": port, "grpc_port": free_port(), "metrics_port": free_port()}
    (root / "settings.json").write_text(json.dumps(settings | {"parallel_workers": 0}))
    (root / "bench" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "bench",
                "implementation": "mlserver_mlflow.MLflowRuntime",
                "parameters": {"uri": str(model_dir)},
            }
        )
    )
    process = subprocess.Popen(
        [binary, "start", str(root)],
        env={**os.environ, "PATH": f"{Path(binary).parent}:{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_up(f"http://127.0.0.1:{port}/v2/models/bench/ready", process)
    return process, f"http://127.0.0.1:{port}/v2/models/bench/infer"


def cli(env: dict, *args: str) -> str:
    binary = str(Path(sys.executable).parent / "registry-service")
    done = subprocess.run([binary, *args], env=env, check=True, capture_output=True, text=True)
    return done.stdout


def issue_tokens(env: dict, roles: dict[str, str]) -> dict[str, str]:
    """A token per key, with the role named for it."""
    return {
        key: cli(env, "tokens", "create", "--name", f"bench-{key}", "--role", role).split()[-1]
        for key, role in roles.items()
    }


def promote(base: str, tokens: dict, model: str, version: int) -> float:
    """Request and approve Production; returns when the executing approval answered."""
    created = requests.post(
        f"{base}/api/v1/promotions",
        headers={"Authorization": f"Bearer {tokens['requester']}"},
        json={
            "model_name": model,
            "version": version,
            "target_stage": "Production",
            "reason": "benchmark",
        },
        timeout=30,
    )
    created.raise_for_status()
    for approver in ("approver", "approver2"):
        done = requests.post(
            f"{base}/api/v1/promotions/{created.json()['id']}/approve",
            headers={"Authorization": f"Bearer {tokens[approver]}"},
            json={},
            timeout=30,
        )
        done.raise_for_status()
    assert done.json()["status"] == "executed", done.text
    return time.monotonic()


def hot_swap(base: str, tokens: dict, model: str, clients: int) -> tuple[int, int, float]:
    """(answers, non-2xx, seconds from the executing approval to the first v2 answer)."""
    url = f"{base}/api/v1/models/{model}/predict"
    headers = {"Authorization": f"Bearer {tokens['predictor']}"}
    results: list[tuple[float, int, int | None]] = []
    stop_flag = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop_flag.is_set():
                try:
                    answer = session.post(url, headers=headers, json=BODY, timeout=10)
                    version = answer.json().get("model_version") if answer.ok else None
                    results.append((time.monotonic(), answer.status_code, version))
                except requests.RequestException:
                    results.append((time.monotonic(), 0, None))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(2)
    executed = promote(base, tokens, model, 2)
    time.sleep(4)
    stop_flag.set()
    for t in threads:
        t.join()
    failed = sum(1 for _, status, _ in results if not 200 <= status < 300)
    first_new = min((t for t, _, v in results if v == 2), default=float("nan"))
    return len(results), failed, first_new - executed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--mlserver", help="path to an mlserver binary (its own venv)")
    args = parser.parse_args()

    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    work = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    pg = Postgres.start()
    processes: list[subprocess.Popen] = []
    mlflow_server = None
    try:
        for version in (1, 2):
            save_pipeline(work / f"model-{version}", seed=version)
        started = time.perf_counter()
        mlflow.pyfunc.load_model(str(work / "model-1"))
        pyfunc_load_ms = (time.perf_counter() - started) * 1000

        # MLflow's own scoring server.
        port = free_port()
        scoring = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "models",
                "serve",
                "-m",
                str(work / "model-1"),
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                "2",
            ],
            # It execs `uvicorn` by name: the venv's bin must be on PATH.
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        processes.append(scoring)
        wait_up(f"http://127.0.0.1:{port}/ping", scoring)
        scoring_url = f"http://127.0.0.1:{port}/invocations"

        # Ours: the model registered and promoted through the workflow.
        mlflow_server = MlflowServer.start(create_database(pg.url, "mlflow"))
        client = MlflowClient(mlflow_server.uri)
        experiment = client.create_experiment("serving-bench")
        runs = []
        for version in (1, 2):
            run_id = client.create_run(experiment).info.run_id
            client.log_artifacts(run_id, str(work / f"model-{version}"), "model")
            client.set_terminated(run_id)
            runs.append(run_id)
        env = {
            **os.environ,
            "REGISTRY_DATA_DIR": str(work / "registry"),
            "REGISTRY_DATABASE_URL": create_database(pg.url, "registry"),
            "MLFLOW_TRACKING_URI": mlflow_server.uri,
        }
        cli(env, "db", "upgrade")
        roles = {
            "requester": "requester",
            "approver": "approver",
            "approver2": "approver",
            "predictor": "predictor",
        }
        tokens = issue_tokens(env, roles)
        our_port = free_port()
        processes.append(start_service(env, our_port))
        base = f"http://127.0.0.1:{our_port}"
        requester = {"Authorization": f"Bearer {tokens['requester']}"}
        requests.post(
            f"{base}/api/v1/models", headers=requester, json={"name": "bench-pipeline"}
        ).raise_for_status()
        for run_id in runs:
            requests.post(
                f"{base}/api/v1/models/bench-pipeline/versions",
                headers=requester,
                json={"run_id": run_id},
            ).raise_for_status()
        promote(base, tokens, "bench-pipeline", 1)
        ours_url = f"{base}/api/v1/models/bench-pipeline/predict"
        predictor = {"Authorization": f"Bearer {tokens['predictor']}"}
        # The first answer of each worker loads the model: that is the cold load.
        cold_started = time.perf_counter()
        requests.post(ours_url, headers=predictor, json=BODY, timeout=60).raise_for_status()
        first_answer_ms = (time.perf_counter() - cold_started) * 1000
        for _ in range(20):
            requests.post(
                ours_url, headers={**predictor, "Connection": "close"}, json=BODY, timeout=60
            ).raise_for_status()
        loads = []
        for _ in range(20):
            status = requests.get(
                f"{base}/api/v1/serving/models",
                headers={"Authorization": f"Bearer {tokens['requester']}", "Connection": "close"},
                timeout=10,
            ).json()
            loads += [(status["process"], m["load_ms"]) for m in status["models"]]
        load_ms = sorted({ms for _, ms in loads})

        n, secs, clients = args.requests, args.seconds, args.clients
        print(
            f"single-row predict, {n} sequential requests per row after warm-up; req/s from "
            f"{clients} kept-alive clients for {secs:.0f} s; 2 cores"
        )
        mlflow_new = row(
            "mlflow models serve (2 workers), new connection",
            sequential(scoring_url, {}, n, keep_alive=False, body=BODY),
            throughput(scoring_url, {}, secs, clients, body=BODY),
        )
        mlflow_kept = row(
            "mlflow models serve (2 workers), kept-alive",
            sequential(scoring_url, {}, n, keep_alive=True, body=BODY),
        )
        baselines = [mlflow_new["p95"], mlflow_kept["p95"]]
        baseline_rps = [mlflow_new["rps"]]
        if args.mlserver:
            mlserver, mlserver_url = start_mlserver(args.mlserver, work / "model-1", work)
            processes.append(mlserver)
            mlserver_new = row(
                "MLServer 1.7.1 V2 infer, new connection",
                sequential(mlserver_url, {}, n, keep_alive=False, body=V2_BODY),
                throughput(mlserver_url, {}, secs, clients, body=V2_BODY),
            )
            mlserver_kept = row(
                "MLServer 1.7.1 V2 infer, kept-alive",
                sequential(mlserver_url, {}, n, keep_alive=True, body=V2_BODY),
            )
            baselines += [mlserver_new["p95"], mlserver_kept["p95"]]
            baseline_rps.append(mlserver_new["rps"])
            stop(mlserver)
            processes.remove(mlserver)
        else:
            print("MLServer: not measured (pass --mlserver PATH; see the module docstring)")
        ours_new = row(
            "registry-service predict (2x8, auth, log), new connection",
            sequential(ours_url, predictor, n, keep_alive=False, body=BODY),
            throughput(ours_url, predictor, secs, clients, body=BODY),
        )
        ours_kept = row(
            "registry-service predict (2x8, auth, log), kept-alive",
            sequential(ours_url, predictor, n, keep_alive=True, body=BODY),
        )
        v2_url = f"{base}/v2/models/bench-pipeline/infer"
        v2 = row(
            "registry-service V2 infer (2x8, auth, log), new connection",
            sequential(v2_url, predictor, n, keep_alive=False, body=V2_BODY),
        )
        ratio = min(ours_new["p95"], ours_kept["p95"], v2["p95"]) / min(baselines)
        print(f"\nours p95 / the best baseline p95: {ratio:.2f}   (target <= 1.0, aim 0.5)")
        print(
            f"ours req/s / the better baseline's: {ours_new['rps'] / max(baseline_rps):.2f}"
            "   (target >= 2.0)"
        )
        print(
            f"cold load: mlflow.pyfunc.load_model {pyfunc_load_ms:.0f} ms in a warm process; "
            f"ours per worker (download + load) {', '.join(f'{ms:.0f}' for ms in load_ms)} ms; "
            f"first answer after the promotion {first_answer_ms:.0f} ms"
        )
        answers, failed, swap_s = hot_swap(base, tokens, "bench-pipeline", clients)
        print(
            f"hot swap under {clients} clients: {answers} answers, {failed} not 2xx, "
            f"version 2 answering {swap_s:.2f} s after the executing approval returned "
            "(target: 0 failed, < 2 s)"
        )
    finally:
        for process in processes:
            if process.poll() is None:
                stop(process)
        if mlflow_server is not None:
            mlflow_server.stop()
        pg.stop()


if __name__ == "__main__":
    main()
