"""Experiment tracking for training code: runs that record where they came from.

    tracker = Tracker("churn")
    with tracker.start_run("baseline") as run:
        run.log_params({"model": {"depth": 4, "lr": 0.1}})   # model.depth, model.lr
        run.log_metric("auc", 0.91)
        run.log_model(clf)

Every run is tagged with the git commit of the training code (and whether the tree
was dirty), the user, the Python version and the versions of the main ML packages; a
top-level run also stores the full package list as ``environment/requirements.txt``.
A run whose body raises ends FAILED (KILLED on Ctrl-C) with the error as a tag.

The tracker uses MLflow's fluent API, so each run it starts points the process's
tracking URI at the tracker's store: by default the one the service itself uses
(``MLFLOW_TRACKING_URI``, else the embedded store under ``REGISTRY_DATA_DIR``), and
``mlflow.*`` calls inside the run land in the same place. Nest runs of one store only.
"""

from __future__ import annotations

import contextvars
import functools
import getpass
import importlib
import importlib.metadata
import inspect
import json
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from registry_service.config import Settings
from registry_service.domain.entities import Run
from registry_service.domain.profile import ARTIFACT_PATH as PROFILE_ARTIFACT
from registry_service.domain.profile import profile_of
from registry_service.gateway.mlflow_gateway import MlflowGateway
from registry_service.services.experiments import ExperimentService, RunComparison

GIT_COMMIT_TAG = "mlflow.source.git.commit"
GIT_BRANCH_TAG = "mlflow.source.git.branch"
GIT_REPO_TAG = "mlflow.source.git.repoURL"
GIT_DIRTY_TAG = "registry.git.dirty"
USER_TAG = "mlflow.user"
PYTHON_TAG = "registry.python_version"
PACKAGES_TAG = "registry.packages"
ERROR_TAG = "registry.error"
WARNING_TAG = "registry.warning"
REQUIREMENTS_ARTIFACT = "environment/requirements.txt"
# Packages whose versions decide what a model does; recorded as a tag on every run.
KEY_PACKAGES = (
    "mlflow",
    "scikit-learn",
    "numpy",
    "pandas",
    "scipy",
    "torch",
    "tensorflow",
    "keras",
    "xgboost",
    "lightgbm",
    "catboost",
    "registry-service",
)
# The MLflow flavor for a model, by the top-level module its class comes from.
FLAVOR_BY_MODULE = {
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "catboost": "catboost",
    "torch": "pytorch",
    "keras": "keras",
    "tensorflow": "tensorflow",
    "statsmodels": "statsmodels",
    "prophet": "prophet",
}
# MLflow's limits: longer values or bigger batches are refused whole.
PARAM_VALUE_MAX = 6000
TAG_VALUE_MAX = 8000
BATCH_MAX = 100
METRIC_BATCH_MAX = 1000
KEY_MAX = 250

_current: contextvars.ContextVar[TrackedRun | None] = contextvars.ContextVar(
    "registry_tracked_run", default=None
)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` becomes ``{"a.b": 1}``; empty mappings are kept as values.

    Raises ValueError when two entries flatten to one key (``{"a.b": 1, "a": {"b": 2}}``)
    rather than dropping one of them.
    """
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        nested = flatten(value, name) if isinstance(value, Mapping) and value else {name: value}
        clash = flat.keys() & nested.keys()
        if clash:
            raise ValueError(f"{sorted(clash)[0]!r} is given twice once flattened")
        flat.update(nested)
    return flat


def _check_key(kind: str, key: str) -> str:
    if len(key) > KEY_MAX:
        # A value can be shortened; a name cannot without colliding with another.
        raise ValueError(f"{kind} name {key[:40]!r}... is over MLflow's {KEY_MAX} characters")
    return key


def _clipped(kind: str, key: str, text: str, limit: int) -> str:
    _check_key(kind, key)
    if len(text) <= limit:
        return text
    # MLflow refuses the whole batch over one long value; keep the run going.
    warnings.warn(
        f"{kind} {key!r} is {len(text)} characters; MLflow keeps {limit}: logged truncated",
        stacklevel=4,
    )
    return text[: limit - 3] + "..."


def _tag_texts(tags: Mapping[str, Any]) -> dict[str, str]:
    return {k: _clipped("tag", k, _param_text(v), TAG_VALUE_MAX) for k, v in flatten(tags).items()}


def _param_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple | Mapping | bool) or value is None:
        return json.dumps(value, default=str)
    return str(value)


def _is_param_like(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list | tuple) and len(value) <= 100:
        return all(_is_param_like(v) and not isinstance(v, list | tuple) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_param_like(v) for k, v in value.items())
    return False


def _git(source_dir: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=source_dir,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return url


def git_provenance(source_dir: Path) -> dict[str, str]:
    """Commit, branch, remote and dirty flag of the repository holding ``source_dir``."""
    commit = _git(source_dir, "rev-parse", "HEAD")
    if not commit:
        return {}
    tags = {GIT_COMMIT_TAG: commit}
    # Untracked files count: a new, uncommitted script also makes the run irreproducible.
    status = _git(source_dir, "status", "--porcelain")
    if status is not None:
        tags[GIT_DIRTY_TAG] = "true" if status else "false"
    branch = _git(source_dir, "rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":
        tags[GIT_BRANCH_TAG] = branch
    remote = _git(source_dir, "config", "--get", "remote.origin.url")
    if remote:
        tags[GIT_REPO_TAG] = _without_credentials(remote)
    return tags


def installed_packages() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            found.setdefault(name.lower().replace("_", "-"), dist.version)
    return dict(sorted(found.items()))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        # No login name in some containers; MLflow falls back the same way.
        return os.environ.get("USER") or "unknown"


def _default_source_dir() -> Path:
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(main).resolve().parent if main else Path.cwd()


def _flavor_module(model: Any, flavor: str | None):
    if flavor is None:
        if isinstance(model, PythonModel):
            flavor = "pyfunc"
        else:
            flavor = FLAVOR_BY_MODULE.get(type(model).__module__.split(".")[0])
        if flavor is None:
            raise TypeError(
                f"cannot tell the MLflow flavor of a {type(model).__qualname__}; "
                "pass flavor=, e.g. flavor='sklearn'"
            )
    return importlib.import_module(f"mlflow.{flavor}")


@dataclass(frozen=True)
class LoggedModel:
    name: str
    model_id: str | None
    model_uri: str
    run_id: str


class TrackedRun:
    """A run in progress: what training code logs to."""

    def __init__(self, tracker: Tracker, run_id: str, experiment_id: str) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.experiment_id = experiment_id

    def __repr__(self) -> str:
        return f"TrackedRun(run_id={self.run_id!r}, experiment_id={self.experiment_id!r})"

    @property
    def _client(self):
        return self.tracker.client

    def _log_batched(self, kind: str, entries: list, size: int = BATCH_MAX) -> None:
        for start in range(0, len(entries), size):
            self._client.log_batch(self.run_id, **{kind: entries[start : start + size]})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Nested mappings are flattened: ``{"opt": {"lr": 0.1}}`` logs ``opt.lr``."""
        self._log_batched(
            "params",
            [
                Param(k, _clipped("param", k, _param_text(v), PARAM_VALUE_MAX))
                for k, v in flatten(params).items()
            ],
        )

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Nested mappings are flattened like params; every value must be a number."""
        flat = flatten(metrics)
        bad = {k: v for k, v in flat.items() if not _is_number(v)}
        if bad:
            raise TypeError(f"metrics must be numbers, got {bad!r}")
        now = int(time.time() * 1000)
        self._log_batched(
            "metrics",
            [Metric(_check_key("metric", k), float(v), now, step or 0) for k, v in flat.items()],
            METRIC_BATCH_MAX,
        )

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.log_metrics({key: value}, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._log_batched("tags", [RunTag(k, v) for k, v in _tag_texts(tags).items()])

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """A file, or a folder with everything in it."""
        local = Path(path)
        if local.is_dir():
            self._client.log_artifacts(self.run_id, str(local), artifact_path)
        elif local.is_file():
            self._client.log_artifact(self.run_id, str(local), artifact_path)
        else:
            raise FileNotFoundError(f"no file or folder at {local}")

    def log_dict(self, data: Mapping[str, Any] | list, artifact_file: str) -> None:
        """Stored as JSON (or YAML if ``artifact_file`` ends in .yaml/.yml)."""
        self._client.log_dict(self.run_id, data, artifact_file)

    def log_dataset_profile(self, data: Any, predictions: Any = None) -> dict[str, Any]:
        """Profile the training data (a DataFrame, {column: values}, or a 2-D array whose
        columns are named "0", "1"... as in an ``instances`` or ``inputs`` request) and log
        it where the registry looks for a version's drift reference: per-feature
        quantiles (numbers) or category shares (text). ``predictions``: the model's
        answers on ``data``, so that prediction drift is measured too."""
        if hasattr(data, "columns"):
            columns = {str(c): data[c].tolist() for c in data.columns}
        elif isinstance(data, Mapping):
            columns = {str(k): list(v) for k, v in data.items()}
        else:
            matrix = np.asarray(data)
            columns = {str(i): matrix[:, i].tolist() for i in range(matrix.shape[1])}
        answers = None if predictions is None else np.asarray(predictions).ravel().tolist()
        profile = profile_of(columns, answers)
        self._client.log_dict(self.run_id, profile, PROFILE_ARTIFACT)
        return profile

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """A matplotlib (or plotly) figure, saved as ``artifact_file`` (e.g. roc.png)."""
        self._client.log_figure(self.run_id, figure, artifact_file)

    def log_model(
        self, model: Any, name: str = "model", flavor: str | None = None, **kwargs: Any
    ) -> LoggedModel:
        """Log ``model`` with its MLflow flavor, guessed from its class unless given.

        Extra keyword arguments go to the flavor's ``log_model`` (signature,
        input_example, pip_requirements...).
        """
        module = _flavor_module(model, flavor)
        mlflow.set_tracking_uri(self.tracker.tracking_uri)
        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            raise RuntimeError(
                f"run {self.run_id} is not the active run of this thread; log its model "
                "inside its own 'with' block"
            )
        info = module.log_model(model, name=name, **kwargs)
        return LoggedModel(name, getattr(info, "model_id", None), info.model_uri, self.run_id)

    @contextmanager
    def child(
        self, run_name: str | None = None, tags: Mapping[str, Any] | None = None
    ) -> Iterator[TrackedRun]:
        """A nested run under this one, e.g. one trial of a hyperparameter search."""
        with self.tracker.start_run(run_name, tags=tags, parent_run_id=self.run_id) as run:
            yield run

    def get(self) -> Run:
        """The run as MLflow has it now."""
        return self.tracker.get_run(self.run_id)


def _is_number(value: Any) -> bool:
    if isinstance(value, str | bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class Tracker:
    """Starts and ends runs in one named experiment, created on first use."""

    def __init__(
        self,
        experiment: str,
        tracking_uri: str | None = None,
        artifact_root: str | None = None,
        source_dir: str | os.PathLike | None = None,
    ) -> None:
        if not experiment or not experiment.strip():
            raise ValueError("an experiment name is required")
        settings = Settings.from_env()
        self.tracking_uri = tracking_uri or settings.mlflow_tracking_uri
        self.artifact_root = artifact_root or settings.artifact_root
        self.source_dir = Path(source_dir) if source_dir else _default_source_dir()
        self.experiment_name = experiment
        # A training process keeps MLflow's patient HTTP defaults for uploads.
        self.gateway = MlflowGateway(
            self.tracking_uri, artifact_root=self.artifact_root, bound_http=False
        )
        self.client = self.gateway.client
        self.experiments = ExperimentService(self.gateway)
        self.experiment_id = self._experiment_id(experiment)
        self._provenance: dict[str, str] | None = None
        self._lock = threading.Lock()

    @property
    def local_store(self) -> bool:
        return not self.tracking_uri.startswith(("http://", "https://", "databricks"))

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        # A local store would put artifacts under ./mlruns of whatever directory the
        # training code runs in; keep them with the service's artifacts instead.
        location = None
        if self.local_store:
            location = (Path(self.artifact_root) / uuid.uuid4().hex).resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            # Another process created it between our lookup and create.
            return self.client.get_experiment_by_name(name).experiment_id

    @functools.cached_property
    def packages(self) -> dict[str, str]:
        """Installed distributions and versions, read once per tracker."""
        return installed_packages()

    def provenance(self) -> dict[str, str]:
        """Tags every run of this tracker gets; computed once."""
        with self._lock:
            if self._provenance is None:
                key = {p: self.packages[p] for p in KEY_PACKAGES if p in self.packages}
                self._provenance = {
                    USER_TAG: _user(),
                    PYTHON_TAG: platform.python_version(),
                    PACKAGES_TAG: json.dumps(key, separators=(",", ":")),
                    **git_provenance(self.source_dir),
                }
            return dict(self._provenance)

    @contextmanager
    def start_run(
        self,
        run_name: str | None = None,
        *,
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
        parent_run_id: str | None = None,
    ) -> Iterator[TrackedRun]:
        """Run the block as a run; inside another run of this thread it nests."""
        # The fluent API reads the process-wide URI; another tracker may have moved it.
        mlflow.set_tracking_uri(self.tracking_uri)
        outer = mlflow.active_run()
        started_in = threading.get_ident()
        if parent_run_id is None and outer is not None:
            parent_run_id = outer.info.run_id
        active = mlflow.start_run(
            experiment_id=self.experiment_id,
            run_name=run_name,
            nested=outer is not None,
            parent_run_id=parent_run_id,
            tags={**self.provenance(), **_tag_texts(tags or {})},
            description=description,
        )
        run = TrackedRun(self, active.info.run_id, self.experiment_id)
        token = _current.set(run)
        try:
            if parent_run_id is None:
                self._log_requirements(run)
            yield run
        except GeneratorExit:
            # Abandoned without exiting (a generator closed early, or collected): end the
            # run KILLED, unless the run around it already ended it.
            if self.client.get_run(run.run_id).info.status == "RUNNING":
                self._end(run, outer, started_in, "KILLED")
            raise
        except BaseException as exc:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            self._end(run, outer, started_in, status, f"{type(exc).__name__}: {exc}")
            raise
        else:
            self._end(run, outer, started_in, "FINISHED")
        finally:
            _current.reset(token)

    def _log_requirements(self, run: TrackedRun) -> None:
        lines = [f"{name}=={version}" for name, version in self.packages.items()]
        self.client.log_text(run.run_id, "\n".join(lines) + "\n", REQUIREMENTS_ARTIFACT)

    def _end(
        self, run: TrackedRun, outer, thread: int, status: str, error: str | None = None
    ) -> None:
        if error:
            run.set_tag(ERROR_TAG, error)
        # Runs the body left open inside ours end with it; the runs around ours do not,
        # even when the body already ended ours itself. MLflow's stack of active runs is
        # per thread: from any other thread (a collector closing an abandoned block),
        # only our own run is ended.
        stop_at = outer.info.run_id if outer is not None else None
        while (
            thread == threading.get_ident()
            and (active := mlflow.active_run()) is not None
            and active.info.run_id != stop_at
        ):
            mine = active.info.run_id == run.run_id
            mlflow.end_run(status)
            if mine:
                return
        self.client.set_terminated(run.run_id, status)

    # -- reading back
    def get_run(self, run_id: str) -> Run:
        return self.experiments.get_run(run_id)

    def compare_runs(self, run_ids: list[str], metrics: list[str] | None = None) -> RunComparison:
        """Metrics (all, or those named) and params of 2-10 runs side by side."""
        return self.experiments.compare_runs(list(run_ids), list(metrics) if metrics else None)

    def best_run(
        self,
        metric: str,
        higher_is_better: bool = True,
        filter: str | None = None,
        include_unfinished: bool = False,
    ) -> Run:
        """The finished run of this experiment with the best ``metric``.

        ``filter`` is MLflow's search syntax, e.g. ``"tags.mlflow.parentRunId = '<id>'"``
        for the children of one search. Raises NoMatchingRun when no run has the metric.
        """
        return self.experiments.best_run(
            self.experiment_id,
            metric,
            higher_is_better=higher_is_better,
            filter_string=filter,
            finished_only=not include_unfinished,
        )


def active_run() -> TrackedRun | None:
    """The tracked run the calling code is inside, e.g. within a ``@track`` function."""
    return _current.get()


def _log_outcome(
    run: TrackedRun,
    model: Any,
    metrics: Mapping[str, Any],
    model_name: str | None,
    model_kwargs: Mapping[str, Any] | None,
) -> None:
    """Log what a training function returned; it has already succeeded, so a result that
    cannot be logged is a warning on a FINISHED run, not a lost result."""
    try:
        run.log_metrics(metrics)
    except (TypeError, ValueError, MlflowException) as exc:
        warnings.warn(f"metrics not logged: {exc}", stacklevel=3)
        run.set_tag(f"{WARNING_TAG}.metrics", str(exc))
    if model_name and model is not None:
        try:
            run.log_model(model, model_name, **dict(model_kwargs or {}))
        except (TypeError, ValueError, MlflowException) as exc:
            warnings.warn(f"model not logged: {exc}", stacklevel=3)
            run.set_tag(f"{WARNING_TAG}.model", str(exc))


def track(
    experiment: str | None = None,
    *,
    tracker: Tracker | None = None,
    run_name: str | None = None,
    log_model: bool = True,
    model_name: str = "model",
    model_kwargs: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run the decorated training function as a run.

    Its arguments that look like configuration (numbers, strings, and lists or dicts
    of them) are logged as params, by parameter name and with defaults filled in. When
    it returns ``(model, metrics)``, the metrics are logged and, with ``log_model``,
    the model too; what cannot be logged (a non-numeric metric, an object of no known
    flavor) is a warning and a ``registry.warning.*`` tag, and the result is still
    returned. The last run's id is kept as ``func.last_run_id``.
    """
    if (experiment is None) == (tracker is None):
        raise ValueError("give track() an experiment name or a tracker, not both")

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(func)
        made: list[Tracker] = []
        lock = threading.Lock()

        def runner() -> Tracker:
            # Built on first call, then reused: the lookup and provenance happen once.
            with lock:
                if not made:
                    made.append(tracker or Tracker(experiment))
                return made[0]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            params = {}
            for name, value in bound.arguments.items():
                kind = signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    params.update({k: v for k, v in value.items() if _is_param_like(v)})
                elif kind is not inspect.Parameter.VAR_POSITIONAL and _is_param_like(value):
                    params[name] = value
            with runner().start_run(run_name or func.__name__) as run:
                wrapper.last_run_id = run.run_id
                run.log_params(params)
                result = func(*args, **kwargs)
                if (
                    isinstance(result, tuple)
                    and len(result) == 2
                    and isinstance(result[1], Mapping)
                ):
                    _log_outcome(run, *result, model_name if log_model else None, model_kwargs)
            return result

        wrapper.last_run_id = None
        return wrapper

    return decorate
