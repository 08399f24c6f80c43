"""Predictions from what a model's deployment serves, and ground truth for them."""

from __future__ import annotations

from flask import g, request
from flask.views import MethodView

from registry_service.api import PROBLEM_MIMETYPE, Blueprint, ProblemSchema
from registry_service.auth import current_context
from registry_service.domain.policy import Target
from registry_service.services.container import get_services
from registry_service.serving.resources.predictions.schemas import (
    FeedbackResultSchema,
    FeedbackSchema,
    PredictArgsSchema,
    PredictRequestSchema,
    PredictResponseSchema,
)
from registry_service.serving.service import Pin

blp = Blueprint(
    "predictions",
    __name__,
    url_prefix="/models",
    description="Predictions in MLflow's scoring format, and feedback (ground truth)",
)


def pin_of(args) -> Pin:
    if args.get("version") is not None:
        return Pin(version=args["version"])
    if args.get("stage"):
        return Pin(target=Target.stage(args["stage"]))
    if args.get("alias"):
        return Pin(target=Target.alias(args["alias"]))
    return Pin()


@blp.route("/<string:name>/predict")
class Predict(MethodView):
    @blp.requires(predictor=True)
    @blp.arguments(PredictArgsSchema, location="query")
    @blp.arguments(PredictRequestSchema)
    @blp.response(
        200,
        PredictResponseSchema,
        headers={
            "X-Model-Version": {"schema": {"type": "integer"}},
            "X-Request-ID": {
                "description": "Minted by the service; quote it when sending feedback",
                "schema": {"type": "string"},
            },
            "X-Client-Request-ID": {
                "description": "The caller's X-Request-ID, when it sent a valid one",
                "schema": {"type": "string"},
            },
        },
    )
    @blp.problems(
        not_found="No such model, version, or nobody holds the target",
        forbidden="The version, or Archived, holds no governed target (version-not-servable)",
        unavailable="Neither the holder nor its fallback can answer",
    )
    def post(self, args, body, name):
        """Predict with the version the deployment routes to (or a pinned one)"""
        serving = get_services().serving
        result = serving.predict(
            current_context(), name, body, pin=pin_of(args), headers=request.headers
        )
        return (
            {
                "predictions": result.predictions,
                "model_version": result.model_version,
                "variant": result.variant,
                "served_from": result.served_from,
                "fallback": result.fallback,
                "request_id": result.request_id or g.request_id,
                "client_request_id": g.get("client_request_id"),
            },
            200,
            {"X-Model-Version": str(result.model_version)},
        )


@blp.route("/<string:name>/feedback")
class Feedback(MethodView):
    @blp.requires(predictor=True)
    @blp.arguments(FeedbackSchema)
    @blp.response(200, FeedbackResultSchema)
    @blp.alt_response(
        403,
        schema=ProblemSchema,
        description="feedback-not-allowed: some predictions were made by another principal "
        "and the caller is neither in the policy's feedback_principals nor an admin; "
        "refused_request_ids names them and nothing is recorded",
        content_type=PROBLEM_MIMETYPE,
    )
    def post(self, body, name):
        """Record ground truth for predictions, by their request id (the predicting
        principal, the model's feedback principals and admins only)"""
        return get_services().feedback.record(current_context(), g.principal, name, body["items"])
