"""Files first, then rows: the one way a use case stores something a user can lose (rule 8)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession


class Staged(Protocol):
    """A staging folder that is renamed into place by ``commit`` or removed by ``discard``."""

    def discard(self) -> None: ...


@asynccontextmanager
async def files_then_rows(session: AsyncSession, staged: Staged) -> AsyncIterator[None]:
    """Inside the block: write and commit the staged files, then add rows to ``session``.

    The session is committed when the block ends; any error (or cancellation) rolls the rows
    back and removes the files, so a failed request leaves neither behind.
    """
    try:
        yield
        await session.commit()
    except BaseException:
        await session.rollback()
        await asyncio.to_thread(staged.discard)
        raise
