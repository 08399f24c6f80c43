"""Schemas of a version's signed manifest and of its verification."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Integer, Schema


class ManifestSchema(Schema):
    model_name = ma.fields.String()
    version = Integer()
    manifest_digest = ma.fields.String(
        metadata={"description": "SHA-256 over the files' SHA-256 digests, in path order"}
    )
    files = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.String(),
        metadata={"description": "Each file's path in the model folder and its SHA-256"},
    )
    signature = ma.fields.Dict(
        metadata={
            "description": "The signed manifest: a Sigstore bundle whose DSSE envelope "
            "carries the in-toto statement of OpenSSF model-signing v1.0"
        }
    )
    signing_key_id = ma.fields.String(
        allow_none=True, metadata={"description": "The key that signed it (SHA-256 of its PEM)"}
    )
    format = ma.fields.String()
    algorithm = ma.fields.String()
    key_id = ma.fields.String(metadata={"description": "The registry's key now"})
    public_key = ma.fields.String(metadata={"description": "The registry's public key, PEM"})
    scan = ma.fields.Dict(
        allow_none=True,
        metadata={
            "description": "The pickle scan at registration: scanner, verdict (clean, "
            "suspicious, dangerous) and, per file, the dangerous and suspicious globals"
        },
    )


class MismatchSchema(Schema):
    path = ma.fields.String(allow_none=True)
    problem = ma.fields.String(
        metadata={"enum": ["changed", "missing", "unexpected", "record-differs"]}
    )
    expected = ma.fields.String(allow_none=True, metadata={"description": "SHA-256 signed"})
    actual = ma.fields.String(allow_none=True, metadata={"description": "SHA-256 found"})


class VerificationSchema(Schema):
    model_name = ma.fields.String()
    version = Integer()
    ok = ma.fields.Boolean(metadata={"description": "Signature valid and every file matches"})
    integrity = ma.fields.String(metadata={"enum": ["verified", "failed", "unverified"]})
    signature = ma.fields.String(
        allow_none=True,
        metadata={
            "description": "valid, invalid, or other-key (signed by another key than the "
            "registry's); null without a manifest",
            "enum": ["valid", "invalid", "other-key"],
        },
    )
    manifest_digest = ma.fields.String(allow_none=True, metadata={"description": "Signed"})
    actual_digest = ma.fields.String(
        allow_none=True, metadata={"description": "Of the files in the artifact store now"}
    )
    mismatches = ma.fields.List(ma.fields.Nested(MismatchSchema))
    detail = ma.fields.String(allow_none=True)
    key_id = ma.fields.String(metadata={"description": "The key checked against"})
