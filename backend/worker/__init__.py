"""Batch-job execution: the embedded executor, the Celery executor, and `spondyscan worker`."""
