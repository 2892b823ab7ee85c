"""Drop the analyses columns that were written and never read (mask, Grad-CAM, overlay paths).

The stored result (``analyses.result``) holds every artifact's URL; the files live under the
analysis id in the artifact store.

Revision ID: 20261130_drop_unread_paths
Revises: 20261128_jobs
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261130_drop_unread_paths"
down_revision: str | None = "20261128_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("mask_path", "gradcam_path", "segmentation_overlay_path")


def upgrade() -> None:
    with op.batch_alter_table("analyses") as batch:
        for name in COLUMNS:
            batch.drop_column(name)


def downgrade() -> None:
    with op.batch_alter_table("analyses") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.String(length=255), nullable=True))
