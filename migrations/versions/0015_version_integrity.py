"""A version's artifact manifest, its signature and the pickle scan's findings, recorded at registration.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
