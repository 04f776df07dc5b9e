"""Helpers for robustness regression tests in users' test suites."""
