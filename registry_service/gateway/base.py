"""What the service needs from a model registry, in the style of MLflow's AbstractStore."""

from __future__ import annotations

from abc import ABC, abstractmethod

from registry_service.domain.entities import (
    Experiment,
    ModelVersion,
    Page,
    RegisteredModel,
    Run,
    Stage,
    TransitionResult,
)


class RegistryGateway(ABC):
    """Every method raises registry_service.errors types, never MLflow's."""

    # -- registered models
    @abstractmethod
    def get_registered_model(self, name: str) -> RegisteredModel: ...

    @abstractmethod
    def search_registered_models(
        self, name_like: str | None, max_results: int, page_token: str | None
    ) -> Page[RegisteredModel]:
        """``name_like`` is a validated prefix; MLflow treats '_' in it as a wildcard."""

    @abstractmethod
    def create_registered_model(
        self, name: str, description: str | None, tags: dict[str, str]
    ) -> RegisteredModel: ...

    @abstractmethod
    def update_registered_model(
        self,
        name: str,
        description: str | None = None,
        set_tags: dict[str, str] | None = None,
        delete_tags: list[str] | None = None,
    ) -> RegisteredModel: ...

    @abstractmethod
    def delete_registered_model(self, name: str) -> None: ...

    # -- model versions
    @abstractmethod
    def get_model_version(self, name: str, version: int) -> ModelVersion: ...

    @abstractmethod
    def search_model_versions(
        self, name: str, max_results: int, page_token: str | None
    ) -> Page[ModelVersion]:
        """Versions of one model, newest first."""

    @abstractmethod
    def create_model_version(
        self,
        name: str,
        source: str,
        run_id: str | None,
        description: str | None,
        tags: dict[str, str],
        model_id: str | None = None,
    ) -> ModelVersion: ...

    @abstractmethod
    def update_model_version(
        self,
        name: str,
        version: int,
        description: str | None = None,
        set_tags: dict[str, str] | None = None,
        delete_tags: list[str] | None = None,
    ) -> ModelVersion: ...

    @abstractmethod
    def delete_model_version(self, name: str, version: int) -> None: ...

    @abstractmethod
    def transition_stage(
        self,
        name: str,
        version: int,
        stage: Stage,
        archive_existing: bool,
        in_stage: list[int] | None = None,
    ) -> TransitionResult:
        """Move a version to ``stage``; with ``archive_existing``, archive the other
        versions in that stage (Staging/Production only). ``in_stage``: the versions
        in ``stage``, when the caller has just read them."""

    @abstractmethod
    def set_alias(self, name: str, alias: str, version: int) -> int | None:
        """Point ``alias`` at ``version``; return the version it pointed at before."""

    @abstractmethod
    def delete_alias(self, name: str, alias: str) -> int | None:
        """Remove ``alias``; return the version it pointed at, None if it was unset."""

    @abstractmethod
    def get_version_by_alias(self, name: str, alias: str) -> ModelVersion: ...

    @abstractmethod
    def versions_in_stage(self, name: str, stage: Stage) -> list[int]: ...

    @abstractmethod
    def all_versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, as a version search gives them (no aliases)."""

    @abstractmethod
    def download_model_version(self, name: str, version: int, dst_dir: str) -> str:
        """Copy a version's model artifacts into ``dst_dir``; return the model folder."""

    # -- tracking
    @abstractmethod
    def get_run(self, run_id: str) -> Run: ...

    @abstractmethod
    def search_runs(
        self,
        experiment_ids: list[str],
        filter_string: str | None,
        order_by: list[str] | None,
        max_results: int,
        page_token: str | None,
    ) -> Page[Run]:
        """Active runs, in MLflow's search syntax; runs missing an ordering metric sort last."""

    @abstractmethod
    def get_experiment(self, experiment_id: str) -> Experiment: ...

    @abstractmethod
    def get_experiment_by_name(self, name: str) -> Experiment | None: ...

    @abstractmethod
    def search_experiments(
        self, name_like: str | None, view: str, max_results: int, page_token: str | None
    ) -> Page[Experiment]:
        """Experiments by name; ``view`` is active, deleted or all."""

    @abstractmethod
    def find_logged_model(self, run: Run, name: str) -> str | None:
        """The id of the model named ``name`` logged by ``run`` (MLflow 3 LoggedModel)."""

    @abstractmethod
    def run_artifact_exists(self, run: Run, path: str) -> bool: ...

    @abstractmethod
    def read_run_artifact(self, run_id: str, path: str, max_bytes: int) -> bytes | None:
        """A small run artifact's bytes; None when it is absent or larger than max_bytes."""

    # -- health
    @abstractmethod
    def ping(self) -> None:
        """Raise UpstreamUnavailable unless the registry answers."""
