"""API tokens: issued once, stored only as a hash, revocable, audited."""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.models import ApiTokenRow, PrincipalRow
from registry_service.domain.entities import Principal, Role, TokenInfo, TokenKind
from registry_service.domain.names import PRINCIPAL_RE
from registry_service.errors import AuthenticationError, TokenNotFound, ValidationError
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context

TOKEN_PREFIX = "rs_"
ROLE_NAMES = tuple(r.value for r in Role)
KIND_NAMES = tuple(k.value for k in TokenKind)
# Authentication is on every request, predictions included: a valid token's principal is
# remembered this long per process. Revocations and role changes made in this process
# clear it at once.
CACHE_SECONDS = 2.0
CACHE_ENTRIES = 10_000


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _info(row: ApiTokenRow) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        principal=row.principal.name,
        roles=list(row.principal.roles),
        prefix=row.prefix,
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        kind=row.kind,
    )


class TokenService:
    def __init__(self, db: Database, audit: AuditLog) -> None:
        self.db = db
        self.audit = audit
        self._cache: dict[str, tuple[float, Principal, datetime | None]] = {}

    def _principal(
        self,
        session: Session,
        ctx: Context,
        name: str,
        roles: list[str],
        groups: list[str] | None,
    ) -> PrincipalRow:
        row = session.execute(
            select(PrincipalRow).where(PrincipalRow.name == name)
        ).scalar_one_or_none()
        if row is None:
            row = PrincipalRow(name=name, roles=roles, groups=groups or [])
            session.add(row)
            session.flush()
            self.audit.append(
                session,
                ctx,
                "principal.created",
                after={"name": name, "roles": roles, "groups": groups or []},
            )
            return row
        before = {"name": name, "roles": sorted(row.roles), "groups": sorted(row.groups or [])}
        # Groups are left alone unless given: a new token need not restate them.
        after = {**before, "roles": roles, **({"groups": groups} if groups is not None else {})}
        if after != before:
            row.roles, row.groups = after["roles"], after["groups"]
            self.audit.append(session, ctx, "principal.roles_changed", before=before, after=after)
            self._cache.clear()
        return row

    def create(
        self,
        ctx: Context,
        name: str,
        roles: list[str],
        expires_in: timedelta | None = None,
        groups: list[str] | None = None,
        kind: str = TokenKind.HUMAN.value,
    ) -> tuple[str, TokenInfo]:
        """Issue a token for principal ``name`` (created if new, roles set to ``roles``;
        groups replaced when given). ``kind`` says who holds it: human, ci or agent."""
        if not PRINCIPAL_RE.match(name):
            raise ValidationError(
                f"invalid principal name {name!r}",
                errors=[
                    {
                        "field": "name",
                        "location": "args",
                        "message": "lowercase letters, digits and . _ @ -, up to 128",
                    }
                ],
            )
        unknown = sorted(set(roles) - set(ROLE_NAMES))
        if not roles or unknown:
            raise ValidationError(
                f"roles must be a non-empty subset of {list(ROLE_NAMES)}; unknown: {unknown}"
            )
        if kind not in KIND_NAMES:
            raise ValidationError(
                f"kind must be one of {list(KIND_NAMES)}",
                errors=[{"field": "kind", "location": "args", "message": f"one of {KIND_NAMES}"}],
            )
        roles = sorted(set(roles))
        if groups is not None:
            bad = [g for g in groups if not PRINCIPAL_RE.match(g)]
            if bad:
                raise ValidationError(f"invalid group names {bad}; same rule as principal names")
            groups = sorted(set(groups))
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.transaction() as session:
            principal = self._principal(session, ctx, name, roles, groups)
            row = ApiTokenRow(
                principal=principal,
                token_hash=hash_token(secret),
                prefix=secret[: len(TOKEN_PREFIX) + 6],
                kind=kind,
                created_by=ctx.actor,
                expires_at=utcnow() + expires_in if expires_in else None,
            )
            session.add(row)
            session.flush()
            info = _info(row)
            self.audit.append(
                session,
                ctx,
                "token.created",
                after={
                    "token_id": info.id,
                    "principal": name,
                    "roles": roles,
                    "kind": kind,
                    "expires_at": info.expires_at,
                },
            )
        return secret, info

    def list(self, include_revoked: bool = False) -> list[TokenInfo]:
        stmt = select(ApiTokenRow).order_by(ApiTokenRow.id)
        if not include_revoked:
            stmt = stmt.where(ApiTokenRow.revoked_at.is_(None))
        with self.db.read() as session:
            return [_info(r) for r in session.execute(stmt).scalars()]

    def revoke(self, ctx: Context, token_id: int) -> TokenInfo:
        with self.db.transaction() as session:
            row = session.get(ApiTokenRow, token_id, with_for_update=True)
            if row is None:
                raise TokenNotFound(f"no token with id {token_id}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                self._cache.clear()
                self.audit.append(
                    session,
                    ctx,
                    "token.revoked",
                    after={
                        "token_id": row.id,
                        "principal": row.principal.name,
                    },
                )
            return _info(row)

    def authenticate(self, secret: str, now: datetime | None = None) -> Principal:
        """The principal of a valid token; remembered for ``CACHE_SECONDS`` per process,
        so a revocation or role change made elsewhere takes effect within that time."""
        digest = hash_token(secret)
        cached = self._cache.get(digest)
        moment = now or utcnow()
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            _, principal, expires_at = cached
            if expires_at is None or expires_at > moment:
                return principal
        principal, expires_at = self._lookup(digest, moment)
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()
        self._cache[digest] = (time.monotonic(), principal, expires_at)
        return principal

    def _lookup(self, digest: str, now: datetime) -> tuple[Principal, datetime | None]:
        with self.db.read() as session:
            row = session.execute(
                select(ApiTokenRow).where(ApiTokenRow.token_hash == digest)
            ).scalar_one_or_none()
            if row is None:
                raise AuthenticationError("the bearer token is not valid")
            if row.revoked_at is not None:
                raise AuthenticationError("the bearer token has been revoked")
            if row.expires_at is not None and row.expires_at <= now:
                raise AuthenticationError("the bearer token has expired")
            principal = row.principal
            return (
                Principal(
                    principal.id,
                    principal.name,
                    frozenset(principal.roles),
                    frozenset(principal.groups or ()),
                    row.kind,
                ),
                row.expires_at,
            )

    def bootstrap_admin(self, ctx: Context, name: str = "admin") -> str | None:
        """Issue a first admin token when no admin can log in; None when one can."""
        with self.db.read() as session:
            for row in session.execute(
                select(ApiTokenRow).where(ApiTokenRow.revoked_at.is_(None))
            ).scalars():
                usable = row.expires_at is None or row.expires_at > utcnow()
                if usable and Role.ADMIN.value in row.principal.roles:
                    return None
        secret, _ = self.create(ctx, name, [Role.ADMIN.value])
        return secret
