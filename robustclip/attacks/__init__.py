"""Attacks: the suite language (TOML, ``suites``), the attack-kind registry (``kinds``), our own attacks (``custom``),
finding suites by name (``library``) and any input shape (``shapes``). May import core.

Each name lives in one module and is imported from there; the package itself re-exports nothing.
"""
