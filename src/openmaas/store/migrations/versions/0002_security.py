"""Security: tenant keys, encrypted artifacts, members, grants, usage counters, audit log.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_keys",
        sa.Column(
            "tenant_id",
            sa.Integer(),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("root_key_id", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "members",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.Integer(),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("tenant_id", "name"),
    )
    op.create_index("ix_members_tenant_id", "members", ["tenant_id"])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("member_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_api_keys_member_id", "members", ["member_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index("ix_api_keys_member_id", ["member_id"])
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("blob_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("wrapped_key", sa.LargeBinary(), nullable=True))
    op.create_table(
        "grants",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "model_id",
            sa.Integer(),
            sa.ForeignKey("models.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "grantee_tenant_id",
            sa.Integer(),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("quota_per_day", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("model_id", "grantee_tenant_id"),
    )
    op.create_index("ix_grants_model_id", "grants", ["model_id"])
    op.create_index("ix_grants_grantee_tenant_id", "grants", ["grantee_tenant_id"])
    op.create_table(
        "usage_counters",
        sa.Column("scope", sa.String(80), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("requests", sa.Integer(), nullable=False),
    )
    op.create_table(
        "audit_records",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor_tenant", sa.String(63), nullable=False),
        sa.Column("actor_key_id", sa.String(32), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_records")
    op.drop_table("usage_counters")
    op.drop_table("grants")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("wrapped_key")
        batch.drop_column("blob_sha256")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_member_id")
        batch.drop_constraint("fk_api_keys_member_id", type_="foreignkey")
        batch.drop_column("member_id")
    op.drop_index("ix_members_tenant_id", "members")
    op.drop_table("members")
    op.drop_table("tenant_keys")
