"""Model cards and background data for explanations: two columns on model_versions.

Revision ID: 0004
Revises: 0003

Plain ``ADD COLUMN``s (see 0003 for why never a batch copy on SQLite).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The version's model card (the nine sections of Mitchell et al.) as JSON; NULL: versions
    # published before cards, which get a generated "not documented" card when read.
    op.add_column("model_versions", sa.Column("model_card", sa.JSON(), nullable=True))
    # The background rows for explanations, encrypted with the version's data key; NULL: none.
    op.add_column(
        "model_versions", sa.Column("background_blob_sha256", sa.String(64), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("model_versions", "background_blob_sha256")
    op.drop_column("model_versions", "model_card")
