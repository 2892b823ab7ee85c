"""Job items count the workers that died holding them (poison items fail after a few).

Revision ID: 20261130_job_items_lost
Revises: 20261130_accounts_security
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261130_job_items_lost"
down_revision: str | None = "20261130_accounts_security"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job_items") as batch:
        batch.add_column(sa.Column("lost", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("job_items") as batch:
        batch.drop_column("lost")
