"""Reports: tables and figures of a sweep as HTML and Markdown. May import sweeps and below.

Each name lives in one module and is imported from there; the package itself re-exports nothing.
"""
