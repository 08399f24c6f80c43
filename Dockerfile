# One image for registry-service and, in docker-compose, for the MLflow server it fronts.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY setup.cfg pyproject.toml README.md ./
COPY registry_service ./registry_service
COPY migrations ./migrations
COPY wsgi.py ./
# boto3 lets the MLflow server store artifacts in MinIO/S3, and serving load them.
RUN pip install -e . boto3 \
    && useradd --system --uid 10001 registry
USER registry

EXPOSE 8080
# `serve` runs gunicorn and, in each worker, loads preloaded deployments before it takes
# requests and follows promotions for the serving layer.
CMD ["registry-service", "serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "2", \
     "--threads", "8", "--keepalive", "75"]
