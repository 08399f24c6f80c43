"""Webhooks: signed deliveries of audit events to other tools (admin)."""

from __future__ import annotations

from dataclasses import asdict, replace

from flask import g
from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.auth import current_context
from registry_service.domain.entities import Role
from registry_service.integrations.resources.webhooks.schemas import (
    DeliveryArgsSchema,
    DeliveryPageSchema,
    DeliverySchema,
    WebhookCreatedSchema,
    WebhookInSchema,
    WebhookListSchema,
    WebhookPatchSchema,
    WebhookSchema,
)
from registry_service.integrations.webhooks import Webhook, redact_url
from registry_service.services.container import get_services

blp = Blueprint(
    "webhooks",
    __name__,
    url_prefix="/webhooks",
    description="Audit events POSTed to other tools, signed the Standard Webhooks way, "
    "retried for a day, never lost",
)


def shown(webhook: Webhook) -> Webhook:
    """The full URL for admins; for anyone else, scheme, host and a fingerprint (every
    route here is admin-only today: this keeps a wider read role from leaking URLs)."""
    if g.principal.has_role(Role.ADMIN):
        return webhook
    return replace(webhook, url=redact_url(webhook.url))


@blp.route("")
class Webhooks(MethodView):
    @blp.requires(Role.ADMIN)
    @blp.response(200, WebhookListSchema)
    def get(self):
        """List webhooks (never their secrets)"""
        return {"webhooks": [shown(w) for w in get_services().webhooks.list()]}

    @blp.requires(Role.ADMIN)
    @blp.arguments(WebhookInSchema)
    @blp.response(201, WebhookCreatedSchema)
    def post(self, body):
        """Register a webhook; its signing secret is shown in this answer only"""
        webhook, secret = get_services().webhooks.create(
            current_context(),
            body["url"],
            body["events"],
            body["format"],
            body["secret"],
            body["description"],
        )
        return {**asdict(shown(webhook)), "secret": secret}


@blp.route("/<int:webhook_id>")
class WebhookItem(MethodView):
    @blp.requires(Role.ADMIN)
    @blp.response(200, WebhookSchema)
    @blp.problems(not_found="No such webhook")
    def get(self, webhook_id):
        """Show a webhook"""
        return shown(get_services().webhooks.get(webhook_id))

    @blp.requires(Role.ADMIN)
    @blp.arguments(WebhookPatchSchema)
    @blp.response(200, WebhookSchema)
    @blp.problems(not_found="No such webhook")
    def patch(self, body, webhook_id):
        """Change a webhook; enabled=true resumes one that was disabled (audited)"""
        return shown(get_services().webhooks.update(current_context(), webhook_id, body))

    @blp.requires(Role.ADMIN)
    @blp.response(204)
    @blp.problems(not_found="No such webhook")
    def delete(self, webhook_id):
        """Remove a webhook and its delivery log (audited)"""
        get_services().webhooks.delete(current_context(), webhook_id)


@blp.route("/<int:webhook_id>/deliveries")
class Deliveries(MethodView):
    @blp.requires(Role.ADMIN)
    @blp.arguments(DeliveryArgsSchema, location="query")
    @blp.response(200, DeliveryPageSchema)
    @blp.problems(not_found="No such webhook")
    def get(self, args, webhook_id):
        """List a webhook's deliveries with their attempts, newest first"""
        page = get_services().webhooks.deliveries(
            webhook_id, args["status"], args["max_results"], args["page_token"]
        )
        return {"deliveries": page.items, "next_page_token": page.next_page_token}


@blp.route("/<int:webhook_id>/deliveries/<int:delivery_id>/redeliver")
class Redelivery(MethodView):
    @blp.requires(Role.ADMIN)
    @blp.response(202, DeliverySchema)
    @blp.problems(not_found="No such webhook or delivery")
    def post(self, webhook_id, delivery_id):
        """Send a delivery again with the same webhook-id (audited)"""
        return get_services().webhooks.redeliver(current_context(), webhook_id, delivery_id)
