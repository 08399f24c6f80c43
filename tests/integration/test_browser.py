"""Approvers in a real browser: Debian's Chromium driven by Playwright, against the
service under gunicorn on PostgreSQL and a real `mlflow server`.

These fail, never skip, when a page does not render: `make test` installs Chromium.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from registry_service.services.context import Context
from tests.conftest import get_services_of

CTX = Context(actor="test-setup")
CHROMIUM_FLAGS = [
    "--no-sandbox",  # the suite may run as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / ".registry" / "screenshots"


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium is not installed: `make test` installs Debian's chromium package"
    return found


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page_errors() -> list[str]:
    """What the page reported as errors; a test expecting one removes it."""
    return []


@pytest.fixture
def page(browser, live_server, request, page_errors):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    outside, errors = [], page_errors
    page.on(
        "request",
        lambda r: None if r.url.startswith((live_server.url, "data:")) else outside.append(r.url),
    )
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert outside == [], "the page loaded assets from outside the service"
    assert errors == [], "the page reported errors"


@pytest.fixture
def model(app, model_name, make_run, client, auth):
    services = get_services_of(app)
    services.models.create_model(CTX, model_name, None, {})
    for auc, depth in ((0.81, "4"), (0.88, "6")):
        run_id = make_run(metrics={"auc": auc, "log_loss": 1 - auc}, params={"depth": depth})
        services.models.register_version(CTX, model_name, run_id, "model", None, {})
    policy = client.put(
        f"/api/v1/models/{model_name}/policy",
        headers=auth("admin"),
        json={"rules": [{"target_stage": "Production", "required_approvals": 1}]},
    )
    assert policy.status_code == 200, policy.json
    return model_name


def open_request(client, auth, model, version) -> int:
    response = client.post(
        "/api/v1/promotions",
        headers=auth("requester"),
        json={
            "model_name": model,
            "version": version,
            "target_stage": "Production",
            "reason": f"v{version} beats the champion",
        },
    )
    assert response.status_code == 201, response.json
    return response.json["id"]


def authorize_swagger(page: Page, token: str) -> None:
    page.locator(".auth-wrapper .btn.authorize").click()
    dialog = page.locator(".modal-ux")
    dialog.locator("input").first.fill(token)
    dialog.locator("button.authorize").click()
    expect(dialog.locator("button", has_text="Logout")).to_be_visible()
    dialog.locator("button.btn-done").click()


def test_swagger_ui_renders_and_an_approver_executes_a_request(
    page, live_server, client, auth, identities, model
):
    request_id = open_request(client, auth, model, 1)
    page.goto(f"{live_server.url}/api/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    assert "Unable to render" not in page.content()
    assert page.locator(".opblock").count() >= 30
    # Approvers' section first, and nullable types read as such.
    expect(page.locator(".opblock-tag").first).to_have_attribute("data-tag", "promotions")
    authorize_swagger(page, identities["approver"]["token"])

    approve = page.locator(".opblock-post").filter(
        has=page.locator('[data-path="/api/v1/promotions/{request_id}/approve"]')
    )
    approve.locator(".opblock-summary").click()
    # Try-it-out is on from the start (tryItOutEnabled): the button offers to cancel.
    expect(approve.locator(".try-out__btn")).to_have_text("Cancel")
    approve.locator('tr[data-param-name="request_id"] input').fill(str(request_id))
    body = approve.locator("textarea.body-param__text")
    expect(body).to_have_value(re.compile(r'"comment"'))  # the documented example
    body.fill('{"comment": "checked in Swagger UI"}')
    approve.locator(".btn.execute").click()
    live = approve.locator(".live-responses-table")
    expect(live.locator("tr.response .response-col_status").first).to_have_text("200")
    expect(live.locator(".microlight").first).to_contain_text('"status": "executed"')

    done = client.get(f"/api/v1/promotions/{request_id}", headers=auth()).json
    assert done["status"] == "executed"
    assert done["approvals"][0]["approver"] == identities["approver"]["name"]
    assert done["approvals"][0]["comment"] == "checked in Swagger UI"


def test_review_page_compares_with_the_champion_and_approves(
    page, live_server, client, auth, identities, model
):
    champion = open_request(client, auth, model, 1)
    approved = client.post(
        f"/api/v1/promotions/{champion}/approve", headers=auth("approver"), json={}
    )
    assert approved.json["status"] == "executed"
    request_id = open_request(client, auth, model, 2)

    page.goto(f"{live_server.url}/review")
    page.locator("#token").fill(identities["approver2"]["token"])
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#identity")).to_contain_text(identities["approver2"]["name"])
    item = page.locator(f'#requests li[data-request-id="{request_id}"]')
    expect(item).to_contain_text(f"{model} v2")
    item.click()

    comparison = page.locator("#comparison")
    expect(comparison).to_contain_text("against champion v1")
    auc = comparison.locator("tr", has=page.locator("td", has_text=re.compile(r"^auc")))
    expect(auc.locator("td").nth(1)).to_have_text("0.81")  # champion
    expect(auc.locator("td").nth(2)).to_have_text("0.88")  # candidate
    expect(auc.locator("td.verdict")).to_have_text("candidate better")
    expect(comparison).to_contain_text("depth")  # params that differ
    expect(comparison).to_contain_text("changed since registration")
    evidence = client.get(f"/api/v1/promotions/{request_id}", headers=auth()).json["evidence"]
    expect(page.locator("#manifest-digest")).to_have_text(evidence["artifacts"]["manifest_digest"])
    expect(page.locator("#scan-verdict")).to_have_text("clean")

    page.locator("#decision-comment").fill("better AUC, same data")
    page.locator("#approve").click()
    expect(page.locator("#status")).to_have_text("executed")
    expect(page.locator("#decision-result")).to_contain_text("now executed")
    expect(comparison).to_contain_text("against champion v1")  # still there to read
    # It leaves the approver's list once executed.
    expect(page.locator(f'#requests li[data-request-id="{request_id}"]')).to_have_count(0)

    done = client.get(f"/api/v1/promotions/{request_id}", headers=auth()).json
    assert done["status"] == "executed"
    assert done["approvals"][0]["comment"] == "better AUC, same data"


def test_review_page_shows_a_traffic_change_and_approves_it(
    page, live_server, client, auth, identities, model
):
    champion = open_request(client, auth, model, 1)
    approved = client.post(
        f"/api/v1/promotions/{champion}/approve", headers=auth("approver"), json={}
    )
    assert approved.json["status"] == "executed"
    url = f"/api/v1/models/{model}/deployment"
    etag = client.get(url, headers=auth()).headers["ETag"]
    split = {
        "variants": [
            {"name": "champion", "target_stage": "Production", "weight": 90},
            {"name": "canary", "target_stage": "Staging", "weight": 10},
        ]
    }
    asked = client.put(url, headers={**auth("approver"), "If-Match": etag}, json=split)
    assert asked.status_code == 202, asked.json

    page.goto(f"{live_server.url}/review")
    page.locator("#token").fill(identities["approver2"]["token"])
    page.get_by_role("button", name="Use token").click()
    item = page.locator(f'#requests li[data-request-id="{asked.json["id"]}"]')
    expect(item).to_contain_text("traffic")
    item.click()
    expect(page.locator("#deployment-before")).to_contain_text("Production")
    expect(page.locator("#deployment-before")).to_contain_text("100%")
    expect(page.locator("#deployment-after")).to_contain_text("Staging")
    expect(page.locator("#deployment-after")).to_contain_text("10%")
    page.locator("#approve").click()
    expect(page.locator("#status")).to_have_text("executed")
    stored = client.get(url, headers=auth()).json
    assert [v["weight"] for v in stored["variants"]] == [90, 10]


def test_review_page_refuses_a_bad_token(page, live_server, page_errors):
    page.goto(f"{live_server.url}/review")
    expect(page.locator("#workspace")).to_be_hidden()
    page.locator("#token").fill("rs_not-a-token")
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#signin-error")).to_contain_text("not valid")
    expect(page.locator("#workspace")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0  # the bad token is not kept
    assert len(page_errors) == 1 and "401" in page_errors[0]  # the refused whoami
    page_errors.clear()
