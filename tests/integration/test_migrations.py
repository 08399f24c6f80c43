"""Alembic: one head, applied cleanly on SQLite and PostgreSQL, matching the models."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from registry_service.db import models  # noqa: F401
from registry_service.db.base import Base
from registry_service.db.database import build_engine
from registry_service.db.migrate import current_revisions, head_revisions, upgrade
from registry_service.services.audit import GENESIS_HASH
from tests.rig import create_database


def test_single_head():
    assert len(head_revisions()) == 1


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return create_database(request.getfixturevalue("pg_server_url"), "migrate")


def test_upgrade_matches_models_and_seeds_chain(fresh_url):
    upgrade(fresh_url)
    engine = build_engine(fresh_url)
    try:
        assert current_revisions(engine) == head_revisions()
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == []
            head = conn.execute(text("SELECT seq, hash FROM audit_chain_head")).one()
            assert tuple(head) == (0, GENESIS_HASH)
    finally:
        engine.dispose()


def test_downgrade_and_upgrade_again(fresh_url):
    upgrade(fresh_url)
    upgrade(fresh_url, "head")  # idempotent
    from alembic import command

    from registry_service.db.migrate import alembic_config

    command.downgrade(alembic_config(fresh_url), "base")
    upgrade(fresh_url)
    engine = build_engine(fresh_url)
    try:
        assert current_revisions(engine) == head_revisions()
    finally:
        engine.dispose()
