"""Models built from plain, JSON-serialisable specs. May import core.

Each name lives in one module and is imported from there; the package itself re-exports nothing.
"""
