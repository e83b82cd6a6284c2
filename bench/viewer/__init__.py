"""Viewer page benchmarks: glass-to-glass and time to first frames per way (latency.py)."""
