"""Alerts: rules from each model's monitoring policy, evaluated by the sweep or on demand."""

from __future__ import annotations

from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.auth import current_context
from registry_service.domain.entities import Role
from registry_service.monitoring.resources.alerts.schemas import (
    AlertArgsSchema,
    AlertSchema,
    EvaluateArgsSchema,
    ResolveSchema,
)
from registry_service.services.container import get_services

blp = Blueprint(
    "alerts",
    __name__,
    url_prefix="/alerts",
    description="Alerts fired and resolved by the rules in model policies (audited)",
)


@blp.route("")
class Alerts(MethodView):
    @blp.requires()
    @blp.arguments(AlertArgsSchema, location="query")
    @blp.response(200, AlertSchema(many=True))
    def get(self, args):
        """List alerts, newest first (filter by model and state)"""
        return get_services().monitoring.list_alerts(
            args["model_name"], args["state"], args["max_results"]
        )


@blp.route("/<int:alert_id>/resolve")
class AlertResolution(MethodView):
    @blp.requires(Role.APPROVER)
    @blp.arguments(ResolveSchema)
    @blp.response(200, AlertSchema)
    @blp.problems(not_found="No such alert", conflict="The alert is not firing")
    def post(self, body, alert_id):
        """Resolve a firing alert by hand, with a comment (approver; audited)"""
        ctx = current_context()
        return get_services().monitoring.resolve_alert(
            ctx, alert_id, {"resolved_by": ctx.actor, "comment": body["comment"]}
        )


@blp.route("/evaluate")
class AlertEvaluation(MethodView):
    @blp.requires(Role.APPROVER)
    @blp.arguments(EvaluateArgsSchema, location="query")
    @blp.response(200, AlertSchema(many=True))
    def post(self, args):
        """Evaluate alert rules now; answers the alerts that fired or resolved"""
        return get_services().monitoring.evaluate_alerts(current_context(), args["model_name"])
