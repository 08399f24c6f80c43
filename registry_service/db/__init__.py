"""Persistence: SQLAlchemy 2 typed models and the per-application Database."""
