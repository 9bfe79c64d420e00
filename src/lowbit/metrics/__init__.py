"""Metrics and statistics shared by every task."""
