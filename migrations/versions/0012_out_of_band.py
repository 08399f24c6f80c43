"""Model policies say what to do about changes made in MLflow behind the registry.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_policies") as batch:
        batch.add_column(sa.Column("out_of_band", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_policies") as batch:
        batch.drop_column("out_of_band")
