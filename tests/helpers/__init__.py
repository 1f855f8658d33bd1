"""Shared test helpers (real video files written with PyAV)."""
