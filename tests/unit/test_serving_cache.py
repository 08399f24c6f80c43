"""The model cache: one load per version however many ask, LRU by count and size,
and a failed load not retried on every request."""

from __future__ import annotations

import threading
import time

import pytest

from registry_service.db.base import utcnow
from registry_service.serving.cache import LoadedModel, ModelCache, ModelLoadFailed


class CountingLoader:
    def __init__(self, size=100, fail=()):
        self.calls: list[tuple[str, int]] = []
        self.size = size
        self.fail = set(fail)

    def __call__(self, name, version):
        self.calls.append((name, version))
        time.sleep(0.05)
        if (name, version) in self.fail:
            raise ModelLoadFailed("broken artifacts")
        return LoadedModel(name, version, object(), self.size, 0.05, utcnow())


def test_concurrent_requests_load_a_version_once():
    loader = CountingLoader()
    cache = ModelCache(loader)
    threads = [threading.Thread(target=cache.get, args=("m", 1)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loader.calls == [("m", 1)]
    assert cache.peek("m", 1).hits == 8


def test_least_recently_used_goes_first_by_count_and_by_size():
    loader = CountingLoader(size=100)
    cache = ModelCache(loader, max_models=2, max_bytes=10_000)
    cache.get("m", 1)
    cache.get("m", 2)
    cache.get("m", 1)
    cache.get("m", 3)
    assert {(m.name, m.version) for m in cache.loaded()} == {("m", 1), ("m", 3)}
    small = ModelCache(CountingLoader(size=600), max_models=10, max_bytes=1000)
    small.get("m", 1)
    small.get("m", 2)
    assert [m.version for m in small.loaded()] == [2] and small.evictions == 1


def test_a_failed_load_is_remembered_briefly_then_retried():
    loader = CountingLoader(fail={("m", 9)})
    cache = ModelCache(loader)
    for _ in range(3):
        with pytest.raises(ModelLoadFailed):
            cache.get("m", 9)
    assert loader.calls == [("m", 9)]
    cache.forget_failures()
    with pytest.raises(ModelLoadFailed):
        cache.get("m", 9)
    assert len(loader.calls) == 2


class DownloadingGateway:
    """Stands in for MLflow: counts downloads of a tiny pyfunc-less folder."""

    def __init__(self, created_at="2026-01-01"):
        self.downloads = 0
        self.created_at = created_at

    def get_model_version(self, name, version):
        from types import SimpleNamespace

        return SimpleNamespace(source=f"models:/m-{version}", created_at=self.created_at)

    def download_model_version(self, name, version, dst_dir):
        from pathlib import Path

        self.downloads += 1
        folder = Path(dst_dir) / "model"
        folder.mkdir()
        (folder / "MLmodel").write_text("flavors: {}\n")
        return str(folder)


def test_downloads_are_shared_on_disk_and_keyed_by_the_version_s_identity(tmp_path):
    from registry_service.serving.cache import PyfuncLoader

    gateway = DownloadingGateway()
    first, second = PyfuncLoader(gateway, tmp_path), PyfuncLoader(gateway, tmp_path)
    one = first._verified_copy("m", 1)[0]
    assert (one / "MLmodel").is_file() and gateway.downloads == 1
    assert second._verified_copy("m", 1)[0] == one and gateway.downloads == 1  # another process
    recreated = PyfuncLoader(DownloadingGateway(created_at="2026-02-02"), tmp_path)
    assert recreated._verified_copy("m", 1)[0] != one  # same name and number, new model
    assert not [p for p in (tmp_path / "artifacts").iterdir() if p.name.count("-") == 1]
