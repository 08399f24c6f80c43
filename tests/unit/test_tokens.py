"""Tokens: hashed at rest, revocable, expiring, audited."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from registry_service.db.base import utcnow
from registry_service.db.models import ApiTokenRow
from registry_service.errors import AuthenticationError, TokenNotFound, ValidationError
from registry_service.services.audit import AuditFilter


def test_secret_is_stored_only_as_hash(token_service, ctx, db):
    secret, info = token_service.create(ctx, "ci-bot", ["requester"])
    assert secret.startswith("rs_") and len(secret) > 40
    with db.read() as session:
        row = session.execute(select(ApiTokenRow)).scalar_one()
        assert row.token_hash != secret and secret not in row.token_hash
        assert row.prefix == secret[:9] == info.prefix


def test_authenticate_returns_principal_with_roles(token_service, ctx):
    secret, _ = token_service.create(ctx, "release-approver", ["approver", "viewer"])
    principal = token_service.authenticate(secret)
    assert principal.name == "release-approver"
    assert principal.has_role("approver") and not principal.has_role("admin")


def test_admin_role_implies_every_role(token_service, ctx):
    secret, _ = token_service.create(ctx, "root", ["admin"])
    assert token_service.authenticate(secret).has_role("approver")


def test_revoked_and_unknown_tokens_fail(token_service, ctx, audit):
    secret, info = token_service.create(ctx, "bob", ["viewer"])
    token_service.revoke(ctx, info.id)
    with pytest.raises(AuthenticationError, match="revoked"):
        token_service.authenticate(secret)
    with pytest.raises(AuthenticationError, match="not valid"):
        token_service.authenticate("rs_nope")
    with pytest.raises(TokenNotFound):
        token_service.revoke(ctx, 999)
    actions = [e.action for e in audit.list(AuditFilter(), 10, None).items]
    assert actions == ["token.revoked", "token.created", "principal.created"]


def test_expired_token_fails(token_service, ctx):
    secret, _ = token_service.create(ctx, "temp", ["viewer"], timedelta(days=1))
    token_service.authenticate(secret)
    with pytest.raises(AuthenticationError, match="expired"):
        token_service.authenticate(secret, now=utcnow() + timedelta(days=2))


@pytest.mark.parametrize(
    ("name", "roles"), [("Bad Name", ["viewer"]), ("ok", []), ("ok", ["superuser"])]
)
def test_invalid_names_and_roles_are_refused(token_service, ctx, name, roles):
    with pytest.raises(ValidationError):
        token_service.create(ctx, name, roles)


def test_bootstrap_issues_one_admin_token_only(token_service, ctx):
    first = token_service.bootstrap_admin(ctx)
    assert first and token_service.authenticate(first).has_role("admin")
    assert token_service.bootstrap_admin(ctx) is None


def test_a_revocation_elsewhere_takes_effect_within_the_cache_time(
    token_service, ctx, db, audit, monkeypatch
):
    from registry_service.services import tokens as tokens_module
    from registry_service.services.tokens import TokenService

    secret, info = token_service.create(ctx, "svc-cached", ["predictor"])
    assert token_service.authenticate(secret).roles == frozenset({"predictor"})
    # Another process (another service object) revokes it.
    TokenService(db, audit).revoke(ctx, info.id)
    assert token_service.authenticate(secret).name == "svc-cached"  # still remembered
    clock = tokens_module.time.monotonic() + tokens_module.CACHE_SECONDS + 0.1
    monkeypatch.setattr(tokens_module.time, "monotonic", lambda: clock)
    with pytest.raises(AuthenticationError):
        token_service.authenticate(secret)


def test_a_revocation_in_this_process_takes_effect_at_once(token_service, ctx):
    secret, info = token_service.create(ctx, "svc-now", ["viewer"])
    token_service.authenticate(secret)
    token_service.revoke(ctx, info.id)
    with pytest.raises(AuthenticationError):
        token_service.authenticate(secret)
