"""The examples, run as scripts against the service on `make run`'s embedded default.

The service is `registry-service serve` in its own process with SQLite for our tables
and MLflow's local SQLite store, exactly as `make run` starts it; the examples log to
that same store through the tracker and talk to the service over HTTP.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from registry_service.db.database import Database
from registry_service.db.migrate import upgrade
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context
from registry_service.services.tokens import TokenService
from tests.rig import ServiceProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent
MODEL = "breast-cancer"


def _environment(data_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REGISTRY_", "MLFLOW_")) and k not in ("PORT", "HOST")
    }
    env.update(
        REGISTRY_DATA_DIR=str(data_dir),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        MPLBACKEND="Agg",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("embedded")
    env = _environment(data_dir)
    url_db = f"sqlite:///{data_dir / 'registry.db'}"
    upgrade(url_db)
    database = Database(url_db)
    tokens = TokenService(database, AuditLog(database))
    ctx = Context(actor="test-setup")
    issued = {
        role: tokens.create(ctx, name, [role])[0]
        for role, name in (("requester", "trainer"), ("approver", "lead"), ("admin", "ops"))
    }
    database.dispose()

    server = ServiceProcess(env, data_dir / "service.log", ROOT).start()
    try:
        yield {
            "url": server.url,
            "env": env,
            "tokens": issued,
            "data_dir": data_dir,
            "server": server,
        }
    finally:
        server.stop()


def call(service, method, path, role="admin", **kwargs):
    headers = {"Authorization": f"Bearer {service['tokens'][role]}"}
    response = requests.request(
        method, f"{service['url']}/api/v1{path}", headers=headers, timeout=30, **kwargs
    )
    return response


def example_env(service, role="requester", extra_env=None) -> dict[str, str]:
    return {
        **service["env"],
        "REGISTRY_URL": service["url"],
        "REGISTRY_TOKEN": service["tokens"][role],
        **(extra_env or {}),
    }


def run_example(service, *args, role="requester", extra_env=None, timeout=180):
    env = example_env(service, role, extra_env)
    command = [sys.executable, *args] if args[0].endswith(".py") else list(args)
    return subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def head_commit() -> str | None:
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else None


@pytest.fixture(scope="module")
def trained(service):
    done = run_example(service, str(EXAMPLES / "train_and_register.py"), "--model", MODEL)
    assert done.returncode == 0, done.stderr
    return last_json(done.stdout)


def test_train_and_register_records_lineage_and_environment(service, trained):
    version = call(service, "GET", f"/models/{MODEL}/versions/{trained['version']}").json()
    assert version["run_id"] == trained["run_id"]
    assert version["model_id"]  # registered from the logged model, not a folder guess
    assert version["lineage"]["recorded"] is True
    assert version["lineage"]["git_commit"] == head_commit()
    assert version["lineage"]["params"]["model.C"] == "1.0"
    assert 0.9 < version["lineage"]["metrics"]["auc"] <= 1.0

    run = call(service, "GET", f"/runs/{trained['run_id']}").json()
    assert run["status"] == "FINISHED"
    assert run["tags"]["registry.python_version"] == ".".join(str(p) for p in sys.version_info[:3])
    assert "scikit-learn" in json.loads(run["tags"]["registry.packages"])
    # Artifacts went to the embedded store's folder, not ./mlruns of the repository.
    assert str(service["data_dir"]) in run["artifact_uri"]
    assert not (ROOT / "mlruns").exists() and not (ROOT / "mlflow.db").exists()
    assert (Path(run["artifact_uri"].removeprefix("file://")) / "plots" / "roc.png").is_file()


def test_hyperparameter_search_registers_the_best_child(service):
    done = run_example(service, str(EXAMPLES / "hyperparameter_search.py"), "--model", MODEL)
    assert done.returncode == 0, done.stderr
    result = last_json(done.stdout)

    best = call(service, "GET", f"/runs/{result['best_run_id']}").json()
    assert best["parent_run_id"] == result["search_run_id"]
    children = call(
        service,
        "GET",
        f"/experiments/{best['experiment_id']}/runs",
        params={
            "filter": f"tags.mlflow.parentRunId = '{result['search_run_id']}'",
            "order_by": "val_auc",
        },
    ).json()["runs"]
    assert len(children) == 6
    assert children[0]["run_id"] == result["best_run_id"]
    assert all(c["metrics"]["val_auc"] <= best["metrics"]["val_auc"] for c in children)
    # The same pick over REST, among this search's children.
    over_rest = call(
        service,
        "GET",
        f"/experiments/{best['experiment_id']}/best-run",
        params={
            "metric": "val_auc",
            "filter": f"tags.mlflow.parentRunId = '{result['search_run_id']}'",
        },
    )
    assert over_rest.status_code == 200
    assert over_rest.json()["run_id"] == result["best_run_id"]
    search = call(service, "GET", f"/runs/{result['search_run_id']}").json()
    assert search["tags"]["best_run_id"] == result["best_run_id"]
    assert search["metrics"]["best_val_auc"] == best["metrics"]["val_auc"]

    version = call(service, "GET", f"/models/{MODEL}/versions/{result['version']}").json()
    assert version["run_id"] == result["best_run_id"]
    assert version["tags"]["search_run_id"] == result["search_run_id"]


def start_ci_script(service, version: int, stage: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", str(EXAMPLES / "ci_promote.sh"), MODEL, str(version), stage],
        env=example_env(service, extra_env=env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def opened_by(service, pipeline: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = call(service, "GET", "/promotions", params={"model": MODEL}).json()
        for p in listed["promotions"]:
            if p["reason"].startswith(f"CI pipeline {pipeline}:"):
                return p
        time.sleep(0.3)
    raise AssertionError(f"no request from pipeline {pipeline}")


def test_ci_script_waits_for_approval_and_is_safe_to_retry(service, trained):
    script = str(EXAMPLES / "ci_promote.sh")
    env = {"CI_PIPELINE_ID": "p-17", "WAIT_TIMEOUT": "120"}
    waiting = start_ci_script(service, trained["version"], "Staging", env)
    try:
        request = opened_by(service, "p-17")
        assert request["status"] == "pending"
        assert waiting.poll() is None  # still waiting for the approver

        approved = call(
            service, "POST", f"/promotions/{request['id']}/approve", "approver", json={}
        )
        assert approved.status_code == 200 and approved.json()["status"] == "executed"
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, err
    assert f"promoted {MODEL} v{trained['version']} to Staging" in out
    version = call(service, "GET", f"/models/{MODEL}/versions/{trained['version']}").json()
    assert version["stage"] == "Staging"

    # A retried CI step finds the request it opened and reports it done.
    again = run_example(
        service, "bash", script, MODEL, str(trained["version"]), "Staging", extra_env=env
    )
    assert again.returncode == 0, again.stderr
    assert f"request {request['id']} (promotion)" in again.stdout
    listed = call(service, "GET", "/promotions", params={"model": MODEL}).json()["promotions"]
    assert sum(p["reason"].startswith("CI pipeline p-17") for p in listed) == 1


def test_ci_script_exit_codes_for_timeout_and_rejection(service, trained):
    script = str(EXAMPLES / "ci_promote.sh")
    args = ("bash", script, MODEL, str(trained["version"]), "Production")
    timed_out = run_example(
        service, *args, extra_env={"CI_PIPELINE_ID": "p-18", "WAIT_TIMEOUT": "1"}
    )
    assert timed_out.returncode == 5, timed_out.stderr
    assert "re-run this step to keep waiting" in timed_out.stderr

    listed = call(service, "GET", "/promotions", params={"model": MODEL}).json()["promotions"]
    request = next(p for p in listed if p["reason"].startswith("CI pipeline p-18"))
    rejected = call(
        service, "POST", f"/promotions/{request['id']}/reject", "approver", json={"comment": "no"}
    )
    assert rejected.status_code == 200
    after = run_example(service, *args, extra_env={"CI_PIPELINE_ID": "p-18", "WAIT_TIMEOUT": "1"})
    assert after.returncode == 4, after.stderr
    assert "ended without executing" in after.stderr

    unreachable = run_example(
        service, *args, extra_env={"REGISTRY_URL": f"http://127.0.0.1:{free_port()}"}
    )
    assert unreachable.returncode == 3


def test_ci_script_keeps_waiting_across_a_service_restart(service, trained):
    env = {"CI_PIPELINE_ID": "p-19", "WAIT_TIMEOUT": "150"}
    waiting = start_ci_script(service, trained["version"], "Production", env)
    try:
        request = opened_by(service, "p-19")
        assert request["status"] == "pending"
        time.sleep(5)  # idle polls on a kept-alive connection, past gunicorn's 2 s default
        service["server"].stop()
        time.sleep(3)  # down for more than one poll interval
        assert waiting.poll() is None, waiting.communicate()
        service["server"].start()
        for role in ("approver", "admin"):  # Production needs two approvals by default
            approved = call(service, "POST", f"/promotions/{request['id']}/approve", role, json={})
            assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "executed"
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, err
    assert f"promoted {MODEL} v{trained['version']} to Production" in out
    # It saw the outage (a retried poll, or a wait past the retries) and kept waiting.
    assert re.search(r"retrying|waiting for the service", err), err
