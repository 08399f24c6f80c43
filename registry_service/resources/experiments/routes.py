"""Experiments and the runs in them."""

from __future__ import annotations

from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.resources.experiments.schemas import (
    BestRunArgsSchema,
    ExperimentListArgsSchema,
    ExperimentPageSchema,
    ExperimentSchema,
    RunListArgsSchema,
    RunPageSchema,
)
from registry_service.resources.runs.schemas import RunSchema
from registry_service.services.container import get_services

blp = Blueprint(
    "experiments",
    __name__,
    url_prefix="/experiments",
    description="Tracking experiments, their runs ordered and filtered, and the best run",
)


def _experiments():
    return get_services().experiments


@blp.route("")
class Experiments(MethodView):
    @blp.requires()
    @blp.arguments(ExperimentListArgsSchema, location="query")
    @blp.response(200, ExperimentPageSchema)
    def get(self, args):
        """List experiments by name prefix, or find one by its exact name"""
        page = _experiments().list_experiments(
            args["name_prefix"], args["view"], args["max_results"], args["page_token"], args["name"]
        )
        return {"experiments": page.items, "next_page_token": page.next_page_token}


@blp.route("/<string:experiment_id>")
class ExperimentView(MethodView):
    @blp.requires()
    @blp.response(200, ExperimentSchema)
    @blp.problems(not_found="No such experiment")
    def get(self, experiment_id):
        """Show an experiment"""
        return _experiments().get_experiment(experiment_id)


@blp.route("/<string:experiment_id>/runs")
class Runs(MethodView):
    @blp.requires()
    @blp.arguments(RunListArgsSchema, location="query")
    @blp.response(200, RunPageSchema)
    @blp.problems(not_found="No such experiment")
    def get(self, args, experiment_id):
        """List an experiment's runs, filtered and ordered by a metric"""
        page = _experiments().list_runs(
            experiment_id,
            args["filter"],
            args["order_by"],
            args["order"] == "asc",
            args["max_results"],
            args["page_token"],
        )
        return {"runs": page.items, "next_page_token": page.next_page_token}


@blp.route("/<string:experiment_id>/best-run")
class BestRun(MethodView):
    @blp.requires()
    @blp.arguments(BestRunArgsSchema, location="query")
    @blp.response(200, RunSchema)
    @blp.problems(not_found="No such experiment, or no run has a value for the metric")
    def get(self, args, experiment_id):
        """The finished run with the best value of a metric"""
        return _experiments().best_run(
            experiment_id,
            args["metric"],
            higher_is_better=args["order"] == "desc",
            filter_string=args["filter"],
            finished_only=not args["include_unfinished"],
        )
