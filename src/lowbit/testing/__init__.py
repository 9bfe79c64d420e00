"""Helpers for tests and the offline demo: tiny random models and the location of shared benchmark data."""
