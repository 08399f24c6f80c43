"""Promotion policies of registered models."""
