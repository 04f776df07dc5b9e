"""Training: the trainer, its λ schedule, and the regularisers. May import core, data, models, checkpoints, bounds
(for Lipschitz probes), attacks (the image view adversarial training attacks other inputs through).

Each name lives in one module and is imported from there; the package itself re-exports nothing.
"""
