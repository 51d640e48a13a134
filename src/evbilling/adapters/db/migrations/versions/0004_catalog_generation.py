"""catalog generation: a per-operator counter bumped with every change to the catalog quotes
read, so each process can keep a snapshot of it and check it with one primary-key read

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 23:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalog_generations",
        sa.Column("operator_id", sa.String(length=40), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"],
            name=op.f("fk_catalog_generations_operator_id_operators"),
        ),
        sa.PrimaryKeyConstraint("operator_id", name=op.f("pk_catalog_generations")),
    )


def downgrade() -> None:
    op.drop_table("catalog_generations")
