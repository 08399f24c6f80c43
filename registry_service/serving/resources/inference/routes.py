"""The Open Inference Protocol (V2) over the same deployments, cache and log.

Without a version in the path, the deployment routes the request as
``POST /api/v1/models/{name}/predict`` does.
"""

from __future__ import annotations

from flask import request
from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.auth import current_context
from registry_service.errors import ServingUnavailable, TargetNotHeld
from registry_service.services.container import get_services
from registry_service.serving import payload
from registry_service.serving.cache import ModelLoadFailed
from registry_service.serving.resources.inference.schemas import (
    V2InferRequestSchema,
    V2InferResponseSchema,
    V2LiveSchema,
    V2ModelMetadataSchema,
    V2ModelReadySchema,
    V2ReadySchema,
)
from registry_service.serving.service import Pin

health_blp = Blueprint(
    "inference-health",
    __name__,
    url_prefix="/v2/health",
    public=True,
    description="Open Inference Protocol (V2) probes",
)
blp = Blueprint(
    "inference",
    __name__,
    url_prefix="/v2/models",
    description="Open Inference Protocol (V2): metadata, readiness and infer",
)


def _serving():
    return get_services().serving


@health_blp.route("/live")
class Live(MethodView):
    @health_blp.doc(security=[])
    @health_blp.response(200, V2LiveSchema)
    def get(self):
        """Serving process is alive"""
        return {"live": True}


@health_blp.route("/ready")
class Ready(MethodView):
    @health_blp.doc(security=[])
    @health_blp.response(200, V2ReadySchema)
    @health_blp.alt_response(503, schema=V2ReadySchema, description="Still preloading")
    def get(self):
        """Serving process has loaded its preloaded deployments"""
        ready = _serving().preloaded is not False
        return {"ready": ready}, 200 if ready else 503


def _loaded(name: str, version: int | None):
    return _serving().model_for(name, version)


class _Metadata(MethodView):
    @blp.requires(predictor=True)
    @blp.response(200, V2ModelMetadataSchema)
    @blp.problems(
        not_found="No such model or version, or nobody holds its targets",
        forbidden="The version holds no governed target (version-not-servable)",
        unavailable="The version cannot be loaded",
    )
    def get(self, name, version=None):
        """Model metadata from its MLflow signature"""
        try:
            loaded = _loaded(name, version)
        except ModelLoadFailed as exc:
            raise ServingUnavailable(str(exc)) from None
        if loaded is None:
            raise TargetNotHeld(f"no version of {name!r} holds a target its deployment serves")
        return {
            "name": name,
            "versions": [str(loaded.version)],
            "platform": "mlflow",
            "inputs": payload.v2_tensor_specs(loaded.input_schema),
            "outputs": payload.v2_tensor_specs(loaded.output_schema, "predict"),
        }


class _ModelReady(MethodView):
    @blp.requires(predictor=True)
    @blp.response(200, V2ModelReadySchema)
    @blp.problems(
        not_found="No such model or version",
        forbidden="The version holds no governed target (version-not-servable)",
    )
    def get(self, name, version=None):
        """Whether the model (or version) is loaded and can answer"""
        try:
            ready = _loaded(name, version) is not None
        except ModelLoadFailed:
            ready = False
        return {"name": name, "ready": ready}


class _Infer(MethodView):
    @blp.requires(predictor=True)
    @blp.arguments(V2InferRequestSchema)
    @blp.response(200, V2InferResponseSchema)
    @blp.problems(
        not_found="No such model or version, or nobody holds the target",
        forbidden="The version holds no governed target (version-not-servable)",
        unavailable="Neither the holder nor its fallback can answer",
    )
    def post(self, body, name, version=None):
        """Infer (V2): the deployment's split, or the version in the path"""
        serving = _serving()
        result = serving.predict(
            current_context(),
            name,
            body,
            pin=Pin(version=version),
            headers=request.headers,
            protocol="v2",
        )
        answer = {
            "model_name": name,
            "model_version": str(result.model_version),
            "outputs": payload.v2_outputs(result.raw),
            "parameters": {
                "variant": result.variant,
                "served_from": result.served_from,
                "fallback": result.fallback,
                "request_id": result.request_id,
            },
        }
        if body.get("id") is not None:
            answer["id"] = body["id"]
        return answer, 200, {"X-Model-Version": str(result.model_version)}


# Each view answers both with and without a version in the path.
for path, view in (
    ("/<string:name>", _Metadata),
    ("/<string:name>/ready", _ModelReady),
    ("/<string:name>/infer", _Infer),
):
    blp.add_url_rule(path, view_func=view)
    blp.add_url_rule(
        path.replace("<string:name>", "<string:name>/versions/<id:version>"), view_func=view
    )
