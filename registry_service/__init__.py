"""registry-service: a governed model registry in front of MLflow."""

__version__ = "0.1.0"
