"""Evaluation: a suite run per sample on a model (runner, running each attack in attacking, the frame and invariant in
summary, gradient-masking probes in masking, certificates in certification, memory guards in memory) and the one
train -> checkpoint -> evaluate path (pipeline), and its time estimates (time_estimate). May import core, data, models,
bounds, attacks, checkpoints and training (everything above gate, sweeps and reports).

Each name lives in one module and is imported from there; the package itself re-exports nothing.
"""
