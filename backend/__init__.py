"""spondyscan service: async FastAPI API, SQLAlchemy store, inference registry, batch jobs."""
