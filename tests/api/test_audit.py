"""GET /api/v1/audit: filters, cursor paging, head."""

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from registry_service.db.base import utcnow
from registry_service.db.models import AuditVerificationRow


def create(client, auth, name, role="requester"):
    assert client.post("/api/v1/models", headers=auth(role), json={"name": name}).status_code == 201


def test_filters_by_model_actor_action_and_time(client, auth, identities, model_name):
    start = datetime.now(UTC) - timedelta(seconds=1)
    create(client, auth, model_name)
    create(client, auth, model_name + "-b", role="admin")
    client.patch(
        f"/api/v1/models/{model_name}", headers=auth("requester"), json={"description": "x"}
    )

    by_model = client.get(f"/api/v1/audit?model={model_name}", headers=auth()).json["events"]
    assert [e["action"] for e in by_model] == ["model.updated", "model.created"]
    assert by_model[0]["seq"] > by_model[1]["seq"]

    by_actor = client.get(
        f"/api/v1/audit?actor={identities['admin']['name']}", headers=auth()
    ).json["events"]
    assert [e["model_name"] for e in by_actor] == [model_name + "-b"]

    by_action = client.get(
        f"/api/v1/audit?model={model_name}&action=model.created", headers=auth()
    ).json["events"]
    assert len(by_action) == 1

    since = quote(start.isoformat())
    until = quote((start - timedelta(hours=1)).isoformat())
    recent = client.get(f"/api/v1/audit?model={model_name}&since={since}", headers=auth())
    assert len(recent.json["events"]) == 2
    older = client.get(f"/api/v1/audit?model={model_name}&until={until}", headers=auth())
    assert older.json["events"] == []


def test_cursor_paging_walks_every_event_once(client, auth, model_name):
    create(client, auth, model_name)
    for i in range(4):
        client.patch(
            f"/api/v1/models/{model_name}", headers=auth("requester"), json={"description": f"d{i}"}
        )
    seqs, token = [], None
    while True:
        url = f"/api/v1/audit?model={model_name}&max_results=2"
        body = client.get(url + (f"&page_token={token}" if token else ""), headers=auth()).json
        seqs.extend(e["seq"] for e in body["events"])
        token = body["next_page_token"]
        if not token:
            break
    assert len(seqs) == 5 and seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 5


def test_bad_filters_are_422(client, auth):
    naive = client.get("/api/v1/audit?since=2026-01-01T00:00:00", headers=auth())
    assert naive.status_code == 422 and naive.json["errors"][0]["field"] == "since"
    backwards = client.get(
        "/api/v1/audit?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", headers=auth()
    )
    assert backwards.status_code == 422
    assert client.get("/api/v1/audit?version=0", headers=auth()).status_code == 422


def test_head_is_latest_event(client, auth, model_name):
    create(client, auth, model_name)
    head = client.get("/api/v1/audit/head", headers=auth()).json
    latest = client.get("/api/v1/audit?max_results=1", headers=auth()).json["events"][0]
    assert head == {"seq": latest["seq"], "hash": latest["hash"]}
    assert latest["prev_hash"] != latest["hash"] and len(latest["hash"]) == 64


def test_audit_needs_a_token(client):
    assert client.get("/api/v1/audit").status_code == 401


def test_verify_walks_the_whole_chain(client, auth):
    head = client.get("/api/v1/audit/head", headers=auth()).json
    response = client.get("/api/v1/audit/verify", headers=auth())
    assert response.status_code == 200
    body = response.json
    assert body["ok"] is True and body["first_broken_seq"] is None
    assert body["events_checked"] >= head["seq"] > 0
    assert body["head_seq"] >= head["seq"]
    assert client.get("/api/v1/audit/verify").status_code == 401


def test_verify_from_an_exported_checkpoint(client, auth):
    head = client.get("/api/v1/audit/head", headers=auth()).json
    client.get("/api/v1/auth/whoami", headers=auth())
    ok = client.get(
        "/api/v1/audit/verify",
        headers=auth(),
        query_string={"after_seq": head["seq"], "after_hash": head["hash"]},
    ).json
    assert ok["ok"] is True and ok["from_seq"] == head["seq"]
    forged = client.get(
        "/api/v1/audit/verify",
        headers=auth(),
        query_string={"after_seq": head["seq"], "after_hash": "f" * 64},
    ).json
    assert forged["ok"] is False and forged["first_broken_seq"] == head["seq"]
    half = client.get("/api/v1/audit/verify", headers=auth(), query_string={"after_seq": 1})
    assert half.status_code == 422


def _poll(client, auth, location, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(location, headers=auth()).json
        if job["status"] != "running":
            return job
        time.sleep(0.1)
    raise AssertionError("the verification never finished")


def test_background_verification_runs_and_keeps_its_result(client, auth, identities):
    started = client.post("/api/v1/audit/verifications", headers=auth(), json={})
    assert started.status_code == 202, started.json
    assert started.json["status"] in ("running", "done")
    assert started.json["requested_by"] == identities["viewer"]["name"]
    location = started.headers["Location"]
    job = _poll(client, auth, location)
    assert job["status"] == "done", job
    assert job["result"]["ok"] is True
    assert job["result"]["events_checked"] == job["events_to_check"] == job["head_seq"]
    assert job["finished_at"] and job["elapsed_seconds"] >= 0
    again = client.get(location, headers=auth()).json  # the result is kept
    assert again["result"] == job["result"]


def test_a_job_whose_process_died_reads_as_interrupted(client, auth, db):
    with db.transaction() as session:
        row = AuditVerificationRow(
            requested_by="gone",
            after_seq=0,
            head_seq=10,
            status="running",
            started_at=utcnow() - timedelta(minutes=10),
            heartbeat_at=utcnow() - timedelta(minutes=5),
        )
        session.add(row)
        session.flush()
        job_id = row.id
    job = client.get(f"/api/v1/audit/verifications/{job_id}", headers=auth()).json
    assert job["status"] == "interrupted" and job["result"] is None
    missing = client.get("/api/v1/audit/verifications/999999", headers=auth())
    assert missing.status_code == 404 and missing.json["code"] == "verification-not-found"
