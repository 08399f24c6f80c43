"""Promotion requests: the governed way a version reaches a stage or alias."""

from __future__ import annotations

import logging

from flask import g
from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.auth import current_context
from registry_service.domain.entities import Role
from registry_service.domain.policy import Target
from registry_service.domain.promotion import Status
from registry_service.resources import idempotent
from registry_service.resources.promotions.schemas import (
    ApproveSchema,
    CancelSchema,
    CommentCreateSchema,
    PromotionCreateSchema,
    PromotionDetailSchema,
    PromotionListArgsSchema,
    PromotionPageSchema,
    RejectSchema,
)
from registry_service.services.container import get_services
from registry_service.services.promotions import PromotionFilter

log = logging.getLogger(__name__)

blp = Blueprint(
    "promotions",
    __name__,
    url_prefix="/promotions",
    description="Request, approve and execute moves of versions to stages and aliases",
)


def _promotions():
    return get_services().promotions


def _location(body, status: int) -> dict[str, str]:
    return {"Location": f"/api/v1/promotions/{body['id']}"}


@blp.route("")
class Promotions(MethodView):
    @blp.requires()
    @blp.arguments(PromotionListArgsSchema, location="query")
    @blp.response(200, PromotionPageSchema)
    def get(self, args):
        """List promotion requests, newest first"""
        page = _promotions().list(
            PromotionFilter(
                model_name=args["model"],
                status=Status(args["status"]) if args["status"] else None,
                requester=args["requester"],
                actionable_for=g.principal if args["actionable"] else None,
            ),
            args["max_results"],
            args["page_token"],
        )
        return {"promotions": page.items, "next_page_token": page.next_page_token}

    @blp.requires(Role.REQUESTER)
    @blp.arguments(PromotionCreateSchema)
    @blp.response(201, PromotionDetailSchema)
    @blp.problems(
        not_found="No such model or version",
        conflict="An open request for this version and target exists (existing_request_id), "
        "the version already holds the target, the quorum is unreachable, or a call with "
        "this Idempotency-Key is still in flight",
    )
    @blp.doc(parameters=[idempotent.PARAMETER])
    def post(self, body):
        """Request a promotion of a version to a stage or alias"""
        target = (
            Target.stage(body["target_stage"])
            if "target_stage" in body
            else Target.alias(body["target_alias"])
        )

        def create():
            promotion = _promotions().create(
                current_context(),
                g.principal,
                body["model_name"],
                body["version"],
                target,
                body["reason"],
                body["archive_existing_versions"],
            )
            return PromotionDetailSchema().dump(promotion), 201

        return idempotent.once(create, _location)


@blp.route("/<id:request_id>")
class PromotionRequest(MethodView):
    @blp.requires()
    @blp.response(200, PromotionDetailSchema)
    @blp.problems(not_found="No such request")
    def get(self, request_id):
        """Show a request: the candidate beside the champion, approvals, audit trail"""
        return _promotions().get(request_id, with_comparison=True)


@blp.route("/<id:request_id>/approve")
class Approve(MethodView):
    @blp.requires(Role.APPROVER)
    @blp.arguments(ApproveSchema)
    @blp.response(200, PromotionDetailSchema)
    @blp.problems(
        not_found="No such request",
        conflict="Already approved by you, or the request is no longer pending (expired, "
        "rejected, cancelled, executed)",
    )
    def post(self, body, request_id):
        """Approve; the approval that completes the quorum executes the move"""
        return _promotions().approve(current_context(), g.principal, request_id, body["comment"])


@blp.route("/<id:request_id>/reject")
class Reject(MethodView):
    @blp.requires(Role.APPROVER)
    @blp.arguments(RejectSchema)
    @blp.response(200, PromotionDetailSchema)
    @blp.problems(not_found="No such request", conflict="The request is no longer pending")
    def post(self, body, request_id):
        """Reject with a comment; one rejection ends the request"""
        return _promotions().reject(current_context(), g.principal, request_id, body["comment"])


@blp.route("/<id:request_id>/cancel")
class Cancel(MethodView):
    @blp.requires()
    @blp.arguments(CancelSchema)
    @blp.response(200, PromotionDetailSchema)
    @blp.problems(
        not_found="No such request",
        conflict="The request already ended, or its execution started (retry settles it)",
    )
    def post(self, body, request_id):
        """Cancel a request (its requester or an admin)"""
        return _promotions().cancel(current_context(), g.principal, request_id, body["comment"])


@blp.route("/<id:request_id>/comments")
class Comments(MethodView):
    @blp.requires()
    @blp.arguments(CommentCreateSchema)
    @blp.response(201, PromotionDetailSchema)
    @blp.problems(not_found="No such request")
    def post(self, body, request_id):
        """Comment on a request"""
        return _promotions().comment(current_context(), g.principal, request_id, body["comment"])


@blp.route("/<id:request_id>/retry")
class Retry(MethodView):
    @blp.requires(Role.ADMIN)
    @blp.response(200, PromotionDetailSchema)
    @blp.problems(
        not_found="No such request",
        conflict="Only failed or approved requests can be retried; or a newer request "
        "holds the same version and target",
    )
    def post(self, request_id):
        """Execute a failed (or interrupted) approved request again"""
        return _promotions().retry(current_context(), g.principal, request_id)
