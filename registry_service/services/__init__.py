"""Use cases: each owns its transaction; routes call these and never commit."""
