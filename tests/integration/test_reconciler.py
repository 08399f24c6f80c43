"""Out-of-band changes: stages and aliases moved directly in a real `mlflow server` are
recorded (and reverted where the policy says so), MLflow's own signed webhooks trigger a
comparison at once, and governed moves racing the reconciler never raise a false alarm."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet
from mlflow import MlflowClient

from registry_service.db.database import Database
from registry_service.db.migrate import upgrade
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context
from registry_service.services.tokens import TokenService
from tests.conftest import write_model_dir
from tests.integration.conftest import ROOT
from tests.rig import MlflowServer, ServiceProcess, create_database
from tests.serving_models import log_sklearn

HOOK_SECRET = "mlflow-shared-secret"
ZERO_APPROVALS = [
    {"target_alias": "champion", "required_approvals": 0},
    {"target_stage": "Staging", "required_approvals": 0},
]


@pytest.fixture(scope="module")
def rec_db(pg_server_url):
    url = create_database(pg_server_url, "reconcile")
    upgrade(url)
    return url


@pytest.fixture(scope="module")
def rec_mlflow(pg_server_url):
    """An MLflow server of these tests' own (the reconciler compares every model in it),
    allowed to call webhooks on this machine."""
    server = MlflowServer.start(
        create_database(pg_server_url, "mlflowrec"),
        env={
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        },
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow(rec_mlflow):
    return MlflowClient(tracking_uri=rec_mlflow.uri, registry_uri=rec_mlflow.uri)


@pytest.fixture(scope="module")
def admin(rec_db):
    database = Database(rec_db)
    token, _ = TokenService(database, AuditLog(database)).create(
        Context("test-setup"), f"rec-admin-{uuid.uuid4().hex[:6]}", ["admin"]
    )
    database.dispose()
    return {"Authorization": f"Bearer {token}"}


def start_service(rec_db, rec_mlflow, tmp_path, **extra) -> ServiceProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "MLFLOW_"))}
    env.update(
        REGISTRY_DATABASE_URL=rec_db,
        MLFLOW_TRACKING_URI=rec_mlflow.uri,
        REGISTRY_DATA_DIR=str(tmp_path / f"data-{uuid.uuid4().hex[:6]}"),
        REGISTRY_MLFLOW_WEBHOOK_SECRET=HOOK_SECRET,
        **extra,
    )
    log = tmp_path / f"service-{uuid.uuid4().hex[:6]}.log"
    return ServiceProcess(env, log, ROOT).start()


@pytest.fixture(scope="module")
def polling(rec_db, rec_mlflow, tmp_path_factory):
    """The service with its scheduler comparing every model each second."""
    service = start_service(
        rec_db, rec_mlflow, tmp_path_factory.mktemp("polling"), REGISTRY_RECONCILE_SECONDS="1"
    )
    yield service
    service.stop()


def experiment_of(mlflow) -> str:
    exp = mlflow.get_experiment_by_name("reconcile")
    return exp.experiment_id if exp else mlflow.create_experiment("reconcile")


def put_policy(url, admin, name, **policy) -> None:
    answer = requests.put(
        f"{url}/api/v1/models/{name}/policy",
        headers=admin,
        json={"rules": ZERO_APPROVALS, **policy},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text


def governed_model(url, admin, mlflow, versions=2, **policy) -> str:
    """A model made through the registry, with versions and zero-approval rules."""
    name = f"rec-{uuid.uuid4().hex[:8]}"
    assert (
        requests.post(
            f"{url}/api/v1/models", headers=admin, json={"name": name}, timeout=30
        ).status_code
        == 201
    )
    exp_id = experiment_of(mlflow)
    for _ in range(versions):
        run_id = mlflow.create_run(exp_id).info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.log_artifacts(run_id, str(write_model_dir(Path(tmp))), "model")
        mlflow.set_terminated(run_id)
        answer = requests.post(
            f"{url}/api/v1/models/{name}/versions",
            headers=admin,
            json={"run_id": run_id, "artifact_path": "model"},
            timeout=60,
        )
        assert answer.status_code == 201, answer.text
    put_policy(url, admin, name, **policy)
    return name


def promote(url, admin, name, version, **target) -> None:
    answer = requests.post(
        f"{url}/api/v1/promotions",
        headers=admin,
        json={"model_name": name, "version": version, "reason": "governed", **target},
        timeout=60,
    )
    assert answer.status_code == 201 and answer.json()["status"] == "executed", answer.text


def events(url, admin, name, action) -> list[dict]:
    return requests.get(
        f"{url}/api/v1/audit",
        headers=admin,
        params={"model": name, "action": action, "max_results": 500},
        timeout=30,
    ).json()["events"]


def wait_for_event(url, admin, name, action, count=1, timeout=60.0) -> tuple[list, float]:
    began = time.monotonic()
    while True:
        found = events(url, admin, name, action)
        if len(found) >= count:
            return found, time.monotonic() - began
        assert time.monotonic() - began < timeout, f"no {action} on {name} in {timeout} s"
        time.sleep(0.25)


def test_mlflow_webhooks_trigger_a_comparison_at_once(rec_db, rec_mlflow, mlflow, admin, tmp_path):
    # No scheduler: only MLflow's webhook can make this service look.
    service = start_service(rec_db, rec_mlflow, tmp_path, REGISTRY_SCHEDULER="0")
    url = service.url
    hook = None
    try:
        hook = mlflow.create_webhook(
            name=f"registry-{uuid.uuid4().hex[:6]}",
            url=f"{url}/api/v1/integrations/mlflow-webhook",
            events=["model_version_alias.created", "model_version_alias.deleted"],
            secret=HOOK_SECRET,
        )
        name = governed_model(url, admin, mlflow)
        promote(url, admin, name, 1, target_alias="champion")  # MLflow calls us for this too
        time.sleep(3)
        assert events(url, admin, name, "model.out_of_band_change") == [], "\n".join(
            str((e["seq"], e["action"], e["actor"], e["occurred_at"][11:], e["before"], e["after"]))
            for e in events(url, admin, name, None)
        )

        mlflow.set_registered_model_alias(name, "champion", "2")
        (found,), seconds = wait_for_event(url, admin, name, "model.out_of_band_change", timeout=30)
        assert found["actor"] == "mlflow-webhook"
        assert found["after"]["noticed_by"] == "mlflow-webhook model_version_alias.created"
        assert found["before"]["holders"] == {"alias:champion": [1]}
        assert found["after"]["holders"] == {"alias:champion": [2]}
        print(f"\nout-of-band alias recorded through MLflow's webhook in {seconds:.2f} s")

        forged = requests.post(
            f"{url}/api/v1/integrations/mlflow-webhook",
            headers={
                "Content-Type": "application/json",
                "X-MLflow-Signature": "v1,AAAA",
                "X-MLflow-Delivery-Id": "x",
                "X-MLflow-Timestamp": str(int(time.time())),
            },
            data=json.dumps(
                {"entity": "model_version_alias", "action": "created", "data": {"name": name}}
            ),
            timeout=30,
        )
        assert forged.status_code == 401 and forged.json()["code"] == "unauthenticated"
    finally:
        if hook is not None:
            mlflow.delete_webhook(hook.webhook_id)
        service.stop()


def test_moves_made_directly_in_mlflow_are_recorded_within_a_minute(polling, mlflow, admin):
    url = polling.url
    name = governed_model(url, admin, mlflow, out_of_band="record")
    promote(url, admin, name, 1, target_alias="champion")
    promote(url, admin, name, 1, target_stage="Staging")

    mlflow.set_registered_model_alias(name, "champion", "2")
    (alias_move,), alias_seconds = wait_for_event(url, admin, name, "model.out_of_band_change")
    assert alias_seconds < 60
    assert alias_move["before"]["holders"] == {"alias:champion": [1]}
    assert alias_move["after"]["holders"] == {"alias:champion": [2]}
    assert alias_move["after"]["response"] == "record" and alias_move["actor"] == "scheduler"

    mlflow.transition_model_version_stage(name, "2", "Staging")
    moves, stage_seconds = wait_for_event(url, admin, name, "model.out_of_band_change", count=2)
    assert stage_seconds < 60
    assert moves[0]["after"]["holders"] == {"stage:Staging": [1, 2]}
    print(
        f"\nout-of-band moves recorded by polling in {alias_seconds:.2f} s (alias) "
        f"and {stage_seconds:.2f} s (stage)"
    )

    # Recorded once: later passes agree with what was recorded.
    time.sleep(3)
    assert len(events(url, admin, name, "model.out_of_band_change")) == 2
    alerts = requests.get(
        f"{url}/api/v1/alerts", headers=admin, params={"model_name": name}, timeout=30
    ).json()
    (alert,) = alerts
    assert alert["rule"] == "out-of-band" and alert["state"] == "firing"
    assert alert["figures"]["occurrences"] == 2
    resolved = requests.post(
        f"{url}/api/v1/alerts/{alert['id']}/resolve",
        headers=admin,
        json={"comment": "sanctioned hotfix"},
        timeout=30,
    )
    assert resolved.status_code == 200 and resolved.json()["state"] == "resolved"
    # What the registry reports now is what MLflow holds.
    history = requests.get(f"{url}/api/v1/models/{name}/history", headers=admin, timeout=30)
    assert history.status_code == 200
    assert history.json()["holders_at"] == {"alias:champion": [2], "stage:Staging": [1, 2]}


def test_under_revert_the_governed_holders_are_put_back(polling, mlflow, admin):
    url = polling.url
    name = governed_model(url, admin, mlflow, out_of_band="revert")
    promote(url, admin, name, 1, target_alias="champion")

    mlflow.set_registered_model_alias(name, "champion", "2")
    mlflow.transition_model_version_stage(name, "2", "Production")
    wait_for_event(url, admin, name, "model.out_of_band_reverted")
    mv = mlflow.get_model_version_by_alias(name, "champion")
    assert mv.version == "1"
    assert mlflow.get_model_version(name, "2").current_stage == "None"
    (change,) = events(url, admin, name, "model.out_of_band_change")
    assert change["after"]["response"] == "revert"
    alerts = requests.get(
        f"{url}/api/v1/alerts", headers=admin, params={"model_name": name}, timeout=30
    ).json()
    assert [a["state"] for a in alerts] == ["resolved"]
    assert alerts[0]["resolved_figures"]["reverted"] is True
    # The revert itself is no new out-of-band move.
    time.sleep(3)
    assert len(events(url, admin, name, "model.out_of_band_change")) == 1


def test_no_false_alarm_in_100_governed_promotions_racing_the_reconciler(polling, mlflow, admin):
    url = polling.url
    name = governed_model(url, admin, mlflow)
    stop = threading.Event()
    outcomes: list[str] = []

    def hammer():
        # On top of the scheduler's pass each second: comparisons as fast as they go.
        while not stop.is_set():
            answer = requests.post(
                f"{url}/api/v1/integrations/reconcile",
                headers=admin,
                params={"model_name": name},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
            outcomes.append(answer.json()["models"][0]["outcome"])

    racer = threading.Thread(target=hammer, daemon=True)
    racer.start()
    try:
        for i in range(100):
            promote(url, admin, name, 1 + i % 2, target_alias="champion")
    finally:
        stop.set()
        racer.join(60)
    time.sleep(2.5)  # a last scheduler pass after the final move
    assert events(url, admin, name, "model.out_of_band_change") == []
    assert len(events(url, admin, name, "alias.set")) == 100
    assert "in-step" in outcomes and "out-of-band" not in outcomes
    print(
        f"\n100 governed promotions, {len(outcomes)} racing comparisons: "
        f"{outcomes.count('in-step')} in step, {outcomes.count('deferred')} deferred, 0 alarms"
    )


def test_a_model_made_in_mlflow_is_adopted_as_found_then_watched(polling, mlflow, admin):
    url = polling.url
    name = f"rec-outside-{uuid.uuid4().hex[:8]}"
    mlflow.create_registered_model(name)
    exp_id = experiment_of(mlflow)
    for _ in range(2):
        run_id = mlflow.create_run(exp_id).info.run_id
        mlflow.create_model_version(name, f"runs:/{run_id}/model", run_id)
    mlflow.set_registered_model_alias(name, "champion", "1")
    # Some event of ours about it that is not a move (its policy) must not change that.
    put_policy(url, admin, name, out_of_band="revert")
    answer = requests.post(
        f"{url}/api/v1/integrations/reconcile",
        headers=admin,
        params={"model_name": name},
        timeout=60,
    )
    assert answer.status_code == 200
    assert answer.json()["models"][0]["outcome"] in ("adopted", "in-step", "deferred")
    (adopted,), _ = wait_for_event(url, admin, name, "model.adopted")
    assert adopted["after"]["holders"] == {"alias:champion": [1]}
    assert mlflow.get_model_version_by_alias(name, "champion").version == "1"

    mlflow.set_registered_model_alias(name, "champion", "2")
    wait_for_event(url, admin, name, "model.out_of_band_reverted")
    assert mlflow.get_model_version_by_alias(name, "champion").version == "1"
    assert events(url, admin, name, "model.out_of_band_change")[0]["before"]["holders"] == {
        "alias:champion": [1]
    }


def test_moves_made_straight_in_mlflow_are_never_served_and_reverted_by_default(
    polling, mlflow, admin
):
    """Default policy (guard): a Production move and an alias move made with MlflowClient
    answer no prediction, are put back within a reconcile period, and raise the alert."""
    url = polling.url
    name = f"rec-guard-{uuid.uuid4().hex[:8]}"
    created = requests.post(f"{url}/api/v1/models", headers=admin, json={"name": name})
    assert created.status_code == 201, created.text
    for threshold in (0.5, 0.2):
        run_id, _ = log_sklearn(mlflow, threshold, experiment="reconcile")
        registered = requests.post(
            f"{url}/api/v1/models/{name}/versions",
            headers=admin,
            json={"run_id": run_id, "artifact_path": "model"},
            timeout=60,
        )
        assert registered.status_code == 201, registered.text
    # The policy names no out_of_band: the default applies.
    put_policy(
        url,
        admin,
        name,
        rules=[
            {"target_stage": "Production", "required_approvals": 0},
            {"target_alias": "champion", "required_approvals": 0},
        ],
    )
    policy = requests.get(f"{url}/api/v1/models/{name}/policy", headers=admin, timeout=30)
    assert policy.json()["out_of_band"] == "guard"
    promote(url, admin, name, 1, target_stage="Production")
    promote(url, admin, name, 1, target_alias="champion")

    def served(query=""):
        answer = requests.post(
            f"{url}/api/v1/models/{name}/predict{query}",
            headers=admin,
            json={"inputs": [{"a": 0.3, "b": 0.5}]},
            timeout=60,
        )
        return answer.status_code, answer.json().get("model_version"), answer.json()

    assert served()[:2] == (200, 1)
    mlflow.transition_model_version_stage(name, "2", "Production", archive_existing_versions=True)
    mlflow.set_registered_model_alias(name, "champion", "2")
    moved_at = time.monotonic()
    # Never served, whatever MLflow says meanwhile: by default, by alias, by pin.
    for _ in range(10):
        assert served()[:2] == (200, 1)
        assert served("?alias=champion")[:2] == (200, 1)
        status, _, problem = served("?version=2")
        assert (status, problem["code"]) == (403, "version-not-servable")
    deadline = time.monotonic() + 30
    while True:  # the two moves may be noticed in one pass or in two
        reverted = events(url, admin, name, "model.out_of_band_reverted")
        put_back = {k for event in reverted for k in event["after"]["holders"]}
        if put_back >= {"stage:Production", "alias:champion"}:
            break
        assert time.monotonic() < deadline, f"not put back: {reverted}"
        time.sleep(0.25)
    took = time.monotonic() - moved_at
    assert took < 15, "not put back within a few reconcile periods"
    print(f"\nout-of-band Production and alias moves put back {took:.2f} s after the move")
    changes = events(url, admin, name, "model.out_of_band_change")
    assert {c["after"]["mode"] for c in changes} == {"guard"}
    assert {c["after"]["response"] for c in changes} == {"revert"}
    assert {t for c in changes for t in c["after"]["reverting"]} == {
        "stage:Production",
        "alias:champion",
    }
    assert mlflow.get_model_version(name, "1").current_stage == "Production"
    assert mlflow.get_model_version(name, "2").current_stage != "Production"
    assert mlflow.get_model_version_by_alias(name, "champion").version == "1"
    alerts = requests.get(
        f"{url}/api/v1/alerts", headers=admin, params={"model_name": name}, timeout=30
    ).json()
    assert [a["rule"] for a in alerts] == ["out-of-band"]
    assert served()[:2] == (200, 1)


def test_a_model_adopted_holding_production_raises_the_alert_and_is_not_served(
    polling, mlflow, admin
):
    url = polling.url
    name = f"rec-adopt-{uuid.uuid4().hex[:8]}"
    mlflow.create_registered_model(name)
    run_id, _ = log_sklearn(mlflow, 0.5, experiment="reconcile")
    mlflow.create_model_version(name, f"runs:/{run_id}/model", run_id)
    mlflow.transition_model_version_stage(name, "1", "Production")
    (adopted,), _ = wait_for_event(url, admin, name, "model.adopted", timeout=30)
    assert adopted["after"]["holders"] == {"stage:Production": [1]}
    alerts = requests.get(
        f"{url}/api/v1/alerts", headers=admin, params={"model_name": name}, timeout=30
    ).json()
    assert [(a["rule"], a["state"]) for a in alerts] == [("out-of-band", "firing")]
    answer = requests.post(
        f"{url}/api/v1/models/{name}/predict",
        headers=admin,
        json={"inputs": [{"a": 0.3, "b": 0.5}]},
        timeout=60,
    )
    assert (answer.status_code, answer.json()["code"]) == (404, "target-not-held")
    pinned = requests.post(
        f"{url}/api/v1/models/{name}/predict?version=1",
        headers=admin,
        json={"inputs": [{"a": 0.3, "b": 0.5}]},
        timeout=60,
    )
    assert (pinned.status_code, pinned.json()["code"]) == (403, "version-not-servable")

    # A governed step makes it a holder of ours: the move is recorded, not made again.
    put_policy(url, admin, name, rules=[{"target_stage": "Production", "required_approvals": 0}])
    promote(url, admin, name, 1, target_stage="Production")
    (confirmed,) = events(url, admin, name, "version.stage_changed")
    assert confirmed["after"]["stage"] == "Production" and confirmed["after"]["promotion_request"]
    answer = requests.post(
        f"{url}/api/v1/models/{name}/predict",
        headers=admin,
        json={"inputs": [{"a": 0.3, "b": 0.5}]},
        timeout=60,
    )
    assert (answer.status_code, answer.json().get("model_version")) == (200, 1), answer.text
