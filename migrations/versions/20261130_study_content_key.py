"""Studies stored over STOW-RS remember which instances they were made of, so a repeat of the
same request returns the study instead of analysing the series twice.

Revision ID: 20261130_study_content_key
Revises: 20261130_study_push
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261130_study_content_key"
down_revision: str | None = "20261130_study_push"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("content_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("refused_instances", sa.JSON(), nullable=True))
        batch.create_index(op.f("ix_studies_content_key"), ["content_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_index(op.f("ix_studies_content_key"))
        batch.drop_column("refused_instances")
        batch.drop_column("content_key")
