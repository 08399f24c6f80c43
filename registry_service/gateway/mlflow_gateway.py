"""RegistryGateway over MLflow's client: a remote server or an embedded SQLite store."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import requests
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import DBAPIError

from registry_service import errors
from registry_service.domain.entities import (
    Dataset,
    Experiment,
    ModelVersion,
    Page,
    RegisteredModel,
    Run,
    Stage,
    TransitionResult,
)
from registry_service.domain.names import INT32_MAX
from registry_service.gateway.base import RegistryGateway
from registry_service.gateway.direct_sql import DirectSql
from registry_service.gateway.http import install_low_latency_transport

_ERROR_BY_CODE: dict[str, type[errors.RegistryError]] = {
    "RESOURCE_ALREADY_EXISTS": errors.AlreadyExists,
    "INVALID_PARAMETER_VALUE": errors.ValidationError,
    "INVALID_STATE": errors.IllegalTransition,
    "BAD_REQUEST": errors.BadRequest,
    "PERMISSION_DENIED": errors.UpstreamError,
    "UNAUTHENTICATED": errors.UpstreamError,
}

_VIEW_TYPES = {
    "active": ViewType.ACTIVE_ONLY,
    "deleted": ViewType.DELETED_ONLY,
    "all": ViewType.ALL,
}


def _ts(millis: int | None) -> datetime | None:
    if millis is None:
        return None
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


# MLflow retried a call that kept answering with errors: it answered, it is not down.
_ANSWERED_WITH_ERRORS = re.compile(r"too many \d{3} error responses")


def _is_connection_failure(exc: BaseException) -> bool:
    if _ANSWERED_WITH_ERRORS.search(str(exc)):
        return False
    # MLflow wraps transport errors in a plain MlflowException without ``from``.
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, requests.exceptions.RetryError):
            return False
        if isinstance(current, requests.exceptions.RequestException | ConnectionError):
            return True
        current = current.__cause__ or current.__context__
    return "failed with exception" in str(exc) or "failed with timeout" in str(exc)


def _next_token(result) -> str | None:
    """A search result's next-page token as text: MLflow's in-process SQL store gives
    bytes (its REST server decodes them before answering)."""
    token = result.token
    if isinstance(token, bytes):
        token = token.decode("ascii")
    return token or None


def _check_offset(page_token: str | None) -> None:
    """Refuse a page token whose offset MLflow's SQL store would fail on (a 500 there).

    MLflow's tokens are base64 JSON with an ``offset``; one in another shape is left
    for MLflow to judge.
    """
    if not page_token:
        return
    try:
        state = json.loads(base64.b64decode(page_token, validate=False))
    except (ValueError, binascii.Error):
        return
    offset = state.get("offset") if isinstance(state, dict) else None
    if offset is not None and not (
        isinstance(offset, int) and not isinstance(offset, bool) and 0 <= offset <= INT32_MAX
    ):
        raise errors.BadRequest("page_token is not a token this service issued")


def _model_id_of(source: str) -> str | None:
    # MLflow's REST answers may omit model_id; a "models:/<id>" source still names it.
    rest = source.removeprefix("models:/")
    return rest if rest != source and rest and "/" not in rest else None


def mlflow_schema_problem(db_uri: str) -> str | None:
    """Why MLflow's schema in ``db_uri`` cannot be used by the installed mlflow; None if
    it can."""
    import sqlalchemy
    from mlflow.store.db import utils as db_utils

    try:
        engine = sqlalchemy.create_engine(db_uri)
    except (sqlalchemy.exc.ArgumentError, ImportError) as exc:
        return f"MLFLOW_TRACKING_URI is not a database URL: {exc}"
    try:
        if not db_utils._all_tables_exist(engine):
            return (
                "that database holds no MLflow schema: point MLFLOW_TRACKING_URI at the "
                "MLflow server's backend store"
            )
        current, expected = (
            db_utils._get_schema_version(engine),
            db_utils._get_latest_schema_revision(),
        )
        if current != expected:
            return (
                f"MLflow's schema in that database is at revision {current}, the installed "
                f"mlflow {mlflow.__version__} expects {expected}: run the same mlflow version "
                "as the server"
            )
        return None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        return f"MLflow's database cannot be read: {type(exc).__name__}"
    finally:
        engine.dispose()


class _Refusing:
    """Stands in for MLflow's client when its database must not be used."""

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def __getattr__(self, name: str):
        raise errors.UpstreamUnavailable(f"MLflow's database is not usable: {self.problem}")


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0][:500] if message.strip() else message


class MlflowGateway(RegistryGateway):
    def __init__(
        self,
        tracking_uri: str,
        registry_uri: str | None = None,
        artifact_root: str | None = None,
        timeout: float = 10.0,
        max_retries: int = 2,
        quickack: bool = True,
        bound_http: bool = True,
        server_url: str | None = None,
    ) -> None:
        """``bound_http=False`` leaves MLflow's own HTTP timeouts and retries alone, for
        processes (training code) whose uploads may rightly take minutes. The bounds are
        process-wide environment settings: a bounded gateway built earlier in the same
        process has already set them."""
        """With ``server_url`` and a database ``tracking_uri``, the gateway reads MLflow's
        own store in-process (direct-store mode) and reaches artifacts through the server;
        it refuses to touch a database whose MLflow schema differs from the installed
        mlflow's."""
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.remote = tracking_uri.startswith(("http://", "https://"))
        self.direct = not self.remote and server_url is not None
        self.schema_problem = mlflow_schema_problem(tracking_uri) if self.direct else None
        http = self.remote or self.direct
        if http and bound_http:
            # MLflow reads these per call; the defaults (120 s, 7 retries with
            # exponential backoff) would hold a request for minutes when MLflow is down.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout)))
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            # One pooled connection per serving thread, instead of MLflow's 10.
            os.environ.setdefault("MLFLOW_HTTP_POOL_MAXSIZE", "32")
        if http and quickack:
            install_low_latency_transport()
        if not http and artifact_root:
            self._init_embedded_store(artifact_root)
        # MLflow's client opens its store at once, and creates tables in an empty
        # database: never let it near one whose schema does not match.
        self.client: MlflowClient | _Refusing = (
            _Refusing(self.schema_problem)
            if self.schema_problem
            else MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        )
        # Artifacts (model files, run folders) live behind the server in direct mode.
        self.artifacts_uri = server_url if self.direct else self.tracking_uri
        self.artifact_client = (
            MlflowClient(tracking_uri=server_url, registry_uri=server_url)
            if self.direct
            else self.client
        )
        # Workspaces (multi-tenant MLflow) scope every read: MLflow's store keeps that.
        self.direct_sql = (
            DirectSql(self.registry_uri, _ts)
            if self.direct
            and not self.schema_problem
            and os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").lower() not in ("1", "true")
            else None
        )

    def _registry(self):
        """MLflow's registry client, for moves. MlflowClient reads the whole model
        before each move to refuse prompts, one more MLflow call per move; a prompt is
        "not found" to every read here, so no request can be made for one."""
        with self._translate(errors.ModelNotFound, "registered model"):
            return self.client._get_registry_client()

    def _init_embedded_store(self, artifact_root: str) -> None:
        # MlflowClient would create the store with "./mlruns" as the artifact root;
        # creating it once here puts the Default experiment under our data directory.
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )
        Path(artifact_root).mkdir(parents=True, exist_ok=True)
        with self._translate(errors.NotFound):
            SqlAlchemyStore(self.tracking_uri, str(Path(artifact_root).resolve()))

    # -- error translation
    @contextmanager
    def _translate(
        self, not_found: type[errors.NotFound], what: str = "resource"
    ) -> Iterator[None]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                yield
        except MlflowException as exc:
            raise self._convert(exc, not_found, what) from exc
        except requests.exceptions.RequestException as exc:
            raise errors.UpstreamUnavailable(
                f"MLflow did not answer: {type(exc).__name__}"
            ) from exc

    @staticmethod
    def _convert(
        exc: MlflowException, not_found: type[errors.NotFound], what: str
    ) -> errors.RegistryError:
        code = getattr(exc, "error_code", "") or ""
        message = _first_line(getattr(exc, "message", None) or str(exc))
        if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "ENDPOINT_NOT_FOUND"):
            return not_found(f"{what} not found")
        if code in _ERROR_BY_CODE:
            return _ERROR_BY_CODE[code](message)
        if _is_connection_failure(exc):
            return errors.UpstreamUnavailable("MLflow is unreachable")
        return errors.UpstreamError(f"MLflow failed: {message}")

    # -- mapping MLflow objects to ours
    @staticmethod
    def _version(mv) -> ModelVersion:
        return ModelVersion(
            name=mv.name,
            version=int(mv.version),
            stage=mv.current_stage or Stage.NONE.value,
            status=mv.status or "READY",
            source=mv.source or "",
            run_id=mv.run_id or None,
            description=mv.description or "",
            tags=dict(mv.tags or {}),
            aliases=sorted(mv.aliases or []),
            created_at=_ts(mv.creation_timestamp),
            updated_at=_ts(mv.last_updated_timestamp),
            user_id=mv.user_id or None,
            model_id=getattr(mv, "model_id", None) or _model_id_of(mv.source or ""),
        )

    @staticmethod
    def _model(rm) -> RegisteredModel:
        latest = {}
        for mv in rm.latest_versions or []:
            stage = mv.current_stage or Stage.NONE.value
            latest[stage] = max(latest.get(stage, 0), int(mv.version))
        return RegisteredModel(
            name=rm.name,
            description=rm.description or "",
            tags=dict(rm.tags or {}),
            aliases={alias: int(v) for alias, v in (rm.aliases or {}).items()},
            latest_versions=latest,
            created_at=_ts(rm.creation_timestamp),
            updated_at=_ts(rm.last_updated_timestamp),
        )

    @staticmethod
    def _run(run) -> Run:
        datasets = []
        for di in getattr(run.inputs, "dataset_inputs", None) or []:
            context = next((t.value for t in di.tags if t.key == "mlflow.data.context"), None)
            datasets.append(
                Dataset(
                    name=di.dataset.name,
                    digest=di.dataset.digest,
                    source_type=di.dataset.source_type,
                    source=di.dataset.source,
                    context=context,
                )
            )
        info = run.info
        return Run(
            run_id=info.run_id,
            experiment_id=str(info.experiment_id),
            run_name=info.run_name,
            status=info.status,
            user_id=info.user_id or None,
            start_time=_ts(info.start_time),
            end_time=_ts(info.end_time),
            artifact_uri=info.artifact_uri or "",
            params=dict(run.data.params),
            metrics={k: float(v) for k, v in run.data.metrics.items()},
            tags=dict(run.data.tags),
            datasets=datasets,
            logged_model_ids=[
                mo.model_id for mo in (getattr(run.outputs, "model_outputs", None) or [])
            ],
        )

    # -- registered models
    def get_registered_model(self, name: str) -> RegisteredModel:
        with self._translate(errors.ModelNotFound, f"registered model {name!r}"):
            return self._model(self.client.get_registered_model(name))

    def search_registered_models(self, name_like, max_results, page_token):
        _check_offset(page_token)
        filter_string = f"name LIKE '{name_like}%'" if name_like else None
        with self._translate(errors.ModelNotFound, "registered model"):
            result = self.client.search_registered_models(
                filter_string=filter_string,
                max_results=max_results,
                order_by=["name ASC"],
                page_token=page_token,
            )
        return Page([self._model(rm) for rm in result], _next_token(result))

    def create_registered_model(self, name, description, tags):
        with self._translate(errors.ModelNotFound, f"registered model {name!r}"):
            rm = self.client.create_registered_model(
                name, tags=tags or None, description=description
            )
        return self._model(rm)

    def update_registered_model(self, name, description=None, set_tags=None, delete_tags=None):
        with self._translate(errors.ModelNotFound, f"registered model {name!r}"):
            if description is not None:
                self.client.update_registered_model(name, description=description)
            for key, value in (set_tags or {}).items():
                self.client.set_registered_model_tag(name, key, value)
            for key in delete_tags or []:
                self.client.delete_registered_model_tag(name, key)
            return self._model(self.client.get_registered_model(name))

    def delete_registered_model(self, name):
        with self._translate(errors.ModelNotFound, f"registered model {name!r}"):
            self.client.delete_registered_model(name)

    # -- versions
    def get_model_version(self, name, version):
        what = f"version {version} of model {name!r}"
        if self.direct_sql is not None and 0 < version <= INT32_MAX:
            try:
                found = self.direct_sql.model_version(name, version)
            except DBAPIError as exc:
                raise errors.UpstreamUnavailable("MLflow's database could not be read") from exc
            if found is None:
                raise errors.VersionNotFound(f"{what} not found")
            if found.model_id is None:
                found = replace(found, model_id=_model_id_of(found.source))
            return found
        with self._translate(errors.VersionNotFound, what):
            return self._version(self.client.get_model_version(name, str(version)))

    def search_model_versions(self, name, max_results, page_token):
        _check_offset(page_token)
        # ``name`` matched MODEL_NAME_RE before reaching here: no quote can occur in it.
        with self._translate(errors.ModelNotFound, f"registered model {name!r}"):
            result = self.client.search_model_versions(
                filter_string=f"name = '{name}'",
                max_results=max_results,
                order_by=["version_number DESC"],
                page_token=page_token,
            )
        return Page([self._version(mv) for mv in result], _next_token(result))

    def create_model_version(self, name, source, run_id, description, tags, model_id=None):
        if not self.remote:
            # An embedded registry store resolves "models:/<id>" sources through the
            # process-wide tracking URI, not this client's (a known MLflow limitation).
            mlflow.set_tracking_uri(self.tracking_uri)
        with self._translate(errors.ModelNotFound, f"registered model {name!r}"):
            mv = self.client.create_model_version(
                name,
                source,
                run_id=run_id,
                tags=tags or None,
                description=description,
                model_id=model_id,
            )
        return self._version(mv)

    def update_model_version(
        self, name, version, description=None, set_tags=None, delete_tags=None
    ):
        v = str(version)
        with self._translate(errors.VersionNotFound, f"version {version} of model {name!r}"):
            if description is not None:
                self.client.update_model_version(name, v, description=description)
            for key, value in (set_tags or {}).items():
                self.client.set_model_version_tag(name, v, key, value)
            for key in delete_tags or []:
                self.client.delete_model_version_tag(name, v, key)
            return self._version(self.client.get_model_version(name, v))

    def delete_model_version(self, name, version):
        with self._translate(errors.VersionNotFound, f"version {version} of model {name!r}"):
            self.client.delete_model_version(name, str(version))

    def all_versions(self, name: str) -> list[ModelVersion]:
        if self.direct_sql is not None:
            try:
                found = self.direct_sql.model_versions(name)
            except DBAPIError as exc:
                raise errors.UpstreamUnavailable("MLflow's database could not be read") from exc
            if not found:
                self.get_registered_model(name)  # a model without versions, or none at all
            return [
                v if v.model_id is not None else replace(v, model_id=_model_id_of(v.source))
                for v in found
            ]
        versions, token = [], None
        while True:
            page = self.search_model_versions(name, 1000, token)
            versions.extend(page.items)
            if not page.next_page_token:
                return versions
            token = page.next_page_token

    def versions_in_stage(self, name: str, stage: Stage) -> list[int]:
        return [v.version for v in self.all_versions(name) if v.stage == stage.value]

    def transition_stage(self, name, version, stage, archive_existing, in_stage=None):
        archive = archive_existing and stage in (Stage.STAGING, Stage.PRODUCTION)
        if self.direct_sql is not None and self.direct_sql.moves and 0 < version <= INT32_MAX:
            try:
                moved = self.direct_sql.transition_stage(name, version, stage.value, archive)
            except DBAPIError as exc:
                raise errors.UpstreamUnavailable(
                    "MLflow's database could not complete the move; read the version to "
                    "see whether it moved"
                ) from exc
            if moved is None:
                raise errors.VersionNotFound(f"version {version} of model {name!r} not found")
            mv, archived = moved
            return TransitionResult(replace(mv, model_id=_model_id_of(mv.source)), archived)
        if not archive:
            before = []
        else:
            before = self.versions_in_stage(name, stage) if in_stage is None else in_stage
        with self._translate(errors.VersionNotFound, f"version {version} of model {name!r}"):
            mv = self._registry().transition_model_version_stage(
                name, str(version), stage.value, archive_existing_versions=archive
            )
        return TransitionResult(self._version(mv), sorted(v for v in before if v != version))

    def _alias_holder(self, name: str, alias: str) -> int | None:
        try:
            return self.get_version_by_alias(name, alias).version
        except errors.VersionNotFound:
            return None

    def set_alias(self, name, alias, version):
        previous = self._alias_holder(name, alias)
        with self._translate(errors.VersionNotFound, f"version {version} of model {name!r}"):
            self._registry().set_registered_model_alias(name, alias, str(version))
        return previous

    def delete_alias(self, name, alias):
        previous = self._alias_holder(name, alias)
        if previous is None:
            return None
        with self._translate(errors.ModelNotFound, f"registered model {name!r}"):
            self.client.delete_registered_model_alias(name, alias)
        return previous

    def get_version_by_alias(self, name, alias):
        what = f"alias {alias!r} of model {name!r}"
        try:
            with self._translate(errors.VersionNotFound, what):
                return self._version(self.client.get_model_version_by_alias(name, alias))
        except errors.ValidationError as exc:
            # MLflow reports an unset alias as INVALID_PARAMETER_VALUE.
            if "not found" in exc.detail:
                raise errors.VersionNotFound(f"{what} not found") from exc
            raise

    # -- tracking
    def download_model_version(self, name, version, dst_dir):
        what = f"version {version} of model {name!r}"
        with self._translate(errors.VersionNotFound, what):
            uri = self.client.get_model_version_download_uri(name, str(version))
            return mlflow.artifacts.download_artifacts(
                artifact_uri=uri,
                dst_path=dst_dir,
                tracking_uri=self.artifacts_uri,
            )

    def get_run(self, run_id):
        with self._translate(errors.RunNotFound, f"run {run_id!r}"):
            return self._run(self.client.get_run(run_id))

    @contextmanager
    def _page_token_checked(self, page_token: str | None) -> Iterator[None]:
        _check_offset(page_token)
        try:
            yield
        except errors.ValidationError as exc:
            # Our tokens wrap MLflow's; one MLflow cannot read was forged or mangled.
            if page_token and "token" in exc.detail.lower():
                raise errors.BadRequest("page_token is not a token this service issued") from exc
            raise

    def search_runs(self, experiment_ids, filter_string, order_by, max_results, page_token):
        with (
            self._page_token_checked(page_token),
            self._translate(errors.ExperimentNotFound, "experiment"),
        ):
            result = self.client.search_runs(
                experiment_ids,
                filter_string=filter_string or "",
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=max_results,
                order_by=order_by,
                page_token=page_token,
            )
        return Page([self._run(run) for run in result], _next_token(result))

    @staticmethod
    def _experiment(exp) -> Experiment:
        return Experiment(
            experiment_id=str(exp.experiment_id),
            name=exp.name,
            artifact_location=exp.artifact_location,
            lifecycle_stage=exp.lifecycle_stage,
            tags=dict(exp.tags or {}),
            created_at=_ts(exp.creation_time),
            updated_at=_ts(exp.last_update_time),
        )

    def get_experiment(self, experiment_id):
        with self._translate(errors.ExperimentNotFound, f"experiment {experiment_id!r}"):
            return self._experiment(self.client.get_experiment(experiment_id))

    def get_experiment_by_name(self, name):
        with self._translate(errors.ExperimentNotFound, f"experiment {name!r}"):
            found = self.client.get_experiment_by_name(name)
        return self._experiment(found) if found is not None else None

    def search_experiments(self, name_like, view, max_results, page_token):
        # ``name_like`` is checked by the caller: no quote can occur in it.
        filter_string = f"name LIKE '{name_like}%'" if name_like else None
        with (
            self._page_token_checked(page_token),
            self._translate(errors.ExperimentNotFound, "experiment"),
        ):
            result = self.client.search_experiments(
                view_type=_VIEW_TYPES[view],
                max_results=max_results,
                filter_string=filter_string,
                order_by=["name ASC"],
                page_token=page_token,
            )
        return Page([self._experiment(exp) for exp in result], _next_token(result))

    def find_logged_model(self, run, name):
        with self._translate(errors.NotFound, f"logged models of run {run.run_id!r}"):
            for model_id in run.logged_model_ids:
                if self.client.get_logged_model(model_id).name == name:
                    return model_id
            # Models logged under a run without being recorded as its outputs.
            for lm in self.client.search_logged_models(
                experiment_ids=[run.experiment_id],
                filter_string=f"source_run_id = '{run.run_id}'",
            ):
                if lm.name == name:
                    return lm.model_id
        return None

    def run_artifact_exists(self, run, path):
        parent, _, leaf = path.rpartition("/")
        with self._translate(errors.RunNotFound, f"run {run.run_id!r}"):
            entries = self.artifact_client.list_artifacts(run.run_id, parent or None)
        return any(entry.path.rstrip("/").rpartition("/")[2] == leaf for entry in entries)

    def read_run_artifact(self, run_id, path, max_bytes):
        parent = path.rpartition("/")[0]
        with self._translate(errors.RunNotFound, f"run {run_id!r}"):
            entries = self.artifact_client.list_artifacts(run_id, parent or None)
            entry = next((e for e in entries if e.path.rstrip("/") == path), None)
            if entry is None or entry.is_dir or (entry.file_size or 0) > max_bytes:
                return None
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(self.artifact_client.download_artifacts(run_id, path, tmp))
                # Some stores list no size: the cap is checked on the file itself.
                if local.stat().st_size > max_bytes:
                    return None
                return local.read_bytes()

    def ping(self):
        with self._translate(errors.NotFound, "registry"):
            self.client.search_registered_models(max_results=1)
