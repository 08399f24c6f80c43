"""Webhook pieces with no network: event filters, secrets, backoff, payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from registry_service.db.models import AuditEventRow, PromotionRequestRow
from registry_service.errors import ValidationError
from registry_service.integrations.outbox import matches
from registry_service.integrations.webhooks import (
    backoff,
    check_events,
    check_secret,
    check_url,
    render,
)

AT = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def event(action="promotion.requested", subject="promotion:12", **fields):
    return AuditEventRow(
        seq=41,
        occurred_at=AT,
        actor="rita",
        action=action,
        model_name="churn",
        model_version=3,
        request_id="req-1",
        subject=subject,
        before=None,
        after={"request_id": 12, "reason": "better <auc> & recall"},
        **fields,
    )


REQUEST = PromotionRequestRow(
    id=12,
    kind="promotion",
    model_name="churn",
    version=3,
    target_type="stage",
    target="Production",
    requester="rita",
    reason="better <auc> & recall",
    rule={"required_approvals": 2},
    status="pending",
)


def test_event_filters_are_globs_over_audit_actions():
    assert matches(["promotion.*"], "promotion.requested")
    assert not matches(["promotion.*"], "alert.firing")
    assert matches(["alert.firing", "model.out_of_band_change"], "model.out_of_band_change")
    assert matches(["*"], "anything.at_all")
    assert check_events(["alert.*", "promotion.*", "alert.*"]) == ["alert.*", "promotion.*"]
    for bad in ([], ["Promotion.*"], ["a b"], ["x" * 65], ["promotion.\x00"]):
        with pytest.raises(ValidationError):
            check_events(bad)


def test_urls_and_secrets_are_checked():
    assert check_url("https://hooks.example.com/x?y=1")
    for bad in ("ftp://x", "http://", "/relative", "https://user:pw@example.com/"):
        with pytest.raises(ValidationError) as info:
            check_url(bad)
        assert info.value.errors[0]["field"] == "url"
    made = check_secret(None)
    assert made.startswith("whsec_") and made != check_secret(None)
    Webhook(made)  # the library accepts what we make
    assert check_secret(made) == made
    for bad in ("plain", "whsec_!!!", "whsec_" + "QUFB"):  # not base64 / too short
        with pytest.raises(ValidationError):
            check_secret(bad)


def test_backoff_doubles_with_jitter_up_to_an_hour():
    waits = [backoff(n, 5.0) for n in range(1, 16)]
    assert 4.0 <= waits[0] <= 6.0 and 8.0 <= waits[1] <= 12.0
    assert all(w <= 3600 * 1.2 for w in waits) and waits[-1] >= 3600 * 0.8
    assert backoff(10_000, 5.0) <= 3600 * 1.2  # no overflow however long it fails


def test_standard_payload_names_the_request_and_where_to_review_it():
    body = json.loads(render(event(), "standard", "https://reg.example.com", {12: REQUEST}))
    assert body["type"] == "promotion.requested" and body["timestamp"] == AT.isoformat()
    data = body["data"]
    assert data["seq"] == 41 and data["actor"] == "rita" and data["model_version"] == 3
    assert data["promotion"]["required_approvals"] == 2
    assert data["promotion"]["url"] == "https://reg.example.com/api/v1/promotions/12"
    assert data["promotion"]["target"] == "stage Production"
    # Other events have no promotion block.
    plain = json.loads(render(event("model.updated", None), "standard", "http://x", {}))
    assert "promotion" not in plain["data"] and plain["data"]["links"] == {}


def test_slack_payload_is_a_message_with_escaped_text():
    body = json.loads(render(event(), "slack", "https://reg.example.com", {12: REQUEST}))
    assert set(body) == {"text"}
    text = body["text"]
    assert "*rita* requests promotion of *churn* version 3 to stage Production" in text
    assert "better &lt;auc&gt; &amp; recall" in text and "<auc>" not in text
    assert "<https://reg.example.com/review|Review>" in text
    other = json.loads(render(event("alert.firing", None), "slack", "http://x", {}))["text"]
    assert other == "`alert.firing` on *churn* version 3 by rita"
