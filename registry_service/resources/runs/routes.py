"""Runs: one run, and runs side by side."""

from __future__ import annotations

from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.resources.runs.schemas import (
    RunCompareArgsSchema,
    RunComparisonSchema,
    RunSchema,
)
from registry_service.services.container import get_services

blp = Blueprint("runs", __name__, url_prefix="/runs", description="Tracked training runs")


@blp.route("/compare")
class Compare(MethodView):
    @blp.requires()
    @blp.arguments(RunCompareArgsSchema, location="query")
    @blp.response(200, RunComparisonSchema)
    @blp.problems(not_found="One of the runs does not exist")
    def get(self, args):
        """Compare runs' metrics and params side by side"""
        return get_services().experiments.compare_runs(args["run_ids"], args["metrics"])


@blp.route("/<string:run_id>")
class RunView(MethodView):
    @blp.requires()
    @blp.response(200, RunSchema)
    @blp.problems(not_found="No such run")
    def get(self, run_id):
        """Show a run with its params, latest metrics and tags"""
        return get_services().experiments.get_run(run_id)
