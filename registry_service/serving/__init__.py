"""Serving: governed inference that follows every promotion, with splits and fallback."""
