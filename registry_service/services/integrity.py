"""A version's artifacts in the registry: sealed at registration (a manifest signed with
the registry's key, and the pickle scan's findings, kept with the lineage), what a
promotion request snapshots of them, what serving checks before it loads, and a version
verified again against its artifact store."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry_service.db.database import Database
from registry_service.db.models import VersionLineageRow
from registry_service.domain.names import check_model_name
from registry_service.errors import (
    ArtifactsUnreadable,
    ManifestNotFound,
    UpstreamError,
    UpstreamUnavailable,
)
from registry_service.gateway.base import RegistryGateway
from registry_service.services.manifests import (
    KEY_ALGORITHM,
    SIGNATURE_FORMAT,
    Manifest,
    ManifestError,
    SigningKey,
    compare,
    manifest_of,
    scan_folder,
    signed_manifest,
    verify_folder,
)

# What a promotion's evidence and a loaded model say of a version with no manifest:
# registered before manifests were kept (or outside the service).
UNVERIFIED = "unverified"


@dataclass(frozen=True)
class Seal:
    """What registration records of a version's artifacts."""

    manifest: Manifest
    bundle: dict[str, Any]
    key_id: str
    scan: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "manifest_digest": self.manifest.digest,
            "signing_key_id": self.key_id,
            "scan_verdict": self.scan["verdict"],
        }


@dataclass(frozen=True)
class Recorded:
    """A version's manifest as recorded at registration."""

    digest: str
    files: dict[str, str]
    bundle: dict[str, Any]
    key_id: str | None
    scan: dict[str, Any] | None


def _nothing_there(exc: Exception) -> bool:
    """Whether a failed download found no files at all: MLflow lists an empty folder,
    then fetches it as a file and is answered 404 (or, on a local store, no such file)."""
    if isinstance(exc, FileNotFoundError):
        return True
    if isinstance(exc, UpstreamUnavailable):
        return False
    said = f"{exc} {exc.__cause__ or ''}"
    return "RESOURCE_DOES_NOT_EXIST" in said or "No such file or directory" in said


def _row(session: Session, name: str, version: int) -> VersionLineageRow | None:
    return session.execute(
        select(VersionLineageRow).where(
            VersionLineageRow.model_name == name, VersionLineageRow.version == version
        )
    ).scalar_one_or_none()


def _recorded(row: VersionLineageRow | None, run_id: str | None) -> Recorded | None:
    """None when no manifest was kept, or the row is an earlier model's of that name and
    number (a model deleted and made again in MLflow numbers its versions from 1)."""
    if row is None or row.manifest_digest is None or row.run_id != run_id:
        return None
    return Recorded(
        digest=row.manifest_digest,
        files=dict(row.manifest_files or {}),
        bundle=dict(row.manifest_signature or {}),
        key_id=row.signing_key_id,
        scan=row.scan_findings,
    )


class IntegrityService:
    def __init__(self, gateway: RegistryGateway, db: Database, key: SigningKey) -> None:
        self.gateway = gateway
        self.db = db
        self.key = key

    # -- registration
    def seal(self, name: str, version: int) -> Seal:
        """Download the version's artifacts, sign their manifest and scan its pickles. A
        version whose artifact location holds nothing (the store answers "not found") is
        sealed empty: any file that appears there later is refused."""
        with tempfile.TemporaryDirectory(prefix="registry-seal-") as tmp:
            folder = self._download(name, version, tmp)
            try:
                bundle, manifest = self.key.sign(folder)
                scan = scan_folder(folder)
            except (ManifestError, OSError) as exc:
                raise ArtifactsUnreadable(
                    f"version {version} of {name!r} could not be sealed: {exc}"
                ) from exc
        return Seal(manifest, bundle, self.key.key_id, scan)

    def _download(self, name: str, version: int, into: str) -> Path:
        """The version's files, as the artifact store holds them now (none: an empty
        folder)."""
        try:
            return Path(self.gateway.download_model_version(name, version, into))
        except (UpstreamError, FileNotFoundError) as exc:
            if not _nothing_there(exc):
                raise
        empty = Path(into) / "empty"
        empty.mkdir()
        return empty

    @staticmethod
    def stamp(row: VersionLineageRow, seal: Seal) -> None:
        """Keep ``seal`` with the version's lineage (in the registration's transaction)."""
        row.manifest_digest = seal.manifest.digest
        row.manifest_files = seal.manifest.files
        row.manifest_signature = seal.bundle
        row.signing_key_id = seal.key_id
        row.scan_verdict = seal.scan["verdict"]
        row.scan_findings = seal.scan

    # -- what others read
    def recorded(self, name: str, version: int, run_id: str | None) -> Recorded | None:
        with self.db.read() as session:
            return _recorded(_row(session, name, version), run_id)

    def evidence(
        self, session: Session, name: str, version: int, run_id: str | None
    ) -> dict[str, Any]:
        """What a promotion request keeps of the version's artifacts: the digest the
        approvers approve, and the scan's verdict and findings."""
        recorded = _recorded(_row(session, name, version), run_id)
        if recorded is None:
            return {"status": UNVERIFIED, "manifest_digest": None, "scan_verdict": None}
        scan = recorded.scan or {}
        return {
            "status": "sealed",
            "manifest_digest": recorded.digest,
            "signing_key_id": recorded.key_id,
            "scan_verdict": scan.get("verdict"),
            "scanner": scan.get("scanner"),
            "findings": scan.get("files") or {},
        }

    def check(self, folder: Path, recorded: Recorded) -> list[dict[str, Any]]:
        """The files under ``folder`` that differ from the recorded manifest."""
        try:
            found = manifest_of(folder)
        except ManifestError as exc:
            return [{"path": None, "problem": "unreadable", "detail": str(exc)}]
        return compare(recorded.files, found.files)

    # -- the endpoints
    def manifest(self, name: str, version: int) -> dict[str, Any]:
        """The signed manifest, with the registry's public key to check it."""
        check_model_name(name)
        mv = self.gateway.get_model_version(name, version)
        recorded = self.recorded(name, version, mv.run_id)
        if recorded is None:
            raise ManifestNotFound(
                f"version {version} of {name!r} was registered before manifests were kept "
                "(or outside the registry): its integrity is unverified"
            )
        return {
            "model_name": name,
            "version": version,
            "manifest_digest": recorded.digest,
            "files": recorded.files,
            "signature": recorded.bundle,
            "signing_key_id": recorded.key_id,
            "format": SIGNATURE_FORMAT,
            "algorithm": KEY_ALGORITHM,
            "key_id": self.key.key_id,
            "public_key": self.key.public_pem.decode(),
            "scan": recorded.scan,
        }

    def verify(self, name: str, version: int) -> dict[str, Any]:
        """Download the version again and check it against its signed manifest."""
        check_model_name(name)
        mv = self.gateway.get_model_version(name, version)
        recorded = self.recorded(name, version, mv.run_id)
        base = {"model_name": name, "version": version, "key_id": self.key.key_id}
        if recorded is None:
            return {
                **base,
                "ok": False,
                "integrity": UNVERIFIED,
                "signature": None,
                "manifest_digest": None,
                "actual_digest": None,
                "mismatches": [],
                "detail": "no manifest was recorded for this version",
            }
        with tempfile.TemporaryDirectory(prefix="registry-verify-") as tmp:
            folder = self._download(name, version, tmp)
            try:
                result = verify_folder(folder, recorded.bundle, self.key.public_pem).as_dict()
            except ManifestError as exc:
                raise ArtifactsUnreadable(f"version {version} of {name!r}: {exc}") from exc
        signed = signed_manifest(recorded.bundle) if result["signature"] == "valid" else None
        if signed is not None and (signed.files, signed.digest) != (
            recorded.files,
            recorded.digest,
        ):
            # The signature holds, but the copy kept beside it (what serving checks) does not.
            result["ok"] = False
            result["mismatches"].append(
                {
                    "path": None,
                    "problem": "record-differs",
                    "expected": signed.digest,
                    "actual": recorded.digest,
                }
            )
        return {**base, **result, "integrity": "verified" if result["ok"] else "failed"}
