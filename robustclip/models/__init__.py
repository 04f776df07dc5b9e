"""Models built from plain, JSON-serialisable specs. May import core and data (a default model is sized from its
dataset's registry entry).

Each name lives in one module and is imported from there; the package itself re-exports nothing.
"""
