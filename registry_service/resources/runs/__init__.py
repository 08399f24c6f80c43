"""Runs: one run, and runs side by side."""
