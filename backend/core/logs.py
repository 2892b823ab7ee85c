"""Logging rules: what the service logs never carries patient data or stored values.

Our own code logs ids, codes and counts only. Database drivers log statement parameters at DEBUG
(row values: stored results, a study's source attributes), so their loggers are held at WARNING
whatever level the deployment runs at.
"""

from __future__ import annotations

import logging

VALUE_LOGGERS = ("aiosqlite", "asyncpg", "sqlalchemy.engine", "sqlalchemy.pool")


def quiet_value_loggers() -> None:
    """Hold the loggers that would print row values at WARNING."""
    for name in VALUE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
