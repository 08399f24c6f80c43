"""A/B tests: a champion and a challenger on a split, judged by a statistical test."""

from __future__ import annotations

from flask import g
from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.auth import current_context
from registry_service.domain.entities import Role
from registry_service.monitoring.resources.abtests.schemas import (
    AbTestInSchema,
    AbTestSchema,
    ConcludeSchema,
)
from registry_service.resources import idempotent
from registry_service.resources.promotions.schemas import PromotionDetailSchema
from registry_service.services.container import get_services

blp = Blueprint(
    "ab-tests",
    __name__,
    url_prefix="/models",
    description="A/B tests: the split is a traffic change request, and the test starts "
    "when its quorum approves it; the split is restored on conclusion; a better challenger "
    "gets a promotion request, which still needs its quorum",
)


@blp.route("/<string:name>/ab-tests")
class AbTests(MethodView):
    @blp.requires()
    @blp.response(200, AbTestSchema(many=True))
    @blp.problems(not_found="No such model")
    def get(self, name):
        """List a model's A/B tests, newest first"""
        return get_services().monitoring.list_ab_tests(name)

    @blp.requires(Role.APPROVER)
    @blp.arguments(AbTestInSchema)
    @blp.response(
        202,
        PromotionDetailSchema,
        description="The test's split as a traffic change request; the test starts when "
        "the request executes, and its id is the request's outcome.ab_test_id",
        headers={"Location": {"schema": {"type": "string"}}},
    )
    @blp.problems(
        not_found="No such model",
        conflict="A test is running, or a target has no holder, or both hold one version, "
        "or a traffic change request is open (existing_request_id)",
        precondition_failed="The deployment changed while the split was built",
        precondition_required="A deployment was set while the split was built",
    )
    @blp.doc(parameters=[idempotent.PARAMETER])
    def post(self, body, name):
        """Request an A/B test: its split is a traffic change needing its quorum"""

        def start():
            change = get_services().monitoring.start_ab_test(
                current_context(),
                g.principal,
                name,
                body["champion"],
                body["challenger"],
                body["challenger_share"],
                body["metric"],
                body["min_samples"],
                body["alpha"],
                body["max_hours"],
                body["sticky_by"],
            )
            return PromotionDetailSchema().dump(change), 202

        return idempotent.once(
            start, lambda out, _: {"Location": f"/api/v1/promotions/{out['id']}"}
        )


@blp.route("/<string:name>/ab-tests/<int:test_id>")
class AbTest(MethodView):
    @blp.requires()
    @blp.response(200, AbTestSchema)
    @blp.problems(not_found="No such A/B test on this model")
    def get(self, name, test_id):
        """Show an A/B test with its live analysis"""
        return get_services().monitoring.get_ab_test(name, test_id)


@blp.route("/<string:name>/ab-tests/<int:test_id>/conclude")
class AbTestConclusion(MethodView):
    @blp.requires(Role.APPROVER)
    @blp.arguments(ConcludeSchema)
    @blp.response(200, AbTestSchema)
    @blp.problems(not_found="No such A/B test on this model", conflict="Already concluded")
    def post(self, body, name, test_id):
        """Conclude an A/B test: restore the split; a better challenger gets a request"""
        return get_services().monitoring.conclude_ab_test(
            current_context(), g.principal, name, test_id, body["reason"]
        )
