"""Logging rules: what the service logs never carries patient data or stored values.

Our own code logs ids, codes and counts only. Database drivers log statement parameters at DEBUG
(row values: stored results, a study's source attributes), so their loggers are held at WARNING
whatever level the deployment runs at.

Start-up says what it does in our own words; two libraries' expected chatter is held back: the
migration tool's plugin list, and TensorFlow's retracing warning, which warm-up sets off on
purpose (every model's compiled functions are traced once per batch shape before it serves).
"""

from __future__ import annotations

import logging

VALUE_LOGGERS = ("aiosqlite", "asyncpg", "sqlalchemy.engine", "sqlalchemy.pool")
CHATTY_LOGGERS = ("alembic.runtime.plugins",)


def quiet_value_loggers() -> None:
    """Hold the loggers that would print row values at WARNING."""
    for name in VALUE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class _NotRetracing(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning (warm-up traces on purpose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


_RETRACING = _NotRetracing()


def quiet_expected_noise() -> None:
    """Hold back the start-up messages that are expected and say nothing to an operator."""
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    tf_log = logging.getLogger("tensorflow")
    if _RETRACING not in tf_log.filters:
        tf_log.addFilter(_RETRACING)
