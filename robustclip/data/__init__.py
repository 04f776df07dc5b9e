"""Datasets: MNIST and Fashion-MNIST from IDX files, the 1-D regression problem, and user data files. May import
core.

Each name lives in one module and is imported from there; the package itself re-exports nothing.
"""
