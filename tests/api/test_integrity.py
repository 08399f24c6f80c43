"""Approved bytes are served bytes, on PostgreSQL and a real `mlflow server`: each
version's files are signed at registration, scanned for dangerous pickles, checked
before serving loads them, and can be checked again by the API and the CLI."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import select, update

from registry_service.db.models import AuditEventRow, VersionLineageRow
from registry_service.domain.monitoring import INTEGRITY_RULE
from registry_service.services.context import Context
from registry_service.services.manifests import verify_folder
from registry_service.serving.service import work_dir
from tests.conftest import promote
from tests.serving_models import log_sklearn

CTX = Context(actor="test-setup")
ROWS = [{"a": 0.9, "b": 0.1}, {"a": 0.35, "b": 0.5}, {"a": 0.1, "b": 0.9}]


def versions_url(model, version, what):
    return f"/api/v1/models/{model}/versions/{version}/{what}"


def request(client, auth, model, version, **target):
    body = {"model_name": model, "version": version, "reason": "ship it"}
    return client.post(
        "/api/v1/promotions",
        headers=auth("requester"),
        json=body | (target or {"target_stage": "Production"}),
    )


def stored_file(mlflow_client, run_id: str, name: str) -> Path | None:
    """The file as the suite's `mlflow server` keeps it on disk (its artifact root)."""
    run = mlflow_client.get_run(run_id)
    tail = run.info.artifact_uri.split("mlflow-artifacts:/", 1)[-1].strip("/")
    found = list(Path(tempfile.gettempdir()).glob(f"registry-mlflow-*/artifacts/{tail}/model"))
    return found[0] / name if found else None


def tamper(mlflow_client, run_id: str, name: str, data: bytes) -> None:
    """Change one file of a logged model in the artifact store, behind the registry."""
    on_disk = stored_file(mlflow_client, run_id, name)
    if on_disk is not None:
        on_disk.write_bytes(data)
        return
    with tempfile.TemporaryDirectory() as tmp:  # a server of REGISTRY_TEST_MLFLOW_URI
        (Path(tmp) / name).write_bytes(data)
        mlflow_client.log_artifact(run_id, str(Path(tmp) / name), "model")


def read_stored(mlflow_client, run_id: str, name: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return Path(mlflow_client.download_artifacts(run_id, f"model/{name}", tmp)).read_bytes()


@pytest.fixture
def sealed(services, model_name, mlflow_client):
    """Two scikit-learn versions, registered (and so sealed); run ids by version."""
    services.models.create_model(CTX, model_name, None, {})
    runs = {}
    for version, threshold in ((1, 0.5), (2, 0.2)):
        runs[version], _ = log_sklearn(mlflow_client, threshold)
        services.models.register_version(CTX, model_name, runs[version], "model", None, {})
    return model_name, runs


class RunsACommand:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def log_command_pickle(mlflow_client, marker: Path) -> str:
    exp = mlflow_client.get_experiment_by_name("integrity-tests")
    exp_id = exp.experiment_id if exp else mlflow_client.create_experiment("integrity-tests")
    run_id = mlflow_client.create_run(exp_id).info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        (folder / "MLmodel").write_text("artifact_path: model\nflavors: {}\n")
        (folder / "model.pkl").write_bytes(pickle.dumps(RunsACommand(str(marker))))
        mlflow_client.log_artifacts(run_id, str(folder), "model")
    mlflow_client.set_terminated(run_id, "FINISHED")
    return run_id


def test_registration_records_a_signed_manifest_the_public_key_verifies(
    client, auth, services, sealed, tmp_path
):
    model, _ = sealed
    shown = client.get(versions_url(model, 1, "manifest"), headers=auth("viewer"))
    assert shown.status_code == 200, shown.json
    manifest = shown.json
    assert set(manifest["files"]) >= {"MLmodel", "model.skops", "requirements.txt"}
    assert len(manifest["manifest_digest"]) == 64
    assert manifest["signing_key_id"] == manifest["key_id"]
    assert manifest["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert manifest["scan"]["verdict"] == "clean"
    other = client.get(versions_url(model, 2, "manifest"), headers=auth("viewer")).json
    assert other["manifest_digest"] != manifest["manifest_digest"]

    with services.db.read() as session:
        row = session.execute(
            select(VersionLineageRow).where(
                VersionLineageRow.model_name == model, VersionLineageRow.version == 1
            )
        ).scalar_one()
        assert row.manifest_digest == manifest["manifest_digest"]
        assert row.scan_verdict == "clean" and row.scan_findings["files"] == {}

    folder = Path(services.gateway.download_model_version(model, 1, str(tmp_path)))
    key = manifest["public_key"].encode()
    assert verify_folder(folder, manifest["signature"], key).ok
    data = bytearray((folder / "MLmodel").read_bytes())
    data[0] ^= 1
    (folder / "MLmodel").write_bytes(bytes(data))
    failed = verify_folder(folder, manifest["signature"], key)
    assert not failed.ok and failed.mismatches[0]["path"] == "MLmodel"

    checked = client.post(versions_url(model, 1, "verify"), headers=auth("viewer"))
    assert checked.status_code == 200, checked.json
    assert checked.json["ok"] is True and checked.json["integrity"] == "verified"
    assert checked.json["actual_digest"] == manifest["manifest_digest"]

    (event,) = [
        e
        for e in client.get(f"/api/v1/audit?model={model}", headers=auth()).json["events"]
        if e["action"] == "version.registered" and e["model_version"] == 2
    ]
    assert event["after"]["integrity"]["manifest_digest"] == other["manifest_digest"]


def test_the_new_endpoints_refuse_clearly(client, auth, services, sealed):
    model, _ = sealed
    for method, what in (("get", "manifest"), ("post", "verify")):
        call = getattr(client, method)
        none = call(versions_url(model, 1, what))
        assert none.status_code == 401 and none.json["code"] == "unauthenticated"
        predictor = call(versions_url(model, 1, what), headers=auth("predictor_only"))
        assert predictor.status_code == 403 and predictor.json["code"] == "forbidden"
        missing = call(versions_url(model, 99, what), headers=auth("viewer"))
        assert missing.status_code == 404 and missing.json["code"] == "version-not-found"

    # A version registered before manifests were kept: unverified, not an error to serve.
    with services.db.transaction() as session:
        session.execute(
            update(VersionLineageRow)
            .where(VersionLineageRow.model_name == model, VersionLineageRow.version == 2)
            .values(manifest_digest=None, manifest_files=None, manifest_signature=None)
        )
    unsealed = client.get(versions_url(model, 2, "manifest"), headers=auth("viewer"))
    assert unsealed.status_code == 404 and unsealed.json["code"] == "manifest-not-found"
    checked = client.post(versions_url(model, 2, "verify"), headers=auth("viewer")).json
    assert checked["ok"] is False and checked["integrity"] == "unverified"


def test_an_approved_version_changed_in_the_store_is_refused_and_the_previous_answers(
    client, auth, services, sealed, mlflow_client
):
    model, runs = sealed
    promote(client, auth, model, 1)
    services.serving.refresh(model)
    first = client.post(
        f"/api/v1/models/{model}/predict", headers=auth(), json={"dataframe_records": ROWS}
    )
    assert first.status_code == 200 and first.json["model_version"] == 1

    request_id = promote(client, auth, model, 2)
    evidence = client.get(f"/api/v1/promotions/{request_id}", headers=auth()).json["evidence"]
    approved = client.get(versions_url(model, 2, "manifest"), headers=auth()).json
    assert evidence["artifacts"]["manifest_digest"] == approved["manifest_digest"]
    assert evidence["artifacts"]["scan_verdict"] == "clean"

    # After approval, v2's estimator is swapped for another one in the artifact store: it
    # would load and answer, differently. A process that loaded v2 already keeps the
    # approved bytes; one that has not (a new replica, a restart elsewhere) must refuse.
    other_run, _ = log_sklearn(mlflow_client, 0.8)
    tamper(
        mlflow_client, runs[2], "model.skops", read_stored(mlflow_client, other_run, "model.skops")
    )
    services.serving.cache.clear()
    shutil.rmtree(
        work_dir(services.settings.data_dir) / "artifacts" / approved["manifest_digest"][:40],
        ignore_errors=True,
    )
    services.serving.refresh(model)
    for _ in range(3):
        answer = client.post(
            f"/api/v1/models/{model}/predict", headers=auth(), json={"dataframe_records": ROWS}
        )
        assert answer.status_code == 200, answer.json
        assert answer.json["fallback"] is True and answer.json["model_version"] == 1

    with services.db.read() as session:
        events = (
            session.execute(
                select(AuditEventRow).where(
                    AuditEventRow.model_name == model,
                    AuditEventRow.action == "serving.integrity_failed",
                )
            )
            .scalars()
            .all()
        )
    (event,) = events  # at most one per version and minute
    assert event.model_version == 2 and event.after["files"] == ["model.skops"]
    assert event.after["manifest_digest"] == approved["manifest_digest"]

    client.post(f"/api/v1/alerts/evaluate?model_name={model}", headers=auth("approver"))
    alerts = client.get(f"/api/v1/alerts?model_name={model}&state=firing", headers=auth()).json
    (alert,) = [a for a in alerts if a["rule"] == INTEGRITY_RULE]
    assert alert["figures"]["version"] == 2 and alert["figures"]["files"] == ["model.skops"]

    checked = client.post(versions_url(model, 2, "verify"), headers=auth("viewer")).json
    assert checked["ok"] is False and checked["signature"] == "valid"
    assert [(m["path"], m["problem"]) for m in checked["mismatches"]] == [
        ("model.skops", "changed")
    ]
    status = client.get("/api/v1/serving/models", headers=auth()).json
    loaded = {m["version"]: m["integrity"] for m in status["models"] if m["model_name"] == model}
    assert loaded == {1: "verified"}


def test_a_version_without_a_manifest_is_served_unverified(client, auth, services, sealed):
    model, _ = sealed
    with services.db.transaction() as session:
        session.execute(
            update(VersionLineageRow)
            .where(VersionLineageRow.model_name == model, VersionLineageRow.version == 1)
            .values(manifest_digest=None, manifest_files=None, manifest_signature=None)
        )
    request_id = promote(client, auth, model, 1)
    evidence = client.get(f"/api/v1/promotions/{request_id}", headers=auth()).json["evidence"]
    assert evidence["artifacts"]["status"] == "unverified"
    services.serving.refresh(model)
    answer = client.post(
        f"/api/v1/models/{model}/predict", headers=auth(), json={"dataframe_records": ROWS}
    )
    assert answer.status_code == 200 and answer.json["fallback"] is False
    status = client.get("/api/v1/serving/models", headers=auth()).json
    loaded = {m["version"]: m["integrity"] for m in status["models"] if m["model_name"] == model}
    assert loaded == {1: "unverified"}


def test_a_pickle_that_runs_a_command_is_flagged_and_kept_from_production(
    client, auth, services, model_name, mlflow_client, tmp_path
):
    marker = tmp_path / "the-pickle-ran"
    services.models.create_model(CTX, model_name, None, {})
    run_id = log_command_pickle(mlflow_client, marker)
    registered = client.post(
        f"/api/v1/models/{model_name}/versions",
        headers=auth("requester"),
        json={"run_id": run_id, "artifact_path": "model"},
    )
    assert registered.status_code == 201, registered.json
    scan = client.get(versions_url(model_name, 1, "manifest"), headers=auth()).json["scan"]
    assert scan["verdict"] == "dangerous"
    assert scan["files"]["model.pkl"]["dangerous"] == [f"{os.system.__module__}.system"]

    for target in ({"target_stage": "Production"}, {"target_alias": "champion"}):
        refused = request(client, auth, model_name, 1, **target)
        assert refused.status_code == 409 and refused.json["code"] == "unsafe-artifact"
        assert "model.pkl" in refused.json["findings"]
    staging = request(client, auth, model_name, 1, target_stage="Staging")
    assert staging.status_code == 201, staging.json  # not served by default: may be tried
    assert staging.json["evidence"]["artifacts"]["scan_verdict"] == "dangerous"

    allowed = client.put(
        f"/api/v1/models/{model_name}/policy",
        headers=auth("admin"),
        json={"rules": [], "allow_unsafe_artifacts": True},
    )
    assert allowed.status_code == 200 and allowed.json["allow_unsafe_artifacts"] is True
    opened = request(client, auth, model_name, 1)
    assert opened.status_code == 201, opened.json
    assert opened.json["evidence"]["artifacts"]["findings"]["model.pkl"]["dangerous"]
    assert not marker.exists()  # scanned, never unpickled


def test_cli_verify_says_ok_then_fails_for_a_tampered_version(
    cli, client, auth, services, sealed, mlflow_uri, mlflow_client, tmp_path
):
    model, runs = sealed
    ok = cli("versions", "verify", model, "1", "--tracking-uri", mlflow_uri)
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith(f"ok: {model} v1 matches its signed manifest")

    # Exported, then checked offline against a public key kept apart from the service.
    exported = Path(services.gateway.download_model_version(model, 1, str(tmp_path / "export")))
    key = tmp_path / "registry.pub"
    key.write_text(
        client.get(versions_url(model, 1, "manifest"), headers=auth()).json["public_key"]
    )
    offline = cli(
        "versions", "verify", model, "1", "--dir", str(exported), "--public-key", str(key)
    )
    assert offline.exit_code == 0, offline.output

    tamper(mlflow_client, runs[1], "requirements.txt", b"scikit-learn\nevil-package\n")
    bad = cli("versions", "verify", model, "1", "--tracking-uri", mlflow_uri)
    assert bad.exit_code == 4, bad.output
    assert "MISMATCH" in bad.output and "requirements.txt: changed" in bad.output
    as_json = cli("versions", "verify", model, "1", "--tracking-uri", mlflow_uri, "--json")
    assert as_json.exit_code == 4
    body = json.loads(as_json.output)
    assert body["ok"] is False and body["signature"] == "valid"
    assert [m["path"] for m in body["mismatches"]] == ["requirements.txt"]
