"""SQLAlchemy tables. Importing this package registers every table on ``Base.metadata``."""

from backend.models.analysis import Analysis, ModelResult
from backend.models.audit_event import AuditEvent
from backend.models.job import Job, JobItem
from backend.models.study import Study
from backend.models.user import ApiKey, User

__all__ = ["Analysis", "ApiKey", "AuditEvent", "Job", "JobItem", "ModelResult", "Study", "User"]
