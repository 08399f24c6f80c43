"""Manifests, signatures and the pickle scan on plain folders, and the serving loader
refusing files that differ from the recorded manifest."""

from __future__ import annotations

import base64
import json
import os
import pickle
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from registry_service.services.integrity import IntegrityService, Recorded
from registry_service.services.manifests import (
    SigningKey,
    compare,
    manifest_of,
    root_digest,
    scan_folder,
    signed_manifest,
    verify_folder,
)
from registry_service.serving.cache import IntegrityFailed, PyfuncLoader


class RunsACommand:
    """Unpickling this runs a shell command: what the scan must find without running."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def model_folder(root: Path) -> Path:
    folder = root / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "MLmodel").write_text("flavors: {}\n")
    (folder / "a.txt").write_text("alpha\n")
    (folder / "a").mkdir()
    (folder / "a" / "b").write_text("nested\n")
    (folder / "sub" / "weights.bin").write_bytes(bytes(range(256)))
    return folder


@pytest.fixture
def key(tmp_path) -> SigningKey:
    return SigningKey(tmp_path / "keys" / "signing.pem", create=True)


def test_the_manifest_digest_changes_when_one_byte_of_a_file_does(tmp_path):
    folder = model_folder(tmp_path)
    before = manifest_of(folder)
    assert set(before.files) == {"MLmodel", "a.txt", "a/b", "sub/weights.bin"}
    assert manifest_of(folder) == before  # stable
    data = bytearray((folder / "sub" / "weights.bin").read_bytes())
    data[100] ^= 1
    (folder / "sub" / "weights.bin").write_bytes(bytes(data))
    after = manifest_of(folder)
    assert after.digest != before.digest
    assert compare(before.files, after.files) == [
        {
            "path": "sub/weights.bin",
            "problem": "changed",
            "expected": before.files["sub/weights.bin"],
            "actual": after.files["sub/weights.bin"],
        }
    ]


def test_the_signed_digest_is_model_signing_s_own(tmp_path, key):
    folder = model_folder(tmp_path)
    bundle, signed = key.sign(folder)
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["subject"][0]["digest"]["sha256"] == signed.digest
    # "a.txt" sorts before "a/b" as text, after it path part by path part.
    assert signed.digest == root_digest(signed.files) == manifest_of(folder).digest
    assert signed == signed_manifest(bundle)


def test_the_signature_verifies_with_the_public_key_and_fails_on_one_byte(tmp_path, key):
    folder = model_folder(tmp_path)
    bundle, signed = key.sign(folder)
    good = verify_folder(folder, bundle, key.public_pem)
    assert good.ok and good.signature == "valid" and good.actual_digest == signed.digest

    (folder / "a.txt").write_text("alphA\n")
    changed = verify_folder(folder, bundle, key.public_pem)
    assert not changed.ok and changed.signature == "valid"
    assert [(m["path"], m["problem"]) for m in changed.mismatches] == [("a.txt", "changed")]
    (folder / "a.txt").write_text("alpha\n")
    (folder / "extra.pkl").write_bytes(b"\x80\x04N.")
    (folder / "a" / "b").unlink()
    extra = verify_folder(folder, bundle, key.public_pem)
    assert {(m["path"], m["problem"]) for m in extra.mismatches} == {
        ("a/b", "missing"),
        ("extra.pkl", "unexpected"),
    }
    (folder / "extra.pkl").unlink()
    (folder / "a" / "b").write_text("nested\n")
    assert verify_folder(folder, bundle, key.public_pem).ok

    # One byte of the signed statement: the signature no longer holds.
    forged = json.loads(json.dumps(bundle))
    payload = bytearray(base64.b64decode(forged["dsseEnvelope"]["payload"]))
    at = payload.index(signed.files["a.txt"].encode())
    payload[at] = ord("0") if payload[at] != ord("0") else ord("1")
    forged["dsseEnvelope"]["payload"] = base64.b64encode(bytes(payload)).decode()
    result = verify_folder(folder, forged, key.public_pem)
    assert not result.ok and result.signature == "invalid"

    other = SigningKey(tmp_path / "other.pem", create=True)
    assert verify_folder(folder, bundle, other.public_pem).signature == "other-key"


def test_the_key_is_made_once_private_to_its_owner_and_kept(tmp_path):
    path = tmp_path / "data" / "signing" / "key.pem"
    first = SigningKey(path, create=True)
    assert not path.exists()  # made on first use
    key_id = first.key_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SigningKey(path, create=True).key_id == key_id
    with pytest.raises(ValueError, match="REGISTRY_SIGNING_KEY_FILE"):
        SigningKey(tmp_path / "missing.pem", create=False)


def test_the_scan_flags_os_system_without_unpickling(tmp_path):
    folder = model_folder(tmp_path)
    marker = tmp_path / "ran"
    (folder / "model.pkl").write_bytes(pickle.dumps(RunsACommand(marker)))
    # An old text pickle under another name is still a pickle.
    (folder / "notes.txt").write_bytes(pickle.dumps(RunsACommand(marker), protocol=0))
    (folder / "conda.yaml").write_text("channels:\n- conda-forge\n")
    scan = scan_folder(folder)
    assert scan["verdict"] == "dangerous" and scan["scanner"].startswith("picklescan ")
    assert set(scan["files"]) == {"model.pkl", "notes.txt"}
    assert scan["files"]["model.pkl"]["dangerous"] == [f"{os.system.__module__}.system"]
    assert not marker.exists()


def test_a_plain_estimator_pickle_is_not_dangerous(tmp_path):
    from sklearn.linear_model import LogisticRegression

    folder = model_folder(tmp_path)
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    (folder / "model.pkl").write_bytes(pickle.dumps(model))
    scan = scan_folder(folder)
    assert scan["verdict"] != "dangerous"
    assert all(not f["dangerous"] for f in scan["files"].values())
    (folder / "model.pkl").unlink()
    clean = scan_folder(folder)
    assert clean["verdict"] == "clean" and clean["files"] == {}


class SealedGateway:
    """Stands in for MLflow: serves a copy of ``source`` as version 1."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.downloads = 0

    def get_model_version(self, name, version):
        return SimpleNamespace(source="models:/m-1", created_at="2026-01-01", run_id="r1")

    def download_model_version(self, name, version, dst_dir):
        import shutil

        self.downloads += 1
        return shutil.copytree(self.source, Path(dst_dir) / "model")


class Recordings:
    """The recorded manifests, as IntegrityService answers them."""

    def __init__(self, recorded: Recorded | None) -> None:
        self.found = recorded

    def recorded(self, name, version, run_id):
        return self.found

    check = IntegrityService.check


def test_the_loader_refuses_a_download_that_differs_and_re_checks_its_disk_copy(tmp_path):
    source = model_folder(tmp_path / "store")
    manifest = manifest_of(source)
    gateway = SealedGateway(source)
    recorded = Recorded(manifest.digest, manifest.files, {}, None, None)
    loader = PyfuncLoader(gateway, tmp_path / "work", Recordings(recorded))

    local, expected = loader._verified_copy("m", 1)
    assert expected is recorded and gateway.downloads == 1
    assert local.parent.name == manifest.digest[:40]  # keyed by the content
    assert loader._verified_copy("m", 1)[0] == local and gateway.downloads == 1

    (local / "a.txt").write_text("changed on disk\n")  # the copy on disk: fetched again
    assert loader._verified_copy("m", 1)[0] == local and gateway.downloads == 2
    assert (local / "a.txt").read_text() == "alpha\n"

    (source / "a.txt").write_text("changed in the store\n")
    (local / "a.txt").write_text("changed on disk\n")
    with pytest.raises(IntegrityFailed) as refused:
        loader("m", 1)
    assert refused.value.files == ["a.txt"] and refused.value.digest == manifest.digest
    assert not list((tmp_path / "work" / "artifacts").glob("*-*"))  # no staging left
    assert not local.exists()  # nothing unverified is kept


def test_a_version_without_a_manifest_loads_unverified_as_before(tmp_path):
    source = model_folder(tmp_path / "store")
    loader = PyfuncLoader(SealedGateway(source), tmp_path / "work", Recordings(None))
    local, expected = loader._verified_copy("m", 1)
    assert expected is None and (local / "MLmodel").is_file()
    assert len(local.parent.name) == 32  # keyed by source and creation time
