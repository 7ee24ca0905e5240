"""Startup checks: configuration problems are reported by `manage.py check`, not at first use."""
