"""Measurement: latency statistics, accuracy drift between backends, and their reports (numpy only)."""
