"""Monitoring: per-minute prediction rollups, version references, A/B tests, alerts and
the latest drift report per version.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("model_policies", sa.Column("monitoring", sa.JSON(), nullable=True))
    op.create_table(
        "prediction_rollups",
        sa.Column("id", BigInt, autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("span", sa.Integer(), nullable=False),
        sa.Column("minute", TS, nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("served", sa.JSON(), nullable=False),
        sa.Column("feedback", sa.JSON(), nullable=False),
        sa.Column("sample", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_rollups")),
        sa.UniqueConstraint(
            "model_name",
            "span",
            "minute",
            "model_version",
            "variant",
            name=op.f("uq_prediction_rollups_model_name_span_minute_model_version_variant"),
        ),
    )
    op.create_table(
        "version_references",
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("model_name", "version", name=op.f("pk_version_references")),
    )
    op.create_table(
        "ab_tests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("champion", sa.JSON(), nullable=False),
        sa.Column("challenger", sa.JSON(), nullable=False),
        sa.Column("challenger_share", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("min_samples", sa.Integer(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("max_hours", sa.Float(), nullable=True),
        sa.Column("previous_spec", sa.JSON(), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("started_by", sa.String(128), nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("ended_by", sa.String(128), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("promotion_request_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ab_tests")),
    )
    op.create_index("ix_ab_tests_model_name_status", "ab_tests", ["model_name", "status"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("fired_at", TS, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("resolved_figures", sa.JSON(), nullable=True),
        sa.Column("rollback_request_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index("ix_alerts_model_name_rule_state", "alerts", ["model_name", "rule", "state"])
    op.create_table(
        "drift_reports",
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("computed_at", TS, nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("model_name", "version", name=op.f("pk_drift_reports")),
    )


def downgrade() -> None:
    op.drop_table("drift_reports")
    op.drop_index("ix_alerts_model_name_rule_state", "alerts")
    op.drop_table("alerts")
    op.drop_index("ix_ab_tests_model_name_status", "ab_tests")
    op.drop_table("ab_tests")
    op.drop_table("version_references")
    op.drop_table("prediction_rollups")
    op.drop_column("model_policies", "monitoring")
