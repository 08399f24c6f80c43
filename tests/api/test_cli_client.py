"""The client commands against a live service over HTTP: output, --json, exit codes."""

from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner

from registry_service.cli import main
from registry_service.services.context import Context
from tests.conftest import get_services_of

CTX = Context(actor="test-setup")


@pytest.fixture
def model(app, model_name, make_run):
    services = get_services_of(app)
    services.models.create_model(CTX, model_name, "churn model", {})
    for _ in range(2):
        services.models.register_version(CTX, model_name, make_run(), "model", None, {})
    return model_name


def test_promotion_from_request_to_executed(cli, model):
    key = f"ci-{uuid.uuid4()}"
    args = ["promote", "request", model, "1", "--stage", "Staging", "--reason", "nightly"]
    first = cli(*args, "--idempotency-key", key, "--json", role="requester")
    assert first.exit_code == 0, first.output
    opened = json.loads(first.output)
    assert opened["status"] == "pending"
    retried = cli(*args, "--idempotency-key", key, "--json", role="requester")
    assert json.loads(retried.output)["id"] == opened["id"]

    approved = cli("promote", "approve", str(opened["id"]), role="approver")
    assert approved.exit_code == 0
    assert "status     executed" in approved.output

    status = cli("promote", "status", str(opened["id"]), "--json")
    assert status.exit_code == 0 and json.loads(status.output)["status"] == "executed"
    listed = cli("versions", "list", model, "--stage", "Staging")
    assert listed.exit_code == 0 and "Staging" in listed.output.splitlines()[1]


def test_rejected_request_exits_4_and_refusals_exit_1(cli, model):
    opened = json.loads(
        cli(
            "promote",
            "request",
            model,
            "2",
            "--stage",
            "Production",
            "--reason",
            "r",
            "--json",
            role="requester",
        ).output
    )
    rejected = cli("promote", "reject", str(opened["id"]), "--comment", "no", role="approver")
    assert rejected.exit_code == 0
    assert cli("promote", "status", str(opened["id"])).exit_code == 4

    again = cli("promote", "approve", str(opened["id"]), role="approver")
    assert again.exit_code == 1
    assert "409 illegal-transition" in again.output
    forbidden = cli(
        "promote", "request", model, "2", "--stage", "Production", "--reason", "r", role="viewer"
    )
    assert forbidden.exit_code == 1 and "403 forbidden" in forbidden.output
    usage = cli("promote", "request", model, "2", "--reason", "r", role="requester")
    assert usage.exit_code == 2


def test_wait_times_out_with_exit_5(cli, model):
    result = cli(
        "promote",
        "request",
        model,
        "1",
        "--alias",
        "champion",
        "--reason",
        "r",
        "--wait",
        "--timeout",
        "0",
        role="requester",
    )
    assert result.exit_code == 5 and "status     pending" in result.output


def test_models_audit_and_unreachable(cli, model):
    shown = cli("models", "show", model)
    assert shown.exit_code == 0 and "churn model" in shown.output
    listed = json.loads(cli("models", "list", "--prefix", model, "--json").output)
    assert [m["name"] for m in listed] == [model]
    tail = cli("audit", "tail", "--model", model, "--limit", "2")
    assert tail.exit_code == 0 and "version.registered" in tail.output
    verified = cli("audit", "verify", "--json")
    assert verified.exit_code == 0 and json.loads(verified.output)["ok"] is True
    missing = cli("models", "show", "no-such-model-cli")
    assert missing.exit_code == 1 and "404 model-not-found" in missing.output
    down = CliRunner().invoke(main, ["models", "list", "--url", "http://127.0.0.1:9"])
    assert down.exit_code == 3 and "no answer" in down.output


def test_evaluate_exit_codes(cli, model, client, auth):
    client.put(
        f"/api/v1/models/{model}/policy",
        headers=auth("admin"),
        json={"rules": [], "auto_promotion": {"metric": "auc", "min_value": 0.5}},
    )
    missing = cli("evaluate", model, "2", "--dry-run", role="requester")
    assert missing.exit_code == 4 and "NOT PASSED" in missing.output
    assert "metric_present" in missing.output


@pytest.fixture
def search(make_run):
    name = f"cli-search-{uuid.uuid4().hex[:8]}"
    ids = [
        make_run(
            params={"depth": depth},
            metrics={"auc": auc, "latency_ms": latency},
            experiment=name,
        )
        for depth, auc, latency in ((2, 0.81, 3.0), (4, 0.88, 9.0), (8, 0.85, 20.0))
    ]
    return {"name": name, "runs": ids}


def test_best_run_by_name_or_id_and_register_it(cli, search, model_name):
    best = cli("runs", "best", search["name"], "--metric", "auc", "--json")
    assert best.exit_code == 0, best.output
    best_run = json.loads(best.stdout)
    assert best_run["run_id"] == search["runs"][1]
    fastest = cli(
        "runs", "best", best_run["experiment_id"], "--metric", "latency_ms", "--lower-is-better"
    )
    assert fastest.exit_code == 0
    assert fastest.stdout.splitlines()[1].startswith(search["runs"][0])

    registered = cli(
        "versions",
        "register",
        model_name,
        best_run["run_id"],
        "--create-model",
        "--json",
        role="requester",
    )
    assert registered.exit_code == 0, registered.output
    # stdout only: the in-process server's MLflow logging lands in the runner's stderr.
    version = json.loads(registered.stdout)
    assert version["version"] == 1 and version["run_id"] == best_run["run_id"]
    assert version["lineage"]["metrics"]["auc"] == pytest.approx(0.88)
    again = cli("versions", "register", model_name, best_run["run_id"], role="requester")
    assert again.exit_code == 0 and again.stdout.startswith(f"{model_name} v2 from run")


def test_an_experiment_named_like_a_number_is_found_by_name(cli, make_run):
    name = str(900_000_000 + uuid.uuid4().int % 99_999_999)
    run_id = make_run(metrics={"auc": 0.7}, log_model=False, experiment=name)
    best = cli("runs", "best", name, "--metric", "auc", "--json")
    assert best.exit_code == 0, best.output
    assert json.loads(best.stdout)["run_id"] == run_id


def test_run_commands_refuse_clearly(cli, search):
    missing = cli("runs", "best", "no-such-experiment-here", "--metric", "auc")
    assert missing.exit_code == 1
    assert "no active experiment named" in missing.output
    no_metric = cli("runs", "best", search["name"], "--metric", "f1", "--json")
    assert no_metric.exit_code == 1
    assert json.loads(no_metric.output)["code"] == "no-matching-run"
    unregistrable = cli("versions", "register", "no-such-model-x", search["runs"][0], role="viewer")
    assert unregistrable.exit_code == 1 and "403" in unregistrable.output


def test_experiments_list_and_runs_compare(cli, search):
    listed = cli("experiments", "list", "--prefix", search["name"])
    assert listed.exit_code == 0
    assert [line.split()[1] for line in listed.output.splitlines()[1:]] == [search["name"]]

    a, b, _ = search["runs"]
    compared = cli("runs", "compare", a, b, "--metric", "auc")
    assert compared.exit_code == 0, compared.output
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in compared.output.splitlines()[1:]}
    assert rows[("metrics", "auc")] == ["0.81", "0.88"]
    assert rows[("params", "depth")] == ["2", "4"]
    assert ("metrics", "latency_ms") not in rows
    as_json = json.loads(cli("runs", "compare", a, b, "--json").output)
    assert {row["key"] for row in as_json["metrics"]} == {"auc", "latency_ms"}
    too_few = cli("runs", "compare", a)
    assert too_few.exit_code == 1 and "run_ids" in too_few.output
