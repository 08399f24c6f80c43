"""REST resources: one package per resource, each with routes.py and schemas.py."""
