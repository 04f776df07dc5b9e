"""Sweeps: the plan, its records on disk, the driver, one run, locks (claims) and the engines that compute runs. May
import evaluation and below.

Each name lives in one module and is imported from there; the package itself re-exports nothing.
"""
