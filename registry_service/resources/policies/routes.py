"""Who must approve a promotion, per model and target."""

from __future__ import annotations

from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.auth import current_context
from registry_service.domain.entities import Role
from registry_service.resources.policies.schemas import PolicyPutSchema, PolicySchema
from registry_service.services.container import get_services

blp = Blueprint(
    "policies",
    __name__,
    url_prefix="/models",
    description="Promotion policies: required approvals, eligible approvers, expiry",
)


@blp.route("/<string:name>/policy")
class ModelPolicy(MethodView):
    @blp.requires()
    @blp.response(200, PolicySchema)
    @blp.problems(not_found="No such model")
    def get(self, name):
        """Show the promotion policy in force for a model"""
        return get_services().policies.get(name)

    @blp.requires(Role.ADMIN)
    @blp.arguments(PolicyPutSchema)
    @blp.response(200, PolicySchema)
    @blp.problems(not_found="No such model")
    def put(self, body, name):
        """Replace a model's promotion rules, auto-promotion, monitoring, out-of-band
        response and feedback principals (audited)"""
        return get_services().policies.replace(
            current_context(),
            name,
            body["rules"],
            body["auto_promotion"],
            body["monitoring"],
            body["out_of_band"],
            feedback_principals=body["feedback_principals"],
            allow_unsafe_artifacts=body["allow_unsafe_artifacts"],
        )
