"""Deployments and scheduling weights: models.deployment, tenants.weight, grants.weight.

Revision ID: 0003
Revises: 0002

Plain ``ADD COLUMN``s, never a batch copy: on SQLite a copy drops and re-creates the table,
and with foreign keys on, dropping ``tenants`` would cascade into every other table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The model's Deployment as JSON; NULL: the server's defaults.
    op.add_column("models", sa.Column("deployment", sa.JSON(), nullable=True))
    # The tenant's fair-share weight in every model queue; existing tenants get 1.0.
    op.add_column(
        "tenants",
        sa.Column("weight", sa.Float(), nullable=False, server_default=sa.text("1.0")),
    )
    # A grantee's weight on the granted model; NULL: the grantee tenant's own weight.
    op.add_column("grants", sa.Column("weight", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("grants", "weight")
    op.drop_column("tenants", "weight")
    op.drop_column("models", "deployment")
