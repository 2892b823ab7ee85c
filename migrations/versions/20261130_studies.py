"""Whole-series analyses: a job kind and the studies table.

Revision ID: 20261130_studies
Revises: 20261130_job_items_lost
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

TZ = sa.DateTime(timezone=True)

revision: str = "20261130_studies"
down_revision: str | None = "20261130_job_items_lost"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="batch")
        )
    op.create_table(
        "studies",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=True),
        sa.Column("slices_done", sa.Integer(), nullable=False),
        sa.Column("slices_total", sa.Integer(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.String(length=500), nullable=True),
        sa.Column("input_summary", sa.JSON(), nullable=False),
        sa.Column("source", sa.JSON(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("as_status", sa.String(length=16), nullable=True),
        sa.Column("as_confidence", sa.Float(), nullable=True),
        sa.Column("stage", sa.String(length=16), nullable=True),
        sa.Column("stage_confidence", sa.Float(), nullable=True),
        sa.Column("in_domain", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_studies_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_studies_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
    )
    for column in ("user_id", "job_id", "status", "created_at", "as_status", "stage"):
        op.create_index(op.f(f"ix_studies_{column}"), "studies", [column], unique=False)


def downgrade() -> None:
    for column in ("user_id", "job_id", "status", "created_at", "as_status", "stage"):
        op.drop_index(op.f(f"ix_studies_{column}"), table_name="studies")
    op.drop_table("studies")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("kind")
