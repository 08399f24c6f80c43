"""Idempotency keys: a retried call gets the first call's response, not a second effect."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.models import IdempotencyKeyRow
from registry_service.errors import (
    IdempotencyInFlight,
    IdempotencyKeyReused,
    ValidationError,
)

KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
IN_FLIGHT, DONE = "in_flight", "done"
# A key still in flight after this long belongs to a worker that died mid-call.
LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_key(key: str) -> str:
    if not KEY_RE.match(key):
        raise ValidationError(
            "invalid Idempotency-Key",
            errors=[
                {
                    "field": "Idempotency-Key",
                    "location": "headers",
                    "message": "1-255 printable ASCII characters, no spaces",
                }
            ],
        )
    return key


class IdempotencyKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    def begin(self, principal: str, key: str, fp: str) -> StoredResponse | None:
        """Claim ``key`` for a new call (None), or return the response to replay."""
        check_key(key)
        now = utcnow()
        with self.db.transaction() as session:
            row = session.get(IdempotencyKeyRow, (principal, key), with_for_update=True)
            if row is None:
                session.add(
                    IdempotencyKeyRow(principal=principal, key=key, fingerprint=fp, state=IN_FLIGHT)
                )
                try:
                    session.flush()
                except IntegrityError as exc:
                    # A twin call claimed the key between our read and insert.
                    raise IdempotencyInFlight(
                        f"a request with Idempotency-Key {key!r} is still being processed"
                    ) from exc
                return None
            if row.fingerprint != fp:
                raise IdempotencyKeyReused(
                    f"Idempotency-Key {key!r} was first used with a different request; "
                    "use a new key for a new request"
                )
            if row.state == DONE:
                return StoredResponse(row.response_status, row.response_body)
            if now - row.created_at < LEASE:
                raise IdempotencyInFlight(
                    f"a request with Idempotency-Key {key!r} is still being processed; "
                    "retry after it finishes"
                )
            row.created_at = now  # the first holder is gone: take over
            return None

    def complete(self, principal: str, key: str, status: int, body: Any) -> None:
        with self.db.transaction() as session:
            row = session.get(IdempotencyKeyRow, (principal, key), with_for_update=True)
            if row is not None:
                row.state, row.response_status, row.response_body = DONE, status, body

    def purge(self, older_than: timedelta) -> int:
        """Forget keys first used more than ``older_than`` ago; a retry after that is a
        new call. Never shorter than the in-flight lease, so no live call loses its key."""
        cutoff = utcnow() - max(older_than, LEASE)
        with self.db.transaction() as session:
            result = session.execute(
                delete(IdempotencyKeyRow).where(IdempotencyKeyRow.created_at < cutoff)
            )
            return result.rowcount

    def release(self, principal: str, key: str) -> None:
        """Forget a key whose call failed on our side, so the client's retry runs."""
        with self.db.transaction() as session:
            row = session.get(IdempotencyKeyRow, (principal, key), with_for_update=True)
            if row is not None and row.state == IN_FLIGHT:
                session.delete(row)
