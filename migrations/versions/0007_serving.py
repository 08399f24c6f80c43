"""Serving: deployments, the per-model change counter, the prediction log and feedback.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "model_changes",
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("generation", BigInt, nullable=False),
        sa.PrimaryKeyConstraint("model_name", name=op.f("pk_model_changes")),
    )
    op.create_index(
        op.f("ix_model_changes_generation"), "model_changes", ["generation"], unique=False
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
        sa.UniqueConstraint("model_name", name=op.f("uq_deployments_model_name")),
    )
    op.create_table(
        "predictions",
        sa.Column("id", BigInt, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("variant", sa.String(64), nullable=True),
        sa.Column("subject_hash", sa.String(32), nullable=True),
        sa.Column("principal", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("fallback", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=True),
        sa.Column("outputs", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predictions")),
    )
    op.create_index(
        "ix_predictions_model_name_model_version_created_at",
        "predictions",
        ["model_name", "model_version", "created_at"],
    )
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_index("ix_predictions_request_id", "predictions", ["request_id"])
    op.create_table(
        "prediction_feedback",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("actual", sa.JSON(), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("received_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_prediction_feedback")),
    )
    op.create_index(
        "ix_prediction_feedback_model_name_received_at",
        "prediction_feedback",
        ["model_name", "received_at"],
    )
    op.create_table(
        "serving_fallback_marks",
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("minute", TS, nullable=False),
        sa.PrimaryKeyConstraint(
            "model_name", "model_version", "minute", name=op.f("pk_serving_fallback_marks")
        ),
    )


def downgrade() -> None:
    op.drop_table("serving_fallback_marks")
    op.drop_index("ix_prediction_feedback_model_name_received_at", "prediction_feedback")
    op.drop_table("prediction_feedback")
    op.drop_index("ix_predictions_request_id", "predictions")
    op.drop_index("ix_predictions_created_at", "predictions")
    op.drop_index("ix_predictions_model_name_model_version_created_at", "predictions")
    op.drop_table("predictions")
    op.drop_table("deployments")
    op.drop_index(op.f("ix_model_changes_generation"), "model_changes")
    op.drop_table("model_changes")
