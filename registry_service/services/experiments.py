"""Experiments and runs: read-only views over MLflow tracking, for people and CI jobs."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from registry_service.domain.comparison import ComparedValue, side_by_side
from registry_service.domain.entities import Experiment, Page, Run
from registry_service.domain.names import RUN_ID_RE
from registry_service.domain.paging import filtered_page
from registry_service.errors import (
    ExperimentNotFound,
    NoMatchingRun,
    RunNotFound,
    ValidationError,
)
from registry_service.gateway.base import RegistryGateway

# Names MLflow accepts for metrics, minus the backtick that would end a quoted key.
METRIC_NAME_RE = re.compile(r"^[\w.\- /:]{1,250}$")
METRIC_NAME_RULE = "1-250 of letters, digits, '_', '-', '.', ' ', '/', ':'"
# MLflow's stores number experiments with 64-bit integers.
EXPERIMENT_ID_RE = re.compile(r"^[0-9]{1,19}$")
EXPERIMENT_ID_MAX = 2**63 - 1
# Experiment names are free text; these characters would bend the LIKE filter.
_LIKE_UNSAFE = re.compile(r"['%\\]")
VIEWS = ("active", "deleted", "all")
FILTER_MAX = 1000
COMPARE_MIN, COMPARE_MAX = 2, 10


@dataclass(frozen=True)
class RunComparison:
    runs: list[Run]
    metrics: list[ComparedValue]
    params: list[ComparedValue]


def _invalid(field: str, location: str, message: str, detail: str) -> ValidationError:
    return ValidationError(
        detail, errors=[{"field": field, "location": location, "message": message}]
    )


def check_metric_name(metric: str, field: str = "metric") -> str:
    if not METRIC_NAME_RE.match(metric or ""):
        raise _invalid(field, "query", METRIC_NAME_RULE, f"invalid metric name {metric!r}")
    return metric


def check_run_id(run_id: str, field: str = "run_id", location: str = "path") -> str:
    if not RUN_ID_RE.match(run_id or ""):
        raise _invalid(field, location, "32 lowercase hex characters", f"invalid run id {run_id!r}")
    return run_id


def check_experiment_id(experiment_id: str) -> str:
    # An id MLflow could never have issued is simply not found.
    if not EXPERIMENT_ID_RE.match(experiment_id or "") or int(experiment_id) > EXPERIMENT_ID_MAX:
        raise ExperimentNotFound(f"experiment {experiment_id!r} not found")
    return experiment_id


def check_filter(filter_string: str | None) -> str | None:
    if filter_string and len(filter_string) > FILTER_MAX:
        raise _invalid("filter", "query", f"at most {FILTER_MAX} characters", "filter is too long")
    return filter_string


def metric_order(metric: str, ascending: bool) -> str:
    return f"metrics.`{metric}` {'ASC' if ascending else 'DESC'}"


class ExperimentService:
    def __init__(self, gateway: RegistryGateway) -> None:
        self.gateway = gateway

    # -- experiments
    def list_experiments(
        self,
        prefix: str | None,
        view: str,
        max_results: int,
        page_token: str | None,
        name: str | None = None,
    ) -> Page[Experiment]:
        """Experiments by name prefix, or the one named exactly ``name``."""
        if view not in VIEWS:
            raise _invalid("view", "query", f"one of {', '.join(VIEWS)}", f"invalid view {view!r}")
        if name is not None:
            found = self.gateway.get_experiment_by_name(name)
            wanted = view == "all" or (found is not None and found.lifecycle_stage == view)
            return Page([found] if found is not None and wanted else [], None)
        if prefix and _LIKE_UNSAFE.search(prefix):
            raise _invalid(
                "name_prefix", "query", "no quote, '%' or backslash", "invalid name prefix"
            )
        # LIKE reads '_' as a wildcard, so re-check the prefix literally.
        predicate = (lambda e: e.name.startswith(prefix)) if prefix and "_" in prefix else None
        return filtered_page(
            lambda token, n: self.gateway.search_experiments(prefix, view, n, token),
            predicate,
            max_results,
            page_token,
        )

    def get_experiment(self, experiment_id: str) -> Experiment:
        return self.gateway.get_experiment(check_experiment_id(experiment_id))

    # -- runs
    def list_runs(
        self,
        experiment_id: str,
        filter_string: str | None,
        order_by_metric: str | None,
        ascending: bool,
        max_results: int,
        page_token: str | None,
    ) -> Page[Run]:
        """Runs of one experiment, newest first unless ordered by a metric."""
        check_experiment_id(experiment_id)
        check_filter(filter_string)
        order = (
            [metric_order(check_metric_name(order_by_metric, "order_by"), ascending)]
            if order_by_metric
            else None
        )
        page = filtered_page(
            lambda token, n: self._search([experiment_id], filter_string, order, n, token),
            None,
            max_results,
            page_token,
        )
        if not page.items:
            # MLflow answers an unknown experiment with no runs; only then ask which.
            self.get_experiment(experiment_id)
        return page

    def get_run(self, run_id: str) -> Run:
        if not RUN_ID_RE.match(run_id or ""):
            raise RunNotFound(f"run {run_id!r} not found")
        return self.gateway.get_run(run_id)

    def compare_runs(self, run_ids: list[str], metrics: list[str] | None = None) -> RunComparison:
        """Metrics and params side by side; ``metrics`` limits the metric rows."""
        if len(set(run_ids)) != len(run_ids) or not COMPARE_MIN <= len(run_ids) <= COMPARE_MAX:
            raise _invalid(
                "run_ids",
                "query",
                f"{COMPARE_MIN} to {COMPARE_MAX} distinct run ids, comma-separated",
                f"compare takes {COMPARE_MIN} to {COMPARE_MAX} distinct runs",
            )
        for run_id in run_ids:
            check_run_id(run_id, "run_ids", "query")
        for metric in metrics or []:
            check_metric_name(metric, "metrics")
        runs = [self.gateway.get_run(run_id) for run_id in run_ids]
        return RunComparison(
            runs=runs,
            metrics=side_by_side({r.run_id: r.metrics for r in runs}, True, metrics or None),
            params=side_by_side({r.run_id: r.params for r in runs}, False),
        )

    def best_run(
        self,
        experiment_id: str,
        metric: str,
        higher_is_better: bool = True,
        filter_string: str | None = None,
        finished_only: bool = True,
    ) -> Run:
        """The run with the best value of ``metric``; unfinished runs only when asked."""
        check_metric_name(metric)
        check_experiment_id(experiment_id)
        clauses = [check_filter(filter_string)] if filter_string else []
        if finished_only:
            clauses.append("attributes.status = 'FINISHED'")
        order = [metric_order(metric, not higher_is_better), "attributes.start_time DESC"]
        page = self._search([experiment_id], " AND ".join(clauses) or None, order, 1, None)
        if not page.items:
            # MLflow answers an unknown experiment with no runs; only then ask which.
            self.get_experiment(experiment_id)
        # MLflow sorts numbers first in either direction, then NaN, then runs without
        # the metric: unless the first run has a number, none has.
        value = page.items[0].metrics.get(metric) if page.items else None
        if value is None or math.isnan(value):
            raise NoMatchingRun(
                f"no {'finished ' if finished_only else ''}run"
                f"{' matching the filter' if filter_string else ''} has a value for {metric!r}",
                metric=metric,
            )
        return page.items[0]

    def _search(
        self,
        experiment_ids: list[str],
        filter_string: str | None,
        order_by: list[str] | None,
        max_results: int,
        page_token: str | None,
    ) -> Page[Run]:
        try:
            return self.gateway.search_runs(
                experiment_ids, filter_string, order_by, max_results, page_token
            )
        except ValidationError as exc:
            if exc.errors or not filter_string:
                raise
            # MLflow rejects a filter it cannot parse as an invalid parameter.
            raise _invalid("filter", "query", exc.detail, f"invalid filter: {exc.detail}") from exc
