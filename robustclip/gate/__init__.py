"""The CI gate behind robustclip check: baselines, comparison beyond noise, output. May import evaluation and
below.

Each name lives in one module and is imported from there; the package itself re-exports nothing.
"""
