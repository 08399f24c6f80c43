"""Promotion requests: request, approve, reject, cancel, comment, retry."""
