"""The client commands against a live service over HTTP: output, --json, exit codes."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

from registry_service.cli import main
from registry_service.services.context import Context
from tests.conftest import get_services_of

CTX = Context(actor="test-setup")


@pytest.fixture
def live_url(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def model(app, model_name, make_run):
    services = get_services_of(app)
    services.models.create_model(CTX, model_name, "churn model", {})
    for _ in range(2):
        services.models.register_version(CTX, model_name, make_run(), "model", None, {})
    return model_name


@pytest.fixture
def cli(live_url, identities):
    runner = CliRunner()

    def run(*args, role="viewer"):
        env = {"REGISTRY_URL": live_url, "REGISTRY_TOKEN": identities[role]["token"]}
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    return run


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
