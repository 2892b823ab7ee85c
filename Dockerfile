# syntax=docker/dockerfile:1
# spondyscan image: the web app built with Node, then the Python service with the model bundles.
# One image runs every role: `spondyscan serve` (the default) or `spondyscan worker`.
# Research use only - not a diagnosis.

ARG NODE_VERSION=22
ARG PYTHON_VERSION=3.11

# ---------------------------------------------------------------- 1. the SPA (frontend/dist)
FROM node:${NODE_VERSION}-bookworm-slim AS spa
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build

# ---------------------------------------------------------------- 2. the Python runtime
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    KERAS_BACKEND=tensorflow \
    SPONDYSCAN_ENVIRONMENT=production \
    SPONDYSCAN_HOST=0.0.0.0 \
    SPONDYSCAN_PORT=8000 \
    SPONDYSCAN_DATA_DIR=/data \
    SPONDYSCAN_MODELS_DIR=/app/models
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 spondyscan \
    && mkdir -p /data && chown spondyscan /data
WORKDIR /app

# Dependencies first (pinned by constraints.txt), so code changes do not reinstall TensorFlow.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code, installed in place: migrations/ and frontend/dist are found beside the packages.
COPY README.md alembic.ini ./
COPY ml/ ./ml/
COPY backend/ ./backend/
COPY migrations/ ./migrations/
RUN pip install --no-deps -e .
COPY models/ ./models/
COPY --from=spa /src/frontend/dist/ ./frontend/dist/

USER spondyscan
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"]
CMD ["spondyscan", "serve"]
