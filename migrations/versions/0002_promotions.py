"""Promotion requests, model policies, idempotency keys; append-only audit log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import os

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
OPEN = sa.text("status IN ('pending', 'approved')")

# Optional: the role the service connects as; it then may only read and append the log.
APP_ROLE_ENV = "REGISTRY_DB_APP_ROLE"

APPEND_ONLY_FUNCTION = """
CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$
"""


def upgrade() -> None:
    op.add_column(
        "principals",
        sa.Column("groups", sa.JSON(), nullable=False, server_default=sa.text("'[]'")),
    )
    op.add_column("audit_events", sa.Column("subject", sa.String(64), nullable=True))
    op.create_index("ix_audit_events_subject_seq", "audit_events", ["subject", "seq"])
    op.create_index("ix_audit_events_action_occurred_at", "audit_events", ["action", "occurred_at"])
    op.create_index(
        "ix_audit_events_model_name_occurred_at", "audit_events", ["model_name", "occurred_at"]
    )

    op.create_table(
        "model_policies",
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("auto_promotion", sa.JSON(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("model_name", name=op.f("pk_model_policies")),
    )
    op.create_table(
        "promotion_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("target_type", sa.String(8), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("archive_existing", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requester", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("review_required", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rule", sa.JSON(), nullable=False),
        sa.Column("replaces_version", sa.Integer(), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("executed_at", TS, nullable=True),
        sa.Column("execution_started_at", TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_requests")),
    )
    op.create_index(
        "uq_promotion_requests_open_target",
        "promotion_requests",
        ["model_name", "version", "target_type", "target"],
        unique=True,
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_index(
        "ix_promotion_requests_model_name_id", "promotion_requests", ["model_name", "id"]
    )
    op.create_index("ix_promotion_requests_status_id", "promotion_requests", ["status", "id"])
    op.create_index("ix_promotion_requests_requester_id", "promotion_requests", ["requester", "id"])
    op.create_table(
        "promotion_approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("approver", sa.String(128), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["promotion_requests.id"],
            name=op.f("fk_promotion_approvals_request_id_promotion_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_approvals")),
        sa.UniqueConstraint(
            "request_id", "approver", name=op.f("uq_promotion_approvals_request_id_approver")
        ),
    )
    op.create_table(
        "promotion_comments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["promotion_requests.id"],
            name=op.f("fk_promotion_comments_request_id_promotion_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_comments")),
    )
    op.create_index(op.f("ix_promotion_comments_request_id"), "promotion_comments", ["request_id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("principal", sa.String(128), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("principal", "key", name=op.f("pk_idempotency_keys")),
    )

    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_ONLY_FUNCTION)
        op.execute(
            "CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE "
            "ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE "
            "ON audit_events FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
        )
        role = os.environ.get(APP_ROLE_ENV)
        if role:
            quoted = op.get_bind().dialect.identifier_preparer.quote(role)
            op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM {quoted}")
            op.execute(f"GRANT SELECT, INSERT ON audit_events TO {quoted}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update_delete ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS audit_events_append_only()")
    op.drop_table("idempotency_keys")
    op.drop_table("promotion_comments")
    op.drop_table("promotion_approvals")
    op.drop_table("promotion_requests")
    op.drop_table("model_policies")
    op.drop_index("ix_audit_events_model_name_occurred_at", table_name="audit_events")
    op.drop_index("ix_audit_events_action_occurred_at", table_name="audit_events")
    op.drop_index("ix_audit_events_subject_seq", table_name="audit_events")
    op.drop_column("audit_events", "subject")
    op.drop_column("principals", "groups")
