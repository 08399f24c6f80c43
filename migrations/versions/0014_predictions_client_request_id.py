"""Predictions keep the client's own request id beside the one the service mints, and a
model's policy names who may send feedback on anyone's predictions.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("client_request_id", sa.String(64), nullable=True))
    with op.batch_alter_table("model_policies") as batch:
        batch.add_column(sa.Column("feedback_principals", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_policies") as batch:
        batch.drop_column("feedback_principals")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("client_request_id")
