"""idempotency failures: refused money commands, so a retry with the same key is refused the same
way (RELIABILITY R5)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 03:41:49.972702
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_failures",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("operator_id", sa.String(length=40), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=60), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_idempotency_failures_operator_id_operators"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_failures")),
        sa.UniqueConstraint("operator_id", "idempotency_key", name="uq_idempotency_failures_key"),
    )
    with op.batch_alter_table("idempotency_failures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_failures_operator_id"), ["operator_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("idempotency_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_failures_operator_id"))

    op.drop_table("idempotency_failures")
