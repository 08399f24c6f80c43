"""Feedback over REST on PostgreSQL and a real `mlflow server`: request ids are the
service's own, and only the predicting principal, the model's feedback principals and
admins may judge a prediction."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from registry_service.db.models import PredictionFeedbackRow, PredictionRow
from registry_service.services.context import Context
from tests.conftest import predict, promote
from tests.serving_models import log_sklearn

CTX = Context(actor="test-setup")
ROW = {"a": 0.9, "b": 0.1}


@pytest.fixture
def served(client, auth, services, model_name, mlflow_client):
    """One version in Production, promoted through the approval workflow."""
    services.models.create_model(CTX, model_name, None, {})
    run_id, _ = log_sklearn(mlflow_client, 0.5)
    services.models.register_version(CTX, model_name, run_id, "model", None, {})
    promote(client, auth, model_name, 1)
    services.serving.refresh(model_name)
    return model_name


def predicted(client, auth, model, role="viewer", headers=None) -> str:
    answer = predict(client, auth, model, {"dataframe_records": [ROW]}, role, headers=headers)
    assert answer.status_code == 200, answer.json
    return answer.json["request_id"]


def send(client, auth, model, request_ids, role="viewer", actual=1):
    return client.post(
        f"/api/v1/models/{model}/feedback",
        headers=auth(role),
        json={"items": [{"request_id": r, "actual": actual} for r in request_ids]},
    )


def recorded(services, request_ids) -> dict[str, tuple]:
    with services.db.read() as session:
        rows = session.execute(
            select(
                PredictionFeedbackRow.request_id,
                PredictionFeedbackRow.actual,
                PredictionFeedbackRow.received_by,
            ).where(PredictionFeedbackRow.request_id.in_(list(request_ids)))
        ).all()
    return {r.request_id: (r.actual, r.received_by) for r in rows}


def test_request_ids_are_minted_and_the_clients_is_kept(client, auth, services, served):
    answer = predict(
        client, auth, served, {"dataframe_records": [ROW]}, headers={"X-Request-ID": "ci-job-7"}
    )
    assert answer.status_code == 200, answer.json
    minted = answer.json["request_id"]
    assert minted != "ci-job-7" and len(minted) == 32
    assert answer.headers["X-Request-ID"] == minted
    assert answer.headers["X-Client-Request-ID"] == "ci-job-7"
    assert answer.json["client_request_id"] == "ci-job-7"
    # An id that fails validation is not kept at all.
    bad = predict(
        client, auth, served, {"dataframe_records": [ROW]}, headers={"X-Request-ID": "a b"}
    )
    assert bad.json["client_request_id"] is None and "X-Client-Request-ID" not in bad.headers
    assert services.serving.writer.flush(10)

    with services.db.read() as session:
        rows = session.execute(
            select(PredictionRow.request_id, PredictionRow.client_request_id).where(
                PredictionRow.model_name == served
            )
        ).all()
    assert sorted(rows, key=lambda r: r.request_id != minted) == [
        (minted, "ci-job-7"),
        (bad.json["request_id"], None),
    ]
    # The client's id names no prediction: feedback sent with it finds nothing.
    chosen = send(client, auth, served, ["ci-job-7"])
    assert chosen.status_code == 200
    assert chosen.json == {"accepted": 0, "unknown_request_ids": ["ci-job-7"]}


def test_only_the_predicting_principal_judges_a_prediction(
    client, auth, services, served, identities
):
    theirs = [predicted(client, auth, served) for _ in range(2)]  # the viewer's
    mine = predicted(client, auth, served, role="requester")
    assert services.serving.writer.flush(10)

    refused = send(client, auth, served, [mine, *theirs], role="requester")
    assert refused.status_code == 403
    assert refused.json["code"] == "feedback-not-allowed"
    assert refused.json["refused_request_ids"] == sorted(theirs)
    assert (
        all(rid in refused.json["detail"] for rid in theirs) and mine not in refused.json["detail"]
    )
    assert recorded(services, [mine, *theirs]) == {}  # a refused call records nothing

    own = send(client, auth, served, [mine], role="requester")
    assert own.status_code == 200 and own.json == {"accepted": 1, "unknown_request_ids": []}
    by_viewer = send(client, auth, served, theirs, role="viewer", actual=0)
    assert by_viewer.status_code == 200 and by_viewer.json["accepted"] == 2
    viewer, requester = identities["viewer"]["name"], identities["requester"]["name"]
    assert recorded(services, [mine, *theirs]) == {
        mine: (1, requester),
        theirs[0]: (0, viewer),
        theirs[1]: (0, viewer),
    }


def test_feedback_principals_and_admins_judge_anyones(client, auth, services, served, identities):
    first, second = predicted(client, auth, served), predicted(client, auth, served)
    assert services.serving.writer.flush(10)
    assert send(client, auth, served, [first], role="approver").status_code == 403

    approver = identities["approver"]["name"]
    url = f"/api/v1/models/{served}/policy"
    put = client.put(
        url, headers=auth("admin"), json={"rules": [], "feedback_principals": [approver]}
    )
    assert put.status_code == 200, put.json
    assert put.json["feedback_principals"] == [approver]
    assert client.get(url, headers=auth()).json["feedback_principals"] == [approver]
    events = client.get(
        "/api/v1/audit", headers=auth(), query_string={"model": served, "action": "policy.updated"}
    ).json["events"]
    assert events[0]["before"]["feedback_principals"] == []
    assert events[0]["after"]["feedback_principals"] == [approver]

    listed = send(client, auth, served, [first], role="approver")
    assert listed.status_code == 200 and listed.json["accepted"] == 1
    by_admin = send(client, auth, served, [second], role="admin", actual=0)
    assert by_admin.status_code == 200 and by_admin.json["accepted"] == 1
    # Still nobody else's: the requester is not on the list.
    assert send(client, auth, served, [second], role="requester").status_code == 403
    assert recorded(services, [first, second]) == {
        first: (1, approver),
        second: (0, identities["admin"]["name"]),
    }

    # A policy saved without the list takes the right away again.
    client.put(url, headers=auth("admin"), json={"rules": []})
    assert send(client, auth, served, [first], role="approver").status_code == 403

    bad = client.put(
        url, headers=auth("admin"), json={"rules": [], "feedback_principals": ["Not A Name"]}
    )
    assert bad.status_code == 422 and bad.json["code"] == "validation-error"
    assert bad.json["errors"][0]["field"] == "feedback_principals.0"


def test_a_request_id_of_another_model_is_not_accepted(client, auth, services, served):
    other = f"{served}-other"
    services.models.create_model(CTX, other, None, {})
    rid = predicted(client, auth, served)
    assert services.serving.writer.flush(10)
    for role in ("viewer", "admin"):
        answer = send(client, auth, other, [rid], role=role)
        assert answer.status_code == 200
        assert answer.json == {"accepted": 0, "unknown_request_ids": [rid]}
    assert recorded(services, [rid]) == {}
