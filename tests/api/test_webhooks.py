"""The webhooks resource: admin only, validated, audited without its secret, and an
outbox row per matching event written with the event."""

from __future__ import annotations

import json

import pytest

WEBHOOKS = "/api/v1/webhooks"


@pytest.fixture
def webhook(client, auth):
    answer = client.post(
        WEBHOOKS,
        headers=auth("admin"),
        json={"url": "http://127.0.0.1:9/hook", "events": ["model.*"], "description": "t"},
    )
    assert answer.status_code == 201, answer.json
    yield answer.json
    client.delete(f"{WEBHOOKS}/{answer.json['id']}", headers=auth("admin"))


def test_only_admins_manage_webhooks(client, auth):
    body = {"url": "https://hooks.example.com/x", "events": ["*"]}
    for role in ("viewer", "requester", "approver"):
        answer = client.post(WEBHOOKS, headers=auth(role), json=body)
        assert answer.status_code == 403 and answer.json["code"] == "forbidden"
        assert client.get(WEBHOOKS, headers=auth(role)).status_code == 403
    assert client.get(WEBHOOKS).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://x/y", "events": ["*"]}, "url"),
        ({"url": "https://a:b@x.example.com/", "events": ["*"]}, "url"),
        ({"url": "https://x.example.com/", "events": []}, "events"),
        ({"url": "https://x.example.com/", "events": ["Model Created"]}, "events"),
        ({"url": "https://x.example.com/", "events": ["*"], "format": "teams"}, "format"),
        ({"url": "https://x.example.com/", "events": ["*"], "secret": "hunter2"}, "secret"),
        ({"url": "https://x.example.com/\x00", "events": ["*"]}, "url"),
        ({"url": "https://x.example.com:99999/", "events": ["*"]}, "url"),
    ],
)
def test_bad_webhooks_are_refused_naming_the_field(client, auth, body, field):
    answer = client.post(WEBHOOKS, headers=auth("admin"), json=body)
    assert answer.status_code == 422, answer.json
    assert answer.content_type == "application/problem+json"
    assert field in json.dumps(answer.json["errors"])


def test_events_are_owed_to_matching_webhooks_and_changes_are_audited(
    client, auth, webhook, model_name
):
    assert "secret" in webhook and webhook["pending_deliveries"] == 0
    hook_id = webhook["id"]
    assert (
        client.post(
            "/api/v1/models", headers=auth("requester"), json={"name": model_name}
        ).status_code
        == 201
    )
    owed = client.get(f"{WEBHOOKS}/{hook_id}/deliveries", headers=auth("admin")).json
    (delivery,) = [d for d in owed["deliveries"] if d["event_type"] == "model.created"]
    assert delivery["status"] == "pending" and delivery["attempts"] == 0
    assert delivery["message_id"].startswith("msg_")
    assert (
        client.get(f"{WEBHOOKS}/{hook_id}", headers=auth("admin")).json["pending_deliveries"] >= 1
    )

    paused = client.patch(f"{WEBHOOKS}/{hook_id}", headers=auth("admin"), json={"enabled": False})
    assert paused.status_code == 200 and paused.json["enabled"] is False
    assert paused.json["disabled_reason"].startswith("disabled by ")
    # Paused, it is still owed what happens: nothing is lost while it is off.
    client.patch(
        f"/api/v1/models/{model_name}", headers=auth("requester"), json={"description": "x"}
    )
    after = client.get(f"{WEBHOOKS}/{hook_id}/deliveries", headers=auth("admin")).json
    (owed,) = [d for d in after["deliveries"] if d["event_type"] == "model.updated"]
    assert owed["status"] == "pending" and owed["attempts"] == 0

    events = client.get(
        "/api/v1/audit", headers=auth(), query_string={"subject": f"webhook:{hook_id}"}
    ).json["events"]
    assert [e["action"] for e in events] == ["webhook.updated", "webhook.created"]
    assert webhook["secret"] not in json.dumps(events)

    missing = client.get(
        f"{WEBHOOKS}/{hook_id}/deliveries/999999999/redeliver", headers=auth("admin")
    )
    assert missing.status_code == 405
    gone = client.post(
        f"{WEBHOOKS}/{hook_id}/deliveries/999999999/redeliver", headers=auth("admin")
    )
    assert gone.status_code == 404 and gone.json["code"] == "delivery-not-found"
    assert client.delete(f"{WEBHOOKS}/{hook_id}", headers=auth("admin")).status_code == 204
    none = client.get(f"{WEBHOOKS}/{hook_id}", headers=auth("admin"))
    assert none.status_code == 404 and none.json["code"] == "webhook-not-found"
