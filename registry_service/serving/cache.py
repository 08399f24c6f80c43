"""Loaded models, once per process: an LRU bounded by count and by size, each loaded
only after its files matched the manifest recorded when it was registered.

A model's size is the size of its artifacts on disk, a stable stand-in for the memory a
loaded model takes (a pickled estimator unpickles to about its file size).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from registry_service.db.base import utcnow
from registry_service.errors import RegistryError

log = logging.getLogger(__name__)
# A version that failed to load is not retried on every request.
FAILURE_MEMORY_SECONDS = 10.0


class ModelLoadFailed(Exception):
    """The version could not be loaded; callers fall back or answer 503."""


class IntegrityFailed(ModelLoadFailed):
    """The version's files differ from the manifest recorded (and signed) when it was
    registered: it is never loaded, so nothing in them runs."""

    def __init__(
        self, message: str, mismatches: list[dict[str, Any]] | None = None, digest: str = ""
    ) -> None:
        super().__init__(message)
        self.mismatches = list(mismatches or [])
        self.digest = digest

    @property
    def files(self) -> list[str]:
        return [str(m.get("path")) for m in self.mismatches]


class ModelRefusedInput(ModelLoadFailed):
    """The model raised ValueError or TypeError on this input (NaN, a shape it cannot
    take): the input's fault when the previous holder refuses it too, or none exists."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class LoadedModel:
    name: str
    version: int
    model: Any
    size_bytes: int
    load_seconds: float
    loaded_at: datetime
    hits: int = 0
    # verified: its files matched the recorded manifest; unverified: none was recorded
    # (registered before manifests were kept).
    integrity: str = "unverified"

    @property
    def metadata(self) -> Any:
        return getattr(self.model, "metadata", None)

    @property
    def input_schema(self) -> Any:
        meta = self.metadata
        return meta.get_input_schema() if meta is not None else None

    @property
    def output_schema(self) -> Any:
        meta = self.metadata
        return meta.get_output_schema() if meta is not None else None


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class PyfuncLoader:
    """Downloads a version's artifacts through the gateway, checks them against the
    manifest recorded at registration, and loads them as pyfunc.

    Downloads are kept on disk under ``work_dir``, shared by every process on the host:
    when a promotion reaches all workers at once, one downloads and the others wait for
    it and load from disk; a restart loads from disk too. A version with a manifest is
    kept under its manifest's digest (its content), and its files are checked against
    the manifest at every load, from disk too: a copy changed on disk is downloaded
    again, a download that differs is refused (``IntegrityFailed``). A version without
    one (registered before manifests were kept) is keyed by its source and creation
    time, so a model re-created under an old name and number is downloaded afresh.
    """

    def __init__(self, gateway: Any, work_dir: Path, integrity: Any = None) -> None:
        """``integrity``: the recorded manifests (services.integrity.IntegrityService);
        None loads everything unverified."""
        self.gateway = gateway
        self.work_dir = work_dir
        self.integrity = integrity

    def __call__(self, name: str, version: int) -> LoadedModel:
        import mlflow.pyfunc

        started = time.perf_counter()
        try:
            local, expected = self._verified_copy(name, version)
            model = mlflow.pyfunc.load_model(str(local))
        except IntegrityFailed:
            raise
        except Exception as exc:
            if isinstance(exc, RegistryError):
                raise ModelLoadFailed(exc.detail) from exc
            raise ModelLoadFailed(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        return LoadedModel(
            name=name,
            version=version,
            model=model,
            size_bytes=_dir_size(local),
            load_seconds=time.perf_counter() - started,
            loaded_at=utcnow(),
            integrity="verified" if expected is not None else "unverified",
        )

    def _verified_copy(self, name: str, version: int) -> tuple[Path, Any]:
        """The version's files on disk, checked against its recorded manifest; with
        that manifest (None when none was recorded)."""
        import fcntl

        mv = self.gateway.get_model_version(name, version)
        expected = None
        if self.integrity is not None:
            expected = self.integrity.recorded(name, version, mv.run_id)
        if expected is not None:
            key = expected.digest[:40]  # the content: a download holds these bytes only
        else:
            identity = f"{name}\x00{version}\x00{mv.source}\x00{mv.created_at}"
            key = hashlib.sha256(identity.encode()).hexdigest()[:32]
        root = self.work_dir / "artifacts"
        root.mkdir(parents=True, exist_ok=True)
        done = root / key
        with open(root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # other processes wait for this download
            if (done / "path").is_file():
                local = done / (done / "path").read_text()
                if expected is None or not self.integrity.check(local, expected):
                    return local, expected
                log.warning(
                    "the copy of %s version %s on disk no longer matches its manifest: "
                    "downloading it again",
                    name,
                    version,
                )
            shutil.rmtree(done, ignore_errors=True)  # what a crash mid-rename could leave
            staging = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=root))
            try:
                local = Path(self.gateway.download_model_version(name, version, str(staging)))
                differ = self.integrity.check(local, expected) if expected is not None else []
                if differ:
                    raise IntegrityFailed(
                        f"the files of version {version} of {name!r} differ from the manifest "
                        f"recorded at registration: "
                        + ", ".join(f"{m['path']} ({m['problem']})" for m in differ[:10]),
                        differ,
                        expected.digest,
                    )
                (staging / "path").write_text(str(local.relative_to(staging)))
                os.rename(staging, done)  # complete folders only, never half a download
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            return done / (done / "path").read_text(), expected


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    failed_at: float | None = None
    failure: ModelLoadFailed | None = None


def _again(error: ModelLoadFailed | None) -> ModelLoadFailed:
    """A remembered failure raised anew, of the same kind (an integrity failure stays
    one, so the caller still audits it)."""
    if isinstance(error, IntegrityFailed):
        return IntegrityFailed(str(error), error.mismatches, error.digest)
    return ModelLoadFailed(str(error) if error is not None else "the last load failed")


class ModelCache:
    def __init__(
        self,
        loader: Callable[[str, int], LoadedModel],
        max_models: int = 8,
        max_bytes: int = 2 * 1024**3,
        on_load: Callable[[str, float, bool], None] | None = None,
    ) -> None:
        """``on_load(name, seconds, succeeded)`` hears of every load attempt."""
        self.loader = loader
        self.on_load = on_load
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._models: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._slots: dict[tuple[str, int], _Slot] = {}
        self._lock = threading.Lock()
        self.evictions = 0

    def peek(self, name: str, version: int) -> LoadedModel | None:
        with self._lock:
            return self._models.get((name, version))

    def get(self, name: str, version: int) -> LoadedModel:
        """The loaded version; loads it once however many threads ask at the same time."""
        key = (name, version)
        with self._lock:
            loaded = self._models.get(key)
            if loaded is not None:
                self._models.move_to_end(key)
                loaded.hits += 1
                return loaded
            slot = self._slots.setdefault(key, _Slot())
        with slot.lock:
            with self._lock:
                loaded = self._models.get(key)
                if loaded is not None:
                    loaded.hits += 1
                    return loaded
            if slot.failed_at and time.monotonic() - slot.failed_at < FAILURE_MEMORY_SECONDS:
                raise _again(slot.failure)
            started = time.perf_counter()
            try:
                loaded = self.loader(name, version)
            except ModelLoadFailed as exc:
                if self.on_load is not None:
                    self.on_load(name, time.perf_counter() - started, False)
                slot.failed_at, slot.failure = time.monotonic(), _again(exc)
                log.warning("could not load %s version %s: %s", name, version, exc)
                raise
            if self.on_load is not None:
                self.on_load(name, time.perf_counter() - started, True)
            slot.failed_at = slot.failure = None
            loaded.hits = 1
            with self._lock:
                self._models[key] = loaded
                self._evict()
            return loaded

    def _evict(self) -> None:
        while len(self._models) > 1 and (
            len(self._models) > self.max_models
            or sum(m.size_bytes for m in self._models.values()) > self.max_bytes
        ):
            self._models.popitem(last=False)
            self.evictions += 1

    def forget_failures(self) -> None:
        with self._lock:
            for slot in self._slots.values():
                slot.failed_at = None

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())

    def clear(self) -> None:
        with self._lock:
            self._models = OrderedDict()
