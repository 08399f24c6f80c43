"""WSGI entry point: ``gunicorn wsgi:app``."""

from registry_service.app import create_app

app = create_app()
