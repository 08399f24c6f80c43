"""Monitoring: per-minute rollups of the prediction log, live figures, drift, A/B tests
and alerts for the versions the registry serves."""
