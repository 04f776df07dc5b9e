"""Regularisers: the protocol (base), the registry (one entry per method), and each method: weight, clip (with
ClipPenalty in penalty), adversarial and TRADES, lipmargin (certified training), the hybrids. May import core, models,
bounds, attacks (adversarial training's image view) and training.schedule (the λ schedule).

Each name lives in one module and is imported from there; the package itself re-exports nothing.
"""
