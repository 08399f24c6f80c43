"""A version's artifact manifest, its signature and the pickle scan's findings,
recorded at registration.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_version_lineage") as batch:
        batch.add_column(sa.Column("manifest_digest", sa.String(64), nullable=True))
        batch.add_column(sa.Column("manifest_files", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("manifest_signature", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("signing_key_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("scan_verdict", sa.String(16), nullable=True))
        batch.add_column(sa.Column("scan_findings", sa.JSON(), nullable=True))
    with op.batch_alter_table("model_policies") as batch:
        batch.add_column(
            sa.Column(
                "allow_unsafe_artifacts", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("model_policies") as batch:
        batch.drop_column("allow_unsafe_artifacts")
    with op.batch_alter_table("model_version_lineage") as batch:
        for column in (
            "scan_findings",
            "scan_verdict",
            "signing_key_id",
            "manifest_signature",
            "manifest_files",
            "manifest_digest",
        ):
            batch.drop_column(column)
