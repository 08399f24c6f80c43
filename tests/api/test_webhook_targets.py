"""Webhook targets over the API: internal addresses refused when a webhook is registered
or changed and again at every delivery, the allow-list for internal receivers, and
webhook URLs kept out of what non-admins read."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from flask import g

from registry_service.domain.entities import Principal
from registry_service.integrations.resources.webhooks.routes import shown
from registry_service.services.context import Context
from tests.conftest import get_services_of

WEBHOOKS = "/api/v1/webhooks"
SLACK = "https://hooks.slack.com/services/T0AAAA/B0BBBB/s3cr3tT0k3n?channel=c9"


@pytest.fixture
def strict(app, monkeypatch):
    """The app with no allow-list: only public addresses may be called."""
    monkeypatch.setattr(get_services_of(app).webhooks, "allowed", ())
    return app


@pytest.fixture
def receiver():
    """A loopback receiver counting what reaches it."""
    got: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", got
    server.shutdown()
    server.server_close()


@pytest.fixture
def cleanup(client, auth):
    made: list[int] = []
    yield made
    for hook_id in made:
        client.delete(f"{WEBHOOKS}/{hook_id}", headers=auth("admin"))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.9/hook",
        "http://192.168.10.20/hook",
        "http://100.64.0.1/hook",
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:127.0.0.1]:9/hook",
        "http://localhost:9/hook",
        "http://0.0.0.0:9/hook",
    ],
)
def test_internal_targets_are_refused_on_registration(client, auth, strict, url):
    answer = client.post(WEBHOOKS, headers=auth("admin"), json={"url": url, "events": ["*"]})
    assert answer.status_code == 422, answer.json
    assert answer.json["code"] == "webhook-target-refused"
    assert answer.json["errors"][0]["field"] == "url"


def test_internal_targets_are_refused_on_change(client, auth, strict, cleanup):
    created = client.post(
        WEBHOOKS, headers=auth("admin"), json={"url": SLACK, "events": ["model.*"]}
    )
    assert created.status_code == 201, created.json
    cleanup.append(created.json["id"])
    changed = client.patch(
        f"{WEBHOOKS}/{created.json['id']}",
        headers=auth("admin"),
        json={"url": "http://[::ffff:169.254.169.254]/latest/meta-data/"},
    )
    assert changed.status_code == 422 and changed.json["code"] == "webhook-target-refused"
    shown_now = client.get(f"{WEBHOOKS}/{created.json['id']}", headers=auth("admin")).json
    assert shown_now["url"] == SLACK


def test_the_allow_list_lets_internal_receivers_in_but_not_metadata(client, auth, cleanup):
    # The suite's app allows 127.0.0.0/8 (REGISTRY_WEBHOOK_ALLOW_NETWORKS).
    for url in ("http://127.0.0.1:9/hook", "http://localhost:9/hook"):
        answer = client.post(WEBHOOKS, headers=auth("admin"), json={"url": url, "events": ["*"]})
        assert answer.status_code == 201, answer.json
        cleanup.append(answer.json["id"])
    for url in ("http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/"):
        answer = client.post(WEBHOOKS, headers=auth("admin"), json={"url": url, "events": ["*"]})
        assert answer.json["code"] == "webhook-target-refused"


def test_every_delivery_checks_the_target_again(app, client, auth, receiver, cleanup, monkeypatch):
    """A webhook whose target is no longer allowed (the setting changed, or its name
    now resolves elsewhere) fails without a connection; allowed again, it delivers."""
    url, got = receiver
    services = get_services_of(app)
    created = client.post(WEBHOOKS, headers=auth("admin"), json={"url": url, "events": ["probe.*"]})
    assert created.status_code == 201, created.json
    hook_id = created.json["id"]
    cleanup.append(hook_id)
    ctx = Context(actor="test-deliveries")
    services.audit.record(ctx, "probe.sent", subject="probe:1")

    with monkeypatch.context() as m:
        m.setattr(services.webhooks, "allowed", ())
        services.webhooks.deliver_due(ctx)
    (delivery,) = client.get(f"{WEBHOOKS}/{hook_id}/deliveries", headers=auth("admin")).json[
        "deliveries"
    ]
    assert got == []  # nothing reached the receiver
    assert delivery["status"] == "pending" and delivery["attempts"] == 1
    assert delivery["last_status_code"] is None
    assert delivery["last_error"].startswith("refused: 127.0.0.1, a loopback address")

    again = client.post(
        f"{WEBHOOKS}/{hook_id}/deliveries/{delivery['id']}/redeliver", headers=auth("admin")
    )
    assert again.status_code == 202
    services.webhooks.deliver_due(ctx)
    assert len(got) == 1 and json.loads(got[0])["type"] == "probe.sent"


def test_webhook_urls_are_redacted_in_the_audit_log(client, auth, cleanup):
    created = client.post(
        WEBHOOKS, headers=auth("admin"), json={"url": SLACK, "events": ["model.*"]}
    )
    assert created.status_code == 201, created.json
    hook_id = created.json["id"]
    assert created.json["url"] == SLACK  # admins see the whole URL
    assert client.get(f"{WEBHOOKS}/{hook_id}", headers=auth("admin")).json["url"] == SLACK
    moved = SLACK.replace("s3cr3tT0k3n", "n3wT0k3n")
    assert (
        client.patch(f"{WEBHOOKS}/{hook_id}", headers=auth("admin"), json={"url": moved})
    ).status_code == 200
    assert client.delete(f"{WEBHOOKS}/{hook_id}", headers=auth("admin")).status_code == 204

    events = client.get(
        "/api/v1/audit", headers=auth("viewer"), query_string={"subject": f"webhook:{hook_id}"}
    ).json["events"]
    assert [e["action"] for e in events] == [
        "webhook.deleted",
        "webhook.updated",
        "webhook.created",
    ]
    text = json.dumps(events, ensure_ascii=False)
    for secret in ("services", "T0AAAA", "s3cr3tT0k3n", "n3wT0k3n", "channel"):
        assert secret not in text
    fingerprint = hashlib.sha256(SLACK.encode()).hexdigest()[:8]
    created_event, updated_event = events[2], events[1]
    assert created_event["after"]["url"] == f"https://hooks.slack.com/…#sha256:{fingerprint}"
    # A change of URL shows as a change of fingerprint.
    assert updated_event["before"]["url"] != updated_event["after"]["url"]
    assert updated_event["after"]["url"].startswith("https://hooks.slack.com/…#sha256:")


def test_non_admins_never_read_webhook_urls(app, client, auth, cleanup):
    created = client.post(
        WEBHOOKS, headers=auth("admin"), json={"url": SLACK, "events": ["model.*"]}
    )
    cleanup.append(created.json["id"])
    for role in ("viewer", "requester", "approver"):
        for path in (WEBHOOKS, f"{WEBHOOKS}/{created.json['id']}"):
            answer = client.get(path, headers=auth(role))
            assert answer.status_code == 403 and answer.json["code"] == "forbidden"
            assert "s3cr3t" not in answer.get_data(as_text=True)
    # Were reading ever opened to other roles, they would get the redacted form.
    webhook = get_services_of(app).webhooks.get(created.json["id"])
    with app.test_request_context():
        g.principal = Principal(id=0, name="vera", roles=frozenset({"viewer"}))
        assert asdict(shown(webhook))["url"].startswith("https://hooks.slack.com/…#sha256:")
        g.principal = Principal(id=1, name="ada", roles=frozenset({"admin"}))
        assert shown(webhook).url == SLACK
