"""Reports: tables and figures of a sweep, or of evaluate folders with their paired comparison, as HTML and Markdown.
May import sweeps and below.

Each name lives in one module and is imported from there; the package itself re-exports nothing.
"""
