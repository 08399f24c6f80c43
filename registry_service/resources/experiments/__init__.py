"""Experiments and the runs in them."""
