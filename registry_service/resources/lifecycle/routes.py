"""Stage and alias history, one-call rollback, and retention of old versions."""

from __future__ import annotations

from flask import g
from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.auth import current_context
from registry_service.domain.entities import Role
from registry_service.domain.policy import Target
from registry_service.resources.lifecycle.schemas import (
    ArchiveOldSchema,
    DecisionSchema,
    EvaluateSchema,
    HistoryArgsSchema,
    HistorySchema,
    RetentionSchema,
    RollbackSchema,
)
from registry_service.resources.promotions.schemas import PromotionDetailSchema
from registry_service.services.container import get_services

blp = Blueprint(
    "lifecycle",
    __name__,
    url_prefix="/models",
    description="Who held each stage and alias when; rollback; retention",
)


def _target(args) -> Target | None:
    if args.get("target_stage"):
        return Target.stage(args["target_stage"])
    if args.get("target_alias"):
        return Target.alias(args["target_alias"])
    return None


@blp.route("/<string:name>/history")
class History(MethodView):
    @blp.requires()
    @blp.arguments(HistoryArgsSchema, location="query")
    @blp.response(200, HistorySchema)
    @blp.problems(not_found="No such model")
    def get(self, args, name):
        """Which version held each stage and alias when (from the audit log)"""
        return get_services().history.history(name, _target(args), args["at"])


@blp.route("/<string:name>/rollback")
class Rollback(MethodView):
    @blp.requires(Role.REQUESTER)
    @blp.arguments(RollbackSchema)
    @blp.response(201, PromotionDetailSchema)
    @blp.problems(
        not_found="No such model",
        conflict="No earlier holder is recorded, or a rollback request is already open",
    )
    def post(self, body, name):
        """Request the target back to the version that held it before (emergency path)"""
        return get_services().promotions.rollback(
            current_context(), g.principal, name, _target(body), body["reason"]
        )


@blp.route("/<string:name>/archive-old")
class ArchiveOld(MethodView):
    @blp.requires(Role.ADMIN)
    @blp.arguments(ArchiveOldSchema)
    @blp.response(200, RetentionSchema)
    @blp.problems(not_found="No such model")
    def post(self, body, name):
        """Archive versions beyond the newest N, sparing Staging, Production and aliases"""
        return get_services().models.archive_old(current_context(), name, body["keep_latest"])


@blp.route("/<string:name>/versions/<id:version>/evaluate")
class Evaluate(MethodView):
    @blp.requires(Role.REQUESTER)
    @blp.arguments(EvaluateSchema)
    @blp.response(200, DecisionSchema)
    @blp.problems(
        not_found="No such model or version",
        conflict="No auto-promotion criteria, the version is the champion, or an open "
        "request exists",
    )
    def post(self, body, name, version):
        """Compare a challenger with the champion; when it passes, request its promotion"""
        return get_services().evaluation.evaluate(
            current_context(), g.principal, name, version, body["dry_run"]
        )
