"""The bodies of webhook deliveries: the Standard Webhooks envelope, or a Slack message."""

from __future__ import annotations

import json
from typing import Any

from registry_service.db.models import AuditEventRow, PromotionRequestRow


def render(
    event: AuditEventRow,
    format: str,
    public_url: str,
    promotions: dict[int, PromotionRequestRow] | None = None,
) -> str:
    """The body of a delivery: the Standard Webhooks envelope, or a Slack message."""
    data: dict[str, Any] = {
        "seq": event.seq,
        "action": event.action,
        "actor": event.actor,
        "occurred_at": event.occurred_at.isoformat(),
        "model_name": event.model_name,
        "model_version": event.model_version,
        "subject": event.subject,
        "before": event.before,
        "after": event.after,
        "http_request_id": event.request_id,
        "links": {"audit": f"{public_url}/api/v1/audit?subject={event.subject}"}
        if event.subject
        else {},
    }
    promotion = None
    if event.subject and event.subject.startswith("promotion:"):
        promotion = (promotions or {}).get(int(event.subject.split(":", 1)[1]))
    if promotion is not None:
        data["promotion"] = {
            "id": promotion.id,
            "kind": promotion.kind,
            "model_name": promotion.model_name,
            "version": promotion.version,
            "target": f"{promotion.target_type} {promotion.target}",
            "requester": promotion.requester,
            "reason": promotion.reason,
            "required_approvals": (promotion.rule or {}).get("required_approvals"),
            "status": promotion.status,
            "url": f"{public_url}/api/v1/promotions/{promotion.id}",
            "review_url": f"{public_url}/review",
        }
    if format == "slack":
        return json.dumps({"text": slack_text(data)}, separators=(",", ":"))
    envelope = {"type": event.action, "timestamp": event.occurred_at.isoformat(), "data": data}
    return json.dumps(envelope, separators=(",", ":"), default=str)


def _esc(text: Any) -> str:
    """Slack's mrkdwn escapes: &, < and > only."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(data: dict[str, Any]) -> str:
    p = data.get("promotion")
    if p is not None and data["action"] == "promotion.requested":
        return (
            f":inbox_tray: *{_esc(p['requester'])}* requests {_esc(p['kind'])} of "
            f"*{_esc(p['model_name'])}* version {p['version']} to {_esc(p['target'])}: "
            f"_{_esc(p['reason'])}_\n"
            f"Needs {p['required_approvals']} approval(s). <{p['review_url']}|Review> · "
            f"<{p['url']}|Request {p['id']}>"
        )
    if p is not None:
        verb = data["action"].removeprefix("promotion.").replace("_", " ")
        return (
            f"Request <{p['url']}|{p['id']}> ({_esc(p['model_name'])} v{p['version']} to "
            f"{_esc(p['target'])}) {_esc(verb)} by {_esc(data['actor'])}; now {p['status']}"
        )
    where = ""
    if data.get("model_name"):
        where = f" on *{_esc(data['model_name'])}*"
        if data.get("model_version") is not None:
            where += f" version {data['model_version']}"
    return f"`{_esc(data['action'])}`{where} by {_esc(data['actor'])}"
