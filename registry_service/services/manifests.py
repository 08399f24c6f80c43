"""What a version's bytes are: a manifest of its files, signed with the registry's key,
and what a pickle scan finds in them. Files in, plain data out: no database, no Flask,
so the service, the serving loader and the CLI share one definition.

Manifests and signatures are OpenSSF model-signing's (``model_signing``): the SHA-256 of
every file, and one digest over those (in path order) as the subject of an in-toto
statement, in a DSSE envelope inside a Sigstore bundle, signed with an ECDSA P-256 key.
Anyone holding the public key can check an exported version without this service, with
``registry-service versions verify`` or model-signing's own ``model_signing verify key``.

The scan is picklescan's: it reads a pickle's opcodes (``pickletools``) and names the
globals it would import, never unpickling anything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib.metadata
import json
import logging
import os
import pickletools
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SIGNATURE_FORMAT = "model-signing v1.0: Sigstore bundle, DSSE envelope, in-toto statement"
KEY_ALGORITHM = "ECDSA P-256, SHA-256"
# Verdicts of the pickle scan, mildest first. Only "dangerous" blocks a promotion.
CLEAN, SUSPICIOUS, DANGEROUS = "clean", "suspicious", "dangerous"
# Files that are pickles, or archives of them, by name (picklescan's own lists) ...
PICKLE_SUFFIXES = frozenset(
    {".pkl", ".pickle", ".joblib", ".dat", ".data", ".bin", ".pt", ".pth", ".ckpt"}
    | {".npy", ".npz", ".zip", ".7z", ".skops"}
)
# ... or by their first bytes: a pickle's PROTO opcode, numpy, zip, 7z.
MAGIC_PREFIXES = (
    *(bytes([0x80, n]) for n in range(6)),
    b"\x93NUMPY",
    b"PK\x03\x04",
    b"7z\xbc\xaf\x27\x1c",
)


class ManifestError(Exception):
    """The files or the signature could not be read (not: they do not match)."""


@dataclass(frozen=True)
class Manifest:
    """The SHA-256 of every file (relative POSIX path -> hex), and one digest over them."""

    digest: str
    files: dict[str, str]


@dataclass(frozen=True)
class Verification:
    """A folder checked against a signed manifest."""

    ok: bool
    signature: str  # valid | invalid | other-key
    digest: str | None  # the signed manifest's digest
    actual_digest: str | None  # the digest of the files found
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "signature": self.signature,
            "manifest_digest": self.digest,
            "actual_digest": self.actual_digest,
            "mismatches": self.mismatches,
            "detail": self.detail,
        }


def _hashing() -> Any:
    """One hashing configuration for signing and checking: every file, SHA-256, no
    symlinks (git files are not skipped: whatever the store holds is what loads)."""
    from model_signing import hashing

    config = hashing.Config().set_ignored_paths(paths=[], ignore_git_paths=False)
    return config.use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)


def root_digest(files: dict[str, str]) -> str:
    """model-signing's subject digest: SHA-256 over the file digests, in path order
    (compared part by part, as its manifest sorts paths)."""
    hasher = hashlib.sha256()
    for path in sorted(files, key=lambda p: tuple(p.split("/"))):
        hasher.update(bytes.fromhex(files[path]))
    return hasher.hexdigest()


def manifest_of(folder: Path) -> Manifest:
    """The manifest of the files under ``folder`` as they are now."""
    try:
        hashed = _hashing().hash(folder)
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot hash {folder.name}: {exc}") from exc
    files = {rd.identifier: rd.digest.digest_hex for rd in hashed.resource_descriptors()}
    return Manifest(root_digest(files), files)


def compare(expected: dict[str, str], actual: dict[str, str]) -> list[dict[str, Any]]:
    """Each file that differs: changed, missing (expected, not found) or unexpected."""
    out = []
    for path in sorted(set(expected) | set(actual)):
        want, got = expected.get(path), actual.get(path)
        if want == got:
            continue
        problem = "missing" if got is None else "unexpected" if want is None else "changed"
        out.append({"path": path, "problem": problem, "expected": want, "actual": got})
    return out


def signed_manifest(bundle: dict[str, Any]) -> Manifest:
    """The manifest a bundle carries, read without checking its signature."""
    try:
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        digest = statement["subject"][0]["digest"]["sha256"]
        files = {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
    except (KeyError, IndexError, TypeError, ValueError, binascii.Error) as exc:
        raise ManifestError(f"not a model-signing bundle: {exc!r}") from exc
    return Manifest(digest, files)


def key_id_of(public_pem: bytes) -> str:
    """model-signing's key hint: SHA-256 of the PEM public key."""
    return hashlib.sha256(public_pem).hexdigest()


def bundle_key_id(bundle: dict[str, Any]) -> str | None:
    return ((bundle.get("verificationMaterial") or {}).get("publicKey") or {}).get("hint")


class SigningKey:
    """The registry's ECDSA P-256 key pair. The private key lives in a PEM file (0600),
    never in the database; ``create`` makes one there on first use when it is missing."""

    def __init__(self, path: Path, create: bool) -> None:
        self.path = path
        self.create = create
        self._public: bytes | None = None
        self._lock = threading.Lock()
        if not create and not path.is_file():
            raise ValueError(f"REGISTRY_SIGNING_KEY_FILE: no key file at {path}")

    @property
    def public_pem(self) -> bytes:
        return self._ensure()

    def _ensure(self) -> bytes:
        """The public key, once the key pair is read (or made, on first use)."""
        with self._lock:
            if self._public is None:
                self._public = self._load_or_create()
            return self._public

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_pem)

    def _load_or_create(self) -> bytes:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        if not self.path.is_file():
            if not self.create:
                raise ManifestError(f"the signing key {self.path} is gone")
            self._write_new()
        elif self.path.stat().st_mode & 0o077:
            log.warning("signing key %s is readable by others than its owner", self.path)
        try:
            key = serialization.load_pem_private_key(self.path.read_bytes(), None)
        except (OSError, ValueError, TypeError) as exc:
            raise ManifestError(f"cannot read the signing key {self.path}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ManifestError(f"the signing key {self.path} must be an ECDSA P-256 key")
        return key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def _write_new(self) -> None:
        """A new key, written whole under a temporary name then linked into place: two
        processes starting at once keep the same one."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".signing-", dir=self.path.parent)  # 0600
        try:
            os.write(fd, pem)
            os.fsync(fd)
            os.close(fd)
            try:
                os.link(tmp, self.path)
                log.warning("generated the registry's signing key at %s", self.path)
            except FileExistsError:
                pass  # another process made it first: theirs is the key
        finally:
            os.unlink(tmp)

    def sign(self, folder: Path) -> tuple[dict[str, Any], Manifest]:
        """Hash ``folder`` and sign its manifest; the bundle and the manifest it carries."""
        from model_signing import signing

        self._ensure()
        with tempfile.TemporaryDirectory(prefix="registry-sign-") as tmp:
            target = Path(tmp) / "signature.json"
            try:
                signing.Config().set_hashing_config(_hashing()).use_elliptic_key_signer(
                    private_key=self.path
                ).sign(folder, target)
            except (OSError, ValueError) as exc:
                raise ManifestError(f"cannot sign {folder.name}: {exc}") from exc
            bundle = json.loads(target.read_text())
        return bundle, signed_manifest(bundle)


def verify_folder(folder: Path, bundle: dict[str, Any], public_pem: bytes) -> Verification:
    """Check the files under ``folder`` against ``bundle``, whose signature must be by
    ``public_pem``'s key. Offline: nothing but the files, the bundle and the key."""
    from cryptography.exceptions import InvalidSignature
    from model_signing import verifying

    actual = manifest_of(folder)
    try:
        signed = signed_manifest(bundle)
    except ManifestError as exc:
        return Verification(False, "invalid", None, actual.digest, [], str(exc))
    if bundle_key_id(bundle) != key_id_of(public_pem):
        return Verification(
            False,
            "other-key",
            signed.digest,
            actual.digest,
            [],
            f"signed by key {bundle_key_id(bundle)}, not by key {key_id_of(public_pem)}",
        )
    with tempfile.TemporaryDirectory(prefix="registry-verify-") as tmp:
        signature, key = Path(tmp) / "signature.json", Path(tmp) / "key.pub"
        signature.write_text(json.dumps(bundle))
        key.write_bytes(public_pem)
        config = verifying.Config().set_hashing_config(_hashing())
        try:
            config.use_elliptic_key_verifier(public_key=key).verify(folder, signature)
        except (ValueError, InvalidSignature, KeyError, TypeError) as exc:
            if str(exc).startswith("Signature mismatch"):  # signature good, files differ
                mismatches = compare(signed.files, actual.files)
                return Verification(False, "valid", signed.digest, actual.digest, mismatches)
            return Verification(
                False, "invalid", signed.digest, actual.digest, [], str(exc)[:300] or repr(exc)
            )
    return Verification(True, "valid", signed.digest, actual.digest)


def scanner_name() -> str:
    return f"picklescan {importlib.metadata.version('picklescan')}"


def _sniffed(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(8)
    return path.suffix.lower() in PICKLE_SUFFIXES or head.startswith(MAGIC_PREFIXES)


def _whole_pickle(path: Path) -> bool:
    """Whether the file parses as a pickle up to its STOP (opcodes only, never run)."""
    with open(path, "rb") as f:
        try:
            for _ in pickletools.genops(f):
                pass
        except (ValueError, EOFError, UnicodeError, OverflowError):
            return False
    return True


def scan_folder(folder: Path) -> dict[str, Any]:
    """picklescan's findings per file: the dangerous and suspicious globals a pickle
    would import, and whether its parse failed. Files that look like pickles (by name or
    first bytes) are scanned; any other file counts only when it parses as a whole
    pickle (an old protocol-0 pickle under another name)."""
    from picklescan.scanner import SafetyLevel, scan_bytes

    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if not _sniffed(path) and not _whole_pickle(path):
            continue
        with open(path, "rb") as f:
            result = scan_bytes(f, rel, path.suffix.lower())
        found = {
            level: sorted({f"{g.module}.{g.name}" for g in result.globals if g.safety is kind})
            for level, kind in (
                (DANGEROUS, SafetyLevel.Dangerous),
                (SUSPICIOUS, SafetyLevel.Suspicious),
            )
        }
        if found[DANGEROUS] or found[SUSPICIOUS] or result.scan_err:
            files[rel] = {**found, "parse_error": bool(result.scan_err)}
    if any(f[DANGEROUS] for f in files.values()):
        verdict = DANGEROUS
    elif files:
        verdict = SUSPICIOUS
    else:
        verdict = CLEAN
    return {"scanner": scanner_name(), "verdict": verdict, "files": files}
